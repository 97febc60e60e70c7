"""Analytics: anomaly detection on live telemetry, its SKAB evaluation, and the job scheduler."""

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
