"""Predictive maintenance: remaining-useful-life models, their C-MAPSS evaluation, the model registry.

The names below load their modules on first use: ``factory maintenance`` imports
``maintenance_models.cli`` on the edge too, and that must not pull in numpy or psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from factory.lazy import lazy_exports

if TYPE_CHECKING:
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

_HOME: Final = {
    "ArtifactError": "maintenance_models.errors",
    "CmapssReport": "maintenance_models.evaluate",
    "CmapssSubset": "maintenance_models.data",
    "DatasetError": "maintenance_models.errors",
    "MaintenanceError": "maintenance_models.errors",
    "NotFittedError": "maintenance_models.errors",
    "Prediction": "maintenance_models.model",
    "RegisteredModel": "maintenance_models.registry",
    "RegistryError": "maintenance_models.errors",
    "RulConfig": "maintenance_models.model",
    "RulModel": "maintenance_models.model",
    "Runs": "maintenance_models.data",
    "TooLittleDataError": "maintenance_models.errors",
    "evaluate": "maintenance_models.evaluate",
    "load_model": "maintenance_models.registry",
    "load_subset": "maintenance_models.data",
    "phm08_score": "maintenance_models.metrics",
    "promote": "maintenance_models.registry",
    "register": "maintenance_models.registry",
    "rmse": "maintenance_models.metrics",
    "rollback": "maintenance_models.registry",
    "rul_metrics": "maintenance_models.metrics",
}


__getattr__ = lazy_exports(__name__, _HOME)
