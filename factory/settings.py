"""Process-wide settings from the environment (FACTORY_*); CLI flags override them.

One ``Settings`` per process: the ``factory`` command reads it once and hands it to every
subcommand through click's context (``current``); a command passes what it needs down, and
library code does not read the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_MQTT_URL", "Settings", "current"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/factory"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACTORY_", extra="ignore")

    database_url: SecretStr | None = None
    mqtt_url: SecretStr | None = None
    # Where ingest reads device topics: one MQTT broker (mqtt://, the default: mqtt_url) or a
    # NATS JetStream cluster (nats://host:port[,host2:port2...]).
    ingest_url: SecretStr | None = None
    # Where domain events are published (the ERP's and analytics' outbox relays) and read
    # (the alert bridge): mqtt:// (the default: mqtt_url) or nats:// (the FACTORY_EVENTS stream).
    events_url: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The scheduled jobs of ``factory analytics run``: their YAML files, and the ERP the
    # maintenance job opens work orders in when its file names none.
    oee_config: Path | None = None
    maintenance_config: Path | None = None
    report_config: Path | None = None  # the shift report's mailing (docs/reports.md)
    erp_url: str | None = None
    erp_api_key: SecretStr | None = None

    def database(self) -> str:
        return self.database_url.get_secret_value() if self.database_url else DEFAULT_DATABASE_URL

    def mqtt(self) -> str:
        return self.mqtt_url.get_secret_value() if self.mqtt_url else DEFAULT_MQTT_URL

    def ingest(self) -> str:
        return self.ingest_url.get_secret_value() if self.ingest_url else self.mqtt()

    def events(self) -> str:
        return self.events_url.get_secret_value() if self.events_url else self.mqtt()


def current() -> Settings:
    """The running command's ``Settings``: the one ``factory`` read at start, or, for a
    command invoked on its own, one read now and kept in its context."""
    return click.get_current_context().ensure_object(Settings)
