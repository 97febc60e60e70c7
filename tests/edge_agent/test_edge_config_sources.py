"""Config rules of the source features: bit fields, writable tables, shared serial buses,
browse paths and OPC UA security; each mistake named with its key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.config import OpcuaSource, load_config
from factory.configfile import ConfigError

BASE = {"site": "s", "device": "d", "mqtt": {"url": "mqtt://127.0.0.1"}, "buffer": {"path": "b.db"}}


def rtu(name: str, unit: int, **extra: object) -> dict[str, object]:
    return {"name": name, "kind": "modbus", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "unit": unit,
            "tags": [{"name": f"{name}.x", "table": "holding", "address": 0}], **extra}  # fmt: skip


def load(tmp_path: Path, sources: list[dict[str, object]]) -> object:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({**BASE, "sources": sources}))
    return load_config(path)


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ({"table": "holding", "address": 0, "type": "uint16", "bit": 3}, "bit is for type bool"),
        ({"table": "coil", "address": 0, "type": "bool", "bit": 3}, "bit is for type bool"),
        ({"table": "holding", "address": 0, "type": "bool", "bit": 16}, "less than or equal to 15"),
        ({"table": "input", "address": 0, "writable": True}, "table input is read-only"),
        ({"table": "holding", "address": 0, "writable": True, "min": 5, "max": 1}, "min 5.0 is above max 1.0"),
    ],
)
def test_modbus_tag_mistakes(tmp_path: Path, tag: dict[str, object], reason: str) -> None:
    source = {"name": "plc", "kind": "modbus", "host": "h", "tags": [{"name": "a.b", **tag}]}
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, [source])
    assert any("sources[0].tags[0]" in p and reason in p for p in caught.value.problems), caught.value.problems


def test_sources_on_one_serial_port_must_agree(tmp_path: Path) -> None:
    load(tmp_path, [rtu("a", 1), rtu("b", 2)])  # the same settings: one bus, fine
    with pytest.raises(ConfigError, match="share serial port /dev/ttyUSB0: baudrate"):
        load(tmp_path, [rtu("a", 1), rtu("b", 2, baudrate=9600)])


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ({}, "exactly one of node"),
        ({"node": "ns=2;i=5", "browse_path": ["0:Objects"]}, "exactly one of node"),
        ({"browse_path": ["Objects"]}, "should match pattern"),
    ],
)
def test_opcua_node_addressing(tmp_path: Path, tag: dict[str, object], reason: str) -> None:
    source = {"name": "ua", "kind": "opcua", "endpoint": "opc.tcp://h:4840", "tags": [{"name": "a.b", **tag}]}
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, [source])
    assert any(reason in p for p in caught.value.problems), caught.value.problems


def test_opcua_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    source = {"name": "ua", "kind": "opcua", "endpoint": "opc.tcp://h:4840", "password_file": "pw",
              "security": {"policy": "Basic256Sha256", "mode": "Sign", "cert": "c.pem", "key": "/abs/k.pem",
                           "server_cert": "pki/server.der"},
              "tags": [{"name": "a.b", "browse_path": ["0:Objects", "2:Mill"]}]}  # fmt: skip
    config = load(tmp_path, [source])
    ua = config.sources[0]  # type: ignore[attr-defined]
    assert isinstance(ua, OpcuaSource)
    assert ua.security is not None
    base = tmp_path.resolve()
    assert (ua.password_file, ua.security.cert, ua.security.key, ua.security.server_cert) == (
        base / "pw",
        base / "c.pem",
        Path("/abs/k.pem"),
        base / "pki/server.der",
    )
