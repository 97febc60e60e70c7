"""Analytics: anomaly detection on live telemetry, its SKAB evaluation, and the job scheduler.

The names below load their modules on first use: ``factory analytics`` imports
``analytics.cli`` on the edge too, and that must not pull in numpy or psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from factory.lazy import lazy_exports

if TYPE_CHECKING:
    from analytics.checks import CheckConfig, TagLimits
    from analytics.detector import Detector, DetectorConfig, Model, Scores, Stream
    from analytics.errors import AnalyticsError, DatasetError, NotFittedError, TooLittleDataError
    from analytics.live import AnomalyJob, LiveConfig
    from analytics.scheduler import JobSpec, Scheduler
    from analytics.skab import SkabReport, evaluate

__all__ = [
    "AnalyticsError",
    "AnomalyJob",
    "CheckConfig",
    "DatasetError",
    "Detector",
    "DetectorConfig",
    "JobSpec",
    "LiveConfig",
    "Model",
    "NotFittedError",
    "Scheduler",
    "Scores",
    "SkabReport",
    "Stream",
    "TagLimits",
    "TooLittleDataError",
    "evaluate",
]

_HOME: Final = {
    "AnalyticsError": "analytics.errors",
    "AnomalyJob": "analytics.live",
    "CheckConfig": "analytics.checks",
    "DatasetError": "analytics.errors",
    "Detector": "analytics.detector",
    "DetectorConfig": "analytics.detector",
    "JobSpec": "analytics.scheduler",
    "LiveConfig": "analytics.live",
    "Model": "analytics.detector",
    "NotFittedError": "analytics.errors",
    "Scheduler": "analytics.scheduler",
    "Scores": "analytics.detector",
    "SkabReport": "analytics.skab",
    "Stream": "analytics.detector",
    "TagLimits": "analytics.checks",
    "TooLittleDataError": "analytics.errors",
    "evaluate": "analytics.skab",
}


__getattr__ = lazy_exports(__name__, _HOME)
