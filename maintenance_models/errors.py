"""The maintenance-models exception tree: every error this package raises on purpose is one of these."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "DatasetError",
    "MaintenanceError",
    "NotFittedError",
    "RegistryError",
    "TooLittleDataError",
    "WorkOrderError",
]


class MaintenanceError(Exception):
    """Base of the maintenance-model errors."""


class DatasetError(MaintenanceError):
    """A run-to-failure dataset that cannot be read; the message names the file, line and reason."""


class TooLittleDataError(MaintenanceError):
    """Not enough histories (or sensors that vary) to train a model."""


class NotFittedError(MaintenanceError):
    """A model was asked to predict before it was trained."""


class ArtifactError(MaintenanceError):
    """A stored model artifact that fails its checksum or holds something other than a model."""


class RegistryError(MaintenanceError):
    """A registry operation that cannot be done: unknown version, nothing to roll back to, ..."""


class WorkOrderError(MaintenanceError):
    """The ERP refused, or could not be reached for, a maintenance work order; the message says which."""
