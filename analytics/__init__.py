"""Analytics: anomaly detection on live telemetry, its SKAB evaluation, production forecasts, and the job
scheduler."""

from analytics.checks import CheckConfig, TagLimits
from analytics.detector import Detector, DetectorConfig, Model, Scores, Stream
from analytics.errors import AnalyticsError, DatasetError, NotFittedError, TooLittleDataError
from analytics.forecast import Forecast, ForecastConfig, HourlySeries, forecast
from analytics.forecast_db import forecast_line, order_outlooks
from analytics.live import AnomalyJob, LiveConfig
from analytics.outlook import MaintenanceWindow, OrderOutlook, lowest_loss_window, order_outlook
from analytics.scheduler import JobSpec, Scheduler
from analytics.skab import SkabReport, evaluate

__all__ = [
    "AnalyticsError",
    "AnomalyJob",
    "CheckConfig",
    "DatasetError",
    "Detector",
    "DetectorConfig",
    "Forecast",
    "ForecastConfig",
    "HourlySeries",
    "JobSpec",
    "LiveConfig",
    "MaintenanceWindow",
    "Model",
    "NotFittedError",
    "OrderOutlook",
    "Scheduler",
    "Scores",
    "SkabReport",
    "Stream",
    "TagLimits",
    "TooLittleDataError",
    "evaluate",
    "forecast",
    "forecast_line",
    "lowest_loss_window",
    "order_outlook",
    "order_outlooks",
]
