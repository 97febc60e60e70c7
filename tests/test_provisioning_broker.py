"""The generated password and ACL files, enforced by a real Mosquitto started on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import mosquitto
from paho.mqtt.client import CallbackAPIVersion, Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from factory.db import connect
from factory.embedded import MOSQUITTO_LIMITS, free_port
from provisioning.broker import parse_listen, rotate_service
from provisioning.cli import broker, device, revoke
from provisioning.devices import ProvisioningError

NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


@dataclass
class Probe:
    """A paho client whose connect, publish and subscribe outcomes can be awaited."""

    client: Client
    connack: queue.Queue[int] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[int] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)


def _probe(port: int, user: str | None, password: str | None) -> Probe:
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    probe = Probe(client)
    if user is not None:
        client.username_pw_set(user, password)

    def on_connect(_c: Client, _u: object, _f: ConnectFlags, rc: ReasonCode, _p: Properties | None) -> None:
        probe.connack.put(rc.value)

    def on_publish(_c: Client, _u: object, _mid: int, rc: ReasonCode, _p: Properties) -> None:
        probe.pubacks.put(rc.value)

    def on_subscribe(_c: Client, _u: object, _mid: int, rcs: list[ReasonCode], _p: Properties) -> None:
        probe.subacks.put([rc.value for rc in rcs])

    def on_message(_c: Client, _u: object, msg: MQTTMessage) -> None:
        probe.messages.put((msg.topic, msg.payload))

    client.on_connect, client.on_publish = on_connect, on_publish
    client.on_subscribe, client.on_message = on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return probe


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.client.disconnect()
        probe.client.loop_stop()


async def _rotate(database_url: str) -> tuple[str, str]:
    async with await connect(database_url, autocommit=True) as conn:
        return await rotate_service(conn, "ingest"), await rotate_service(conn, "commands")


def _secret(path: str) -> str:
    return Path(path).read_text().strip()


def _start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    binary = mosquitto()
    log = (conf.parent / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None, (conf.parent / "mosquitto.log").read_text()
        threading.Event().wait(0.05)
    raise AssertionError("mosquitto did not start listening")


def test_device_acl_and_revocation_on_a_real_broker(
    database_url: str, site: str, tmp_path: Path, probes: list[Probe]
) -> None:
    runner, env = CliRunner(), {"FACTORY_DATABASE_URL": database_url}
    bundles: dict[str, dict[str, str]] = {}
    for name in ("dev-a", "dev-b"):
        result = runner.invoke(device, [site, name, "--out", str(tmp_path / name), "--json"], env=env)
        assert result.exit_code == 0, result.output
        bundles[name] = json.loads(result.output)
    port, out = free_port(), tmp_path / "broker"
    result = runner.invoke(broker, ["--out", str(out), "--listen", f"127.0.0.1:{port}", "--json"], env=env)
    assert result.exit_code == 0, result.output
    files = json.loads(result.output)
    conf = Path(files["conf"]).read_text()
    assert "allow_anonymous false" in conf
    assert MOSQUITTO_LIMITS in conf
    for name in ("passwd", "acl"):
        assert (out / name).stat().st_mode & 0o077 == 0
    ingest_pw, commands_pw = asyncio.run(_rotate(database_url))  # known whoever created the accounts
    assert runner.invoke(broker, ["--out", str(out), "--listen", f"127.0.0.1:{port}"], env=env).exit_code == 0

    proc = _start(out / "mosquitto.conf", port)
    try:
        _check_acl(port, site, bundles, (ingest_pw, commands_pw), probes)
        assert runner.invoke(revoke, [site, "dev-a"], env=env).exit_code == 0
        assert runner.invoke(broker, ["--out", str(out), "--listen", f"127.0.0.1:{port}"], env=env).exit_code == 0
        assert f"{site}.dev-a:" not in (out / "passwd").read_text()
        os.kill(proc.pid, signal.SIGHUP)
        user_a, pw_a = bundles["dev-a"]["username"], _secret(bundles["dev-a"]["secret"])
        refused = None
        for _ in range(50):  # the reload happens asynchronously after the signal
            probe = _probe(port, user_a, pw_a)
            probes.append(probe)
            refused = probe.connack.get(timeout=5)
            if refused != 0:
                break
            threading.Event().wait(0.1)
        assert refused == NOT_AUTHORIZED
        still = _probe(port, bundles["dev-b"]["username"], _secret(bundles["dev-b"]["secret"]))
        probes.append(still)
        assert still.connack.get(timeout=5) == 0  # other devices are unaffected
    finally:
        proc.terminate()
        proc.wait(10)


def _check_acl(
    port: int, site: str, bundles: dict[str, dict[str, str]], passwords: tuple[str, str], probes: list[Probe]
) -> None:
    ingest_pw, commands_pw = passwords
    ingest = _probe(port, "ingest", ingest_pw)
    probes.append(ingest)
    assert ingest.connack.get(timeout=5) == 0
    ingest.client.subscribe(f"$share/ingest/factory/v1/{site}/+/telemetry", qos=1)
    assert ingest.subacks.get(timeout=5) == [1]  # granted QoS 1, shared subscription included

    a = _probe(port, bundles["dev-a"]["username"], _secret(bundles["dev-a"]["secret"]))
    probes.append(a)
    assert a.connack.get(timeout=5) == 0
    # Mosquitto 2.0 grants any subscription and applies `topic read` when it delivers:
    # A may subscribe to B's commands but never receives them.
    a.client.subscribe(f"factory/v1/{site}/dev-b/cmd", qos=1)
    assert a.subacks.get(timeout=5) == [1]
    a.client.subscribe(f"factory/v1/{site}/dev-a/cmd", qos=1)
    assert a.subacks.get(timeout=5) == [1]
    commands = _probe(port, "commands", commands_pw)
    probes.append(commands)
    assert commands.connack.get(timeout=5) == 0
    commands.client.publish(f"factory/v1/{site}/dev-b/cmd", b"for-b", qos=1)
    assert commands.pubacks.get(timeout=5) == 0
    commands.client.publish(f"factory/v1/{site}/dev-a/cmd", b"for-a", qos=1)
    assert commands.pubacks.get(timeout=5) == 0
    assert a.messages.get(timeout=5) == (f"factory/v1/{site}/dev-a/cmd", b"for-a")

    a.client.publish(f"factory/v1/{site}/dev-b/telemetry", b"forged", qos=1)
    assert a.pubacks.get(timeout=5) == NOT_AUTHORIZED
    a.client.publish("factory/v1/events/order", b"forged", qos=1)
    assert a.pubacks.get(timeout=5) == NOT_AUTHORIZED
    a.client.publish(f"factory/v1/{site}/dev-a/telemetry", b"mine", qos=1)
    assert a.pubacks.get(timeout=5) == 0
    # only A's own message arrives: the forged one (published first) was never delivered
    assert ingest.messages.get(timeout=5) == (f"factory/v1/{site}/dev-a/telemetry", b"mine")
    assert ingest.messages.empty()
    assert a.messages.empty()  # B's command was never delivered to A

    anonymous = _probe(port, None, None)
    probes.append(anonymous)
    assert anonymous.connack.get(timeout=5) == NOT_AUTHORIZED
    wrong = _probe(port, bundles["dev-a"]["username"], "not-the-password")
    probes.append(wrong)
    assert wrong.connack.get(timeout=5) == NOT_AUTHORIZED


def test_listen_addresses() -> None:
    assert parse_listen("0.0.0.0:1883") == ("0.0.0.0", 1883)
    assert parse_listen("[::1]:8883") == ("::1", 8883)
    for bad in ("1883", "host:", "host:99999", "a:b:1"):
        with pytest.raises(ProvisioningError):
            parse_listen(bad)
