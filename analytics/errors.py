"""The analytics exception tree: every error this package raises on purpose is one of these."""

from __future__ import annotations

__all__ = ["AnalyticsError", "DatasetError", "ErpError", "NotFittedError", "ReportError", "TooLittleDataError"]


class AnalyticsError(Exception):
    """Base of the analytics errors."""


class DatasetError(AnalyticsError):
    """An evaluation dataset that cannot be read; the message names the file and the reason."""


class TooLittleDataError(AnalyticsError):
    """Not enough healthy data to train a detector (too few rows, or no usable tag)."""


class NotFittedError(AnalyticsError):
    """A detector was asked to score before it was trained."""


class ErpError(AnalyticsError):
    """The ERP could not be reached or failed (5xx); what was to be posted is posted on a later run."""


class ReportError(AnalyticsError):
    """A report could not be mailed (the mail server refused or was away); it is tried again next run."""
