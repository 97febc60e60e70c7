"""SQL migrations of the ``maintenance`` schema (model registry and asset health), owned by maintenance_models."""
