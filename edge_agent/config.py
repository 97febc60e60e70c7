"""The edge agent's config file (one YAML per device, DESIGN.md format).

Every model forbids unknown keys, so a typo fails at start-up with file, line and key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from factory.configfile import Loc, load_yaml_model
from factory.mqtt import MqttTarget, parse_mqtt_url

__all__ = [
    "AGENT_TAGS",
    "HTTP_PORT",
    "BufferConfig",
    "EdgeConfig",
    "HttpConfig",
    "ModbusSource",
    "ModbusTag",
    "MqttConfig",
    "OpcuaSource",
    "OpcuaTag",
    "PublishConfig",
    "SourceConfig",
    "load_config",
]

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TAG = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_ADDRESS: Final = 65535  # the last Modbus register or bit
# Beside ingest (9101) and analytics (9108); 9100 is left to node_exporter, common on a Pi.
HTTP_PORT: Final = 9102
# The agent's own tags, published beside the sources' (publish.health_every_s): name -> (unit, meaning).
AGENT_TAGS: Final = {
    "agent.buffer_points": ("points", "points waiting in the durable buffer"),
    "agent.buffer_oldest_s": ("s", "age of the oldest point in the durable buffer"),
}
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
    health_every_s: float = Field(10.0, ge=0, description="the agent's own tags (buffer depth) this often; 0: off")
    confirm: Literal["stored", "broker"] = Field(
        "stored", description="keep points until ingest confirms them stored, or (broker) until the broker's PUBACK"
    )
    resend_after_s: float = Field(
        30.0, gt=0, description="send a batch again that stays unconfirmed this long while later ones are confirmed"
    )


class HttpConfig(Strict):
    """``/healthz`` and ``/metrics``: on unless turned off, and on loopback only unless a
    host is given, so a supervisor or a local Prometheus agent can read them and the
    network cannot."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(HTTP_PORT, ge=0, le=65535, description="0: any free port")


class TagCommon(Strict):
    name: str = Field(pattern=TAG)
    unit: str | None = None
    asset: str | None = None
    description: str | None = None
    deadband: float = Field(0.0, ge=0)
    max_age_ms: int = Field(60_000, ge=0)
    writable: bool = False  # may be written through the cmd topic
    min: float | None = Field(None, description="lowest value a write may set (engineering units)")
    max: float | None = Field(None, description="highest value a write may set (engineering units)")

    @model_validator(mode="after")
    def _range(self) -> TagCommon:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ModbusTag(TagCommon):
    table: ModbusTable
    address: int = Field(ge=0, le=MAX_ADDRESS)
    type: ModbusType = "uint16"
    length: int | None = Field(None, ge=1, le=250, description="string length in bytes")
    byte_order: Order | None = None
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    poll_ms: int | None = Field(None, ge=1)
    bit: int | None = Field(None, ge=0, le=15, description="a bool that is one bit of a register (0 = LSB)")

    @property
    def registers(self) -> int:
        """How many registers (or bits) the tag spans."""
        if self.type in ("bool", "int16", "uint16"):
            return 1
        if self.type == "string":
            return ((self.length or 0) + 1) // 2
        return int(self.type[-2:]) // 16  # 32 or 64 bits

    @model_validator(mode="after")
    def _shape(self) -> ModbusTag:
        bit_table = self.table in ("coil", "discrete")
        if bit_table and self.type != "bool":
            raise ValueError(f"table {self.table} holds bits: type must be bool, not {self.type}")
        if self.bit is not None and (bit_table or self.type != "bool"):
            raise ValueError("bit is for type bool in a holding or input register")
        if self.writable and self.table in ("discrete", "input"):
            raise ValueError(f"table {self.table} is read-only: writable needs coil or holding")
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs length (bytes)")
        if self.type != "string" and self.length is not None:
            raise ValueError("length is only for type string")
        if self.address + self.registers - 1 > MAX_ADDRESS:
            raise ValueError(f"a {self.type} at address {self.address} ends past register {MAX_ADDRESS}")
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
    inter_frame_ms: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="silence between requests on the link; default 0 for tcp, 3.5 characters (at least 2 ms) for rtu",
    )
    backoff_max_ms: int = Field(30_000, ge=100, le=3_600_000, description="longest pause for a unit that stays silent")
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

    @property
    def link_key(self) -> str:
        """Sources with the same key share one link: one serial port is one bus."""
        return f"rtu:{self.serial_port}" if self.transport == "rtu" else f"tcp:{self.name}"

    @property
    def inter_frame_s(self) -> float:
        if self.inter_frame_ms is not None:
            return self.inter_frame_ms / 1000
        if self.transport == "tcp":
            return 0.0
        return max(3.5 * 11 / self.baudrate, 0.002)  # 3.5 characters of 11 bits: the RTU frame gap

    def bus_settings(self) -> tuple[object, ...]:
        """What every source on one serial port must agree on."""
        return (self.baudrate, self.parity, self.stopbits, self.timeout_ms, self.inter_frame_ms, self.backoff_max_ms)


class OpcuaSecurity(Strict):
    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    cert: Path | None = None
    key: Path | None = None
    server_cert: Path | None = None  # pin: connect only to a server with exactly this certificate

    @model_validator(mode="after")
    def _complete(self) -> OpcuaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None, and only with it")
        if self.policy != "None" and (self.cert is None or self.key is None):
            raise ValueError(f"policy {self.policy} needs cert and key (the client certificate)")
        if self.policy == "None" and self.server_cert is not None:
            raise ValueError("server_cert is for a secured connection (policy Basic256Sha256)")
        return self


class ServerDeadband(Strict):
    """A data-change filter the OPC UA server applies before it sends anything."""

    type: Literal["absolute", "percent"]  # percent: of the node's EURange, as OPC UA defines it
    value: float = Field(gt=0)

    @model_validator(mode="after")
    def _percent(self) -> ServerDeadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError(f"a percent deadband is at most 100, not {self.value}")
        return self


class OpcuaTag(TagCommon):
    node: str | None = Field(None, description="NodeId string, e.g. ns=2;s=Mill.Speed")
    browse_path: list[Annotated[str, Field(pattern=r"^\d+:.+$")]] | None = Field(
        None, min_length=1, description='from the root: ["0:Objects", "2:Mill", "2:Speed"]'
    )
    # Subscribe mode only: how the server samples, queues and filters this node.
    sampling_ms: int | None = Field(None, ge=0, description="the server's sampling interval; default: the source's")
    queue_size: int = Field(1, ge=1, le=10_000, description="changes the server keeps between publishes")
    server_deadband: ServerDeadband | None = None

    @model_validator(mode="after")
    def _addressed(self) -> OpcuaTag:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node (a NodeId) and browse_path")
        return self


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

    @model_validator(mode="after")
    def _subscription_settings(self) -> OpcuaSource:
        if self.mode == "poll":
            for tag in self.tags:
                if tag.server_deadband is not None or tag.queue_size != 1 or tag.sampling_ms is not None:
                    raise ValueError(
                        f"tag {tag.name}: sampling_ms, queue_size and server_deadband apply to mode subscribe only"
                    )
        return self


SourceConfig = ModbusSource | OpcuaSource
Source = Annotated[SourceConfig, Field(discriminator="kind")]


class EdgeConfig(Strict):
    site: str = Field(pattern=NAME)
    device: str = Field(pattern=NAME)
    mqtt: MqttConfig
    buffer: BufferConfig
    publish: PublishConfig = PublishConfig()
    http: HttpConfig = HttpConfig()  # /healthz and /metrics
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> EdgeConfig:
        seen: set[str] = set(AGENT_TAGS) if self.publish.health_every_s else set()
        for source in self.sources:
            for tag in source.tags:
                if tag.name in seen:
                    raise ValueError(f"tag name {tag.name!r} is used twice; names are unique per device")
                seen.add(tag.name)
        return self

    @model_validator(mode="after")
    def _one_bus_one_setting(self) -> EdgeConfig:
        buses: dict[str, ModbusSource] = {}
        for source in self.sources:
            if not isinstance(source, ModbusSource) or source.transport != "rtu":
                continue
            first = buses.setdefault(source.link_key, source)
            if first.bus_settings() != source.bus_settings():
                raise ValueError(
                    f"sources {first.name} and {source.name} share serial port {source.serial_port}: baudrate,"
                    " parity, stopbits, timeout_ms, inter_frame_ms and backoff_max_ms must be the same"
                )
        return self


def _anchored(path: Path | None, base_dir: Path) -> Path | None:
    return path if path is None or path.is_absolute() else base_dir / path


def _anchor_opcua(source: OpcuaSource, base_dir: Path) -> OpcuaSource:
    """Relative certificate, key and password paths are relative to the config file."""
    security = source.security
    if security is not None:
        security = security.model_copy(
            update={name: _anchored(getattr(security, name), base_dir) for name in ("cert", "key", "server_cert")}
        )
    return source.model_copy(update={"security": security, "password_file": _anchored(source.password_file, base_dir)})


def cross_checks(data: Any) -> list[tuple[Loc, str]]:
    """What spans sources, found in the raw file so that it is reported with its line in the
    same run as everything else: a source or tag name used twice."""
    problems: list[tuple[Loc, str]] = []
    sources = data.get("sources") if isinstance(data, dict) else None
    publish = data.get("publish") if isinstance(data, dict) else None
    health_on = not isinstance(publish, dict) or publish.get("health_every_s", 10.0) != 0
    names: dict[str, str] = dict.fromkeys(AGENT_TAGS, "the agent's own tags") if health_on else {}
    sources_seen: dict[str, int] = {}
    for i, source in enumerate(sources if isinstance(sources, list) else []):
        if not isinstance(source, dict):
            continue
        if isinstance(name := source.get("name"), str):
            if name in sources_seen:
                problems.append((("sources", i, "name"), f"source name {name!r} is also sources[{sources_seen[name]}]"))
            sources_seen.setdefault(name, i)
        tags = source.get("tags")
        for j, tag in enumerate(tags if isinstance(tags, list) else []):
            if isinstance(tag, dict) and isinstance(tag_name := tag.get("name"), str):
                if tag_name in names:
                    problems.append((("sources", i, "tags", j, "name"),
                                     f"tag name {tag_name!r} is used twice (also in {names[tag_name]})"))  # fmt: skip
                names.setdefault(tag_name, f"sources[{i}].tags[{j}]")
    return problems


def load_config(path: Path) -> EdgeConfig:
    """Load and validate an edge config; raises ``ConfigError`` naming file, line and key."""
    config = load_yaml_model(path, EdgeConfig, cross_checks)
    base_dir = path.resolve().parent
    sources = [_anchor_opcua(s, base_dir) if isinstance(s, OpcuaSource) else s for s in config.sources]
    return config.model_copy(update={"sources": sources})
