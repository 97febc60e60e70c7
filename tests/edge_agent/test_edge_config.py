"""Edge config: the DESIGN.md example loads; mistakes are reported with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ModbusSource, OpcuaSource, load_config
from factory.configfile import ConfigError

EXAMPLE = """\
site: mill-a
device: boiler-house-pi
mqtt: {url: "mqtts://broker:8883", username: boiler-house-pi, password_file: /etc/factory/secret, ca_file: /etc/factory/ca.pem}
buffer: {path: /var/lib/factory-edge/buffer.db, max_mb: 512}
publish: {max_points: 500, max_interval_ms: 1000}
sources:
  - name: boiler1
    kind: modbus
    host: 10.0.0.12
    port: 502
    unit: 1
    poll_ms: 1000
    byte_order: big
    word_order: big
    tags:
      - {name: boiler1.drum_pressure, table: holding, address: 100, type: float32, word_order: little, scale: 0.1, unit: bar, deadband: 0.05}
      - {name: boiler1.burner_on, table: coil, address: 3, type: bool}
      - {name: boiler1.feed_counter, table: input, address: 20, type: uint32}
  - name: centrifugal1
    kind: opcua
    endpoint: opc.tcp://10.0.0.20:4840
    mode: subscribe
    sampling_ms: 500
    security: {policy: Basic256Sha256, mode: SignAndEncrypt, cert: c.pem, key: k.pem}
    tags:
      - {name: centrifugal1.vibration_rms, node: "ns=2;s=Centrifugal1.VibrationRMS", unit: mm/s, deadband: 0.1}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_design_example_loads(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    config = load_config(write(tmp_path, EXAMPLE.replace("/etc/factory/secret", "secret")))
    modbus, opcua = config.sources
    assert isinstance(modbus, ModbusSource)
    assert isinstance(opcua, OpcuaSource)
    assert modbus.tags[0].word_order == "little"
    assert modbus.tags[0].scale == 0.1
    assert modbus.tags[1].table == "coil"
    assert opcua.tags[0].deadband == 0.1
    target = config.mqtt.target(tmp_path)
    assert target.tls
    assert target.port == 8883
    assert (target.username, target.password) == ("boiler-house-pi", "s3cret")
    assert "s3cret" not in repr(target)
    assert "s3cret" not in target.url


def test_shipped_simulator_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "simulator" / "mill-edge.yaml")
    kinds = {s.kind for s in config.sources}
    assert kinds == {"modbus", "opcua"}


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("type: uint32}", "type: uint33}", ":18: sources[0].tags[2].type: Input should be"),
        ("    poll_ms: 1000\n", "    pol_ms: 1000\n", ":12: sources[0].pol_ms: Extra inputs are not permitted"),
        ("site: mill-a", "site: Mill A", ":1: site: String should match pattern"),
        ("address: 3, type: bool", "address: 3, type: int16", ":17: sources[0].tags[1]: Value error, table coil holds bits"),
        ("mode: subscribe", "mode: push", ":22: sources[1].mode: Input should be 'subscribe' or 'poll'"),
        ("mqtts://broker:8883", "http://broker", ":3: mqtt: Value error, MQTT URL must start with"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in EXAMPLE
    path = write(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(p.startswith(f"{path}{where}") for p in info.value.problems), info.value.problems


def test_duplicate_tag_names_are_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace("boiler1.feed_counter", "boiler1.drum_pressure")
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write(tmp_path, text))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "site: a\nsources: [\n")
    with pytest.raises(ConfigError, match=r"edge.yaml:\d+: invalid YAML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


TEN_ERRORS = """\
site: Mill A
device: pi1
mqtt: {url: "mqtt://127.0.0.1:1883"}
buffer: {path: b.db, max_mb: 0}
publish: {max_points: 0}
publish: {max_points: 10}
sources:
  - name: boiler
    kind: modbus
    host: 127.0.0.1
    unit: 1
    tags:
      - {name: t1, table: holding, address: 70000}
      - {name: t2, table: holding, address: 65535, type: float32}
      - {name: t1, table: holding, address: 3}
  - name: boiler
    kind: modbus
    host: 127.0.0.1
    unit: 300
    tags:
      - {name: t3, table: coil, address: 1, type: int16}
      - {name: t4, table: holding, address: 4, bogus: 1}
"""


def test_ten_problems_are_all_reported_in_one_run_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(TEN_ERRORS)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [(int(p.split(":")[1]), p.split(": ")[1]) for p in info.value.problems]
    assert found == [
        (1, "site"),  # not a valid name
        (4, "buffer.max_mb"),
        (5, "publish.max_points"),
        (6, "publish"),  # the key again
        (13, "sources[0].tags[0].address"),
        (14, "sources[0].tags[1]"),  # a float32 at 65535 ends past the last register
        (15, "sources[0].tags[2].name"),  # t1 again
        (16, "sources[1].name"),  # boiler again
        (19, "sources[1].unit"),
        (21, "sources[1].tags[0]"),  # int16 in a coil
        (22, "sources[1].tags[1].bogus"),
    ], info.value.problems


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [*x]\n",  # recursive
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",  # a billion laughs, in small
    ],
)
def test_anchors_and_aliases_are_refused_quickly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_config(path)
