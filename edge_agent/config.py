"""The edge agent's config file (one YAML per device, DESIGN.md format).

Every model forbids unknown keys, so a typo fails at start-up with file, line and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from factory.configfile import load_yaml_model
from factory.mqtt import MqttTarget, parse_mqtt_url

__all__ = [
    "BufferConfig",
    "EdgeConfig",
    "ModbusSource",
    "ModbusTag",
    "MqttConfig",
    "OpcuaSource",
    "OpcuaTag",
    "PublishConfig",
    "load_config",
]

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TAG = r"^[A-Za-z0-9_.:-]{1,128}$"
Order = Literal["big", "little"]
ModbusTable = Literal["coil", "discrete", "holding", "input"]
ModbusType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(Strict):
    url: str
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)

    @model_validator(mode="after")
    def _url_parses(self) -> MqttConfig:
        parse_mqtt_url(self.url)  # raises ValueError, which pydantic reports at `mqtt`
        return self

    def target(self, base_dir: Path) -> MqttTarget:
        """Resolve the broker target; relative secret paths are relative to the config file."""
        password: SecretStr | None = None
        if self.password_file is not None:
            secret_path = self.password_file if self.password_file.is_absolute() else base_dir / self.password_file
            password = SecretStr(secret_path.read_text(encoding="utf-8").strip())
        target = parse_mqtt_url(self.url).with_credentials(
            self.username, password.get_secret_value() if password else None
        )
        if self.ca_file is not None:
            from dataclasses import replace

            target = replace(target, ca_file=self.ca_file if self.ca_file.is_absolute() else base_dir / self.ca_file)
        return target


class BufferConfig(Strict):
    path: Path
    max_mb: int = Field(512, ge=1)
    fsync: bool = False  # true: every write survives power loss too (more SD-card wear)


class PublishConfig(Strict):
    max_points: int = Field(500, ge=1, le=5000)
    max_interval_ms: int = Field(1000, ge=10, le=60_000)
    drain_points_per_s: int = Field(5000, ge=1, description="rate for the backlog after an outage")


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(9102, ge=1, le=65535)


class TagCommon(Strict):
    name: str = Field(pattern=TAG)
    unit: str | None = None
    asset: str | None = None
    description: str | None = None
    deadband: float = Field(0.0, ge=0)
    max_age_ms: int = Field(60_000, ge=0)


class ModbusTag(TagCommon):
    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    type: ModbusType = "uint16"
    length: int | None = Field(None, ge=1, le=250, description="string length in bytes")
    byte_order: Order | None = None
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    poll_ms: int | None = Field(None, ge=1)
    writable: bool = False

    @model_validator(mode="after")
    def _shape(self) -> ModbusTag:
        bit_table = self.table in ("coil", "discrete")
        if bit_table and self.type != "bool":
            raise ValueError(f"table {self.table} holds bits: type must be bool, not {self.type}")
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs length (bytes)")
        if self.type != "string" and self.length is not None:
            raise ValueError("length is only for type string")
        return self


class ModbusSource(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["modbus"]
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    unit: int = Field(1, ge=0, le=255)
    poll_ms: int = Field(1000, ge=1)
    timeout_ms: int = Field(1000, ge=10, le=60_000)
    max_gap: int = Field(8, ge=0, le=100, description="registers bridged when coalescing reads")
    byte_order: Order = "big"
    word_order: Order = "big"
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _transport(self) -> ModbusSource:
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport tcp needs host")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport rtu needs serial_port")
        return self


class OpcuaSecurity(Strict):
    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> OpcuaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None, and only with it")
        if self.policy != "None" and (self.cert is None or self.key is None):
            raise ValueError(f"policy {self.policy} needs cert and key (the client certificate)")
        return self

    def as_string(self) -> str | None:
        """asyncua's security string, or None for an unsecured connection."""
        if self.policy == "None":
            return None
        return f"{self.policy},{self.mode},{self.cert},{self.key}"


class OpcuaTag(TagCommon):
    node: str


class OpcuaSource(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_ms: int = Field(1000, ge=10)
    timeout_ms: int = Field(4000, ge=100, le=60_000)
    security: OpcuaSecurity | None = None
    username: str | None = None
    password_file: Path | None = None
    tags: list[OpcuaTag] = Field(min_length=1)


Source = Annotated[ModbusSource | OpcuaSource, Field(discriminator="kind")]


class EdgeConfig(Strict):
    site: str = Field(pattern=NAME)
    device: str = Field(pattern=NAME)
    mqtt: MqttConfig
    buffer: BufferConfig
    publish: PublishConfig = PublishConfig()
    http: HttpConfig | None = None  # /healthz and /metrics
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> EdgeConfig:
        seen: set[str] = set()
        for source in self.sources:
            for tag in source.tags:
                if tag.name in seen:
                    raise ValueError(f"tag name {tag.name!r} is used twice; names are unique per device")
                seen.add(tag.name)
        return self


def load_config(path: Path) -> EdgeConfig:
    """Load and validate an edge config; raises ``ConfigError`` naming file, line and key."""
    return load_yaml_model(path, EdgeConfig)
