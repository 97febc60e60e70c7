"""Predictive maintenance: remaining-useful-life models, their C-MAPSS evaluation, the model registry."""

from maintenance_models.data import CmapssSubset, Runs, load_subset
from maintenance_models.errors import (
    ArtifactError,
    DatasetError,
    MaintenanceError,
    NotFittedError,
    RegistryError,
    TooLittleDataError,
)
from maintenance_models.evaluate import CmapssReport, evaluate
from maintenance_models.metrics import phm08_score, rmse, rul_metrics
from maintenance_models.model import Prediction, RulConfig, RulModel
from maintenance_models.registry import RegisteredModel, load_model, promote, register, rollback

__all__ = [
    "ArtifactError",
    "CmapssReport",
    "CmapssSubset",
    "DatasetError",
    "MaintenanceError",
    "NotFittedError",
    "Prediction",
    "RegisteredModel",
    "RegistryError",
    "RulConfig",
    "RulModel",
    "Runs",
    "TooLittleDataError",
    "evaluate",
    "load_model",
    "load_subset",
    "phm08_score",
    "promote",
    "register",
    "rmse",
    "rollback",
    "rul_metrics",
]
