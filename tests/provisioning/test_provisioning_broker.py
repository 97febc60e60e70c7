"""The generated password and ACL files, enforced by a real Mosquitto started on a free port."""

from __future__ import annotations

import asyncio
import contextlib
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

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from helpers import buffered_ever, mosquitto, running_ingest, until, until_rows
from modbus_servers import tcp_server
from paho.mqtt.client import CallbackAPIVersion, Client, ConnectFlags, MQTTMessage
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerting import topic_filters
from edge_agent import EdgeAgent, load_config
from factory.commands import WriteRequest, decode_reply, encode_request
from factory.db import connect
from factory.mqtt import connect as mqtt_connect
from factory.mqtt import parse_mqtt_url
from factory_servers import free_port
from provisioning.broker import MOSQUITTO_LIMITS, SERVICES, parse_listen, render_acl, rotate_service
from provisioning.cli import broker, device, revoke
from provisioning.devices import ProvisioningError

NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 reason code 0x10: a success


@dataclass
class Probe:
    """A paho client whose connect, publish and subscribe outcomes can be awaited."""

    client: Client
    connack: queue.Queue[int] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[int] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)


def _probe(port: int, user: str | None, password: str | None, client_id: str = "", *, keep: bool = False) -> Probe:
    """Connected (asynchronously: await ``connack``); ``keep``: a session the broker keeps for 5 min."""
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
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
    expiry = Properties(PacketTypes.CONNECT)
    expiry.SessionExpiryInterval = 300
    client.connect("127.0.0.1", port, clean_start=not keep, properties=expiry if keep else None)
    client.loop_start()
    return probe


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.client.disconnect()
        probe.client.loop_stop()


async def _rotate(database_url: str) -> tuple[str, str, str, str, str]:
    async with await connect(database_url, autocommit=True) as conn:
        return (
            await rotate_service(conn, "ingest"),
            await rotate_service(conn, "commands"),
            await rotate_service(conn, "erp-relay"),
            await rotate_service(conn, "alerts"),
            await rotate_service(conn, "provision"),
        )


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


def _provisioned(database_url: str, site: str, tmp_path: Path, devices: tuple[str, ...]) -> Provisioned:
    """Devices and the broker's files for them, with the two listeners on free ports."""
    runner, env = CliRunner(), {"FACTORY_DATABASE_URL": database_url}
    bundles: dict[str, dict[str, str]] = {}
    for name in devices:
        result = runner.invoke(device, [site, name, "--out", str(tmp_path / name), "--json"], env=env)
        assert result.exit_code == 0, result.output
        bundles[name] = json.loads(result.output)
    ports, out = (free_port(), free_port()), tmp_path / "broker"
    args = ["--out", str(out), "--listen", f"127.0.0.1:{ports[0]}", "--device-listen", f"127.0.0.1:{ports[1]}"]
    result = runner.invoke(broker, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    files = json.loads(result.output)
    passwords = asyncio.run(_rotate(database_url))  # known whoever created the accounts
    assert runner.invoke(broker, args, env=env).exit_code == 0
    return Provisioned(runner, env, args, bundles, ports, out, files, passwords)


@dataclass
class Provisioned:
    runner: CliRunner
    env: dict[str, str]
    args: list[str]  # `provision broker`'s
    bundles: dict[str, dict[str, str]]
    ports: tuple[int, int]  # services', devices'
    out: Path
    files: dict[str, str]
    passwords: tuple[str, str, str, str, str]  # ingest's, commands', erp-relay's, the alert bridge's, provision's

    def device(self, name: str, client_id: str = "") -> Probe:
        return _probe(self.ports[1], self.bundles[name]["username"], _secret(self.bundles[name]["secret"]), client_id)


def test_device_acl_and_revocation_on_a_real_broker(
    database_url: str, site: str, tmp_path: Path, probes: list[Probe]
) -> None:
    p = _provisioned(database_url, site, tmp_path, ("dev-a", "dev-b"))
    conf = Path(p.files["conf"]).read_text()
    assert "allow_anonymous true" not in conf
    assert MOSQUITTO_LIMITS in conf
    for name in ("passwd", "acl", "services.passwd", "services.acl"):
        assert (p.out / name).stat().st_mode & 0o077 == 0
    proc = _start(p.out / "mosquitto.conf", p.ports[1])
    try:
        _check_acl(p, site, probes)
        for name in ("dev-a", "dev-b"):  # each says it is offline, retained (as its last will is)
            said = p.device(name)
            probes.append(said)
            assert said.connack.get(timeout=5) == 0
            said.client.publish(f"factory/v1/{site}/{name}/status", b'{"state":"offline"}', qos=1, retain=True)
            assert said.pubacks.get(timeout=5) in {0, NO_MATCHING_SUBSCRIBERS}
        # an account that may not write device status (ingest) clears nothing, and says so
        ingest = f"mqtt://ingest:{p.passwords[0]}@127.0.0.1:{p.ports[0]}"
        refused = p.runner.invoke(revoke, [site, "dev-a", "--mqtt-url", ingest], env=p.env)
        assert refused.exit_code == 2
        assert f"could not clear the retained status of {site}/dev-a" in refused.output
        provision = f"mqtt://provision:{p.passwords[4]}@127.0.0.1:{p.ports[0]}"
        revoked = p.runner.invoke(revoke, [site, "dev-a", "--mqtt-url", provision, "--json"], env=p.env)
        assert revoked.exit_code == 0, revoked.output
        assert json.loads(revoked.output)["status_cleared"] is True
        # a consumer subscribing now gets B's retained status and none of A's, the retired device
        reader = _probe(p.ports[0], "alerts", p.passwords[3])
        probes.append(reader)
        assert reader.connack.get(timeout=5) == 0
        reader.client.subscribe([(f"factory/v1/{site}/dev-a/status", 1), (f"factory/v1/{site}/dev-b/status", 1)])
        assert reader.subacks.get(timeout=5) == [1, 1]
        assert reader.messages.get(timeout=5) == (f"factory/v1/{site}/dev-b/status", b'{"state":"offline"}')
        assert reader.messages.empty()
        assert p.runner.invoke(broker, p.args, env=p.env).exit_code == 0
        assert f"{site}.dev-a:" not in (p.out / "passwd").read_text()
        os.kill(proc.pid, signal.SIGHUP)
        refused = None
        for _ in range(50):  # the reload happens asynchronously after the signal
            probe = p.device("dev-a")
            probes.append(probe)
            refused = probe.connack.get(timeout=5)
            if refused != 0:
                break
            threading.Event().wait(0.1)
        assert refused == NOT_AUTHORIZED
        still = p.device("dev-b")
        probes.append(still)
        assert still.connack.get(timeout=5) == 0  # other devices are unaffected
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_device_can_take_over_another_session(
    database_url: str, site: str, tmp_path: Path, probes: list[Probe]
) -> None:
    """A device connecting with ingest's client id, or another device's, takes over nothing:
    on the devices' listener its client id is its user name."""
    p = _provisioned(database_url, site, tmp_path, ("dev-a", "dev-b"))
    proc = _start(p.out / "mosquitto.conf", p.ports[1])
    ingest_id = f"factory-ingest-{site}"
    try:
        ingest = _probe(p.ports[0], "ingest", p.passwords[0], ingest_id, keep=True)
        assert ingest.connack.get(timeout=5) == 0
        ingest.client.subscribe(f"factory/v1/{site}/+/telemetry", qos=1)
        assert ingest.subacks.get(timeout=5) == [1]
        ingest.client.disconnect()
        ingest.client.loop_stop()
        a = p.device("dev-a")
        probes.append(a)
        assert a.connack.get(timeout=5) == 0
        for n in range(100):  # queued for ingest while it is away
            a.client.publish(f"factory/v1/{site}/dev-a/telemetry", b"%d" % n, qos=1)
            assert a.pubacks.get(timeout=5) == 0
        for client_id in (ingest_id, p.bundles["dev-a"]["username"]):
            thief = p.device("dev-b", client_id)
            probes.append(thief)
            assert thief.connack.get(timeout=5) == 0  # admitted, as itself
        a.client.publish(f"factory/v1/{site}/dev-a/telemetry", b"100", qos=1)
        assert a.pubacks.get(timeout=5) == 0  # A was not kicked off
        back = _probe(p.ports[0], "ingest", p.passwords[0], ingest_id, keep=True)
        probes.append(back)
        assert back.connack.get(timeout=5) == 0
        got = [back.messages.get(timeout=5)[1] for _ in range(101)]
        assert got == [b"%d" % n for n in range(101)]  # every queued message, in order
        # and a device's credentials open nothing on the services' listener
        wrong_door = _probe(p.ports[0], p.bundles["dev-a"]["username"], _secret(p.bundles["dev-a"]["secret"]))
        probes.append(wrong_door)
        assert wrong_door.connack.get(timeout=5) == NOT_AUTHORIZED
    finally:
        proc.terminate()
        proc.wait(10)


def _check_acl(p: Provisioned, site: str, probes: list[Probe]) -> None:
    ingest_pw, commands_pw, *_ = p.passwords
    ingest = _probe(p.ports[0], "ingest", ingest_pw)
    probes.append(ingest)
    assert ingest.connack.get(timeout=5) == 0
    ingest.client.subscribe(f"$share/ingest/factory/v1/{site}/+/telemetry", qos=1)
    assert ingest.subacks.get(timeout=5) == [1]  # granted QoS 1, shared subscription included
    on_devices = _probe(p.ports[1], "ingest", ingest_pw)
    probes.append(on_devices)
    assert on_devices.connack.get(timeout=5) == NOT_AUTHORIZED  # services have their own listener

    a = p.device("dev-a")
    probes.append(a)
    assert a.connack.get(timeout=5) == 0
    # Mosquitto 2.0 grants any subscription and applies `topic read` when it delivers:
    # A may subscribe to B's commands but never receives them.
    a.client.subscribe(f"factory/v1/{site}/dev-b/cmd", qos=1)
    assert a.subacks.get(timeout=5) == [1]
    a.client.subscribe(f"factory/v1/{site}/dev-a/cmd", qos=1)
    assert a.subacks.get(timeout=5) == [1]
    commands = _probe(p.ports[0], "commands", commands_pw)
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

    # ingest reads every device's write-back replies (to record them), and no request
    ingest.client.subscribe(f"$share/ingest/factory/v1/{site}/+/cmd/reply", qos=1)
    assert ingest.subacks.get(timeout=5) == [1]
    ingest.client.subscribe(f"factory/v1/{site}/+/cmd", qos=1)
    assert ingest.subacks.get(timeout=5) == [1]  # granted; `topic read` applies on delivery
    b = p.device("dev-b")
    probes.append(b)
    assert b.connack.get(timeout=5) == 0
    b.client.subscribe(f"factory/v1/{site}/dev-b/cmd", qos=1)
    assert b.subacks.get(timeout=5) == [1]
    commands.client.publish(f"factory/v1/{site}/dev-b/cmd", b"request", qos=1)
    assert commands.pubacks.get(timeout=5) == 0
    assert b.messages.get(timeout=5) == (f"factory/v1/{site}/dev-b/cmd", b"request")
    b.client.publish(f"factory/v1/{site}/dev-b/cmd/reply", b"reply", qos=1)
    assert b.pubacks.get(timeout=5) == 0
    assert ingest.messages.get(timeout=5) == (f"factory/v1/{site}/dev-b/cmd/reply", b"reply")
    assert ingest.messages.empty()  # the request was not delivered to ingest
    ingest.client.publish(f"factory/v1/{site}/dev-b/cmd", b"forged", qos=1)
    assert ingest.pubacks.get(timeout=5) == NOT_AUTHORIZED  # ingest sends no write-back
    ingest.client.publish(f"factory/v1/{site}/dev-b/cmd/reply", b"forged", qos=1)
    assert ingest.pubacks.get(timeout=5) == NOT_AUTHORIZED
    assert b.messages.empty()

    # the ERP (setpoints) sends requests to any device and reads their replies, nothing else of theirs
    erp = _probe(p.ports[0], "erp-relay", p.passwords[2])
    probes.append(erp)
    assert erp.connack.get(timeout=5) == 0
    erp.client.subscribe(f"factory/v1/{site}/+/cmd/reply", qos=1)
    assert erp.subacks.get(timeout=5) == [1]
    erp.client.subscribe(f"factory/v1/{site}/+/telemetry", qos=1)
    assert erp.subacks.get(timeout=5) == [1]  # granted; `topic read` applies on delivery
    erp.client.publish(f"factory/v1/{site}/dev-b/cmd", b"setpoint", qos=1)
    assert erp.pubacks.get(timeout=5) == 0
    assert b.messages.get(timeout=5) == (f"factory/v1/{site}/dev-b/cmd", b"setpoint")
    b.client.publish(f"factory/v1/{site}/dev-b/telemetry", b"not for the erp", qos=1)
    assert b.pubacks.get(timeout=5) == 0
    b.client.publish(f"factory/v1/{site}/dev-b/cmd/reply", b"done", qos=1)
    assert b.pubacks.get(timeout=5) == 0
    assert erp.messages.get(timeout=5) == (f"factory/v1/{site}/dev-b/cmd/reply", b"done")
    assert erp.messages.empty()  # the telemetry, published before the reply, never reached the ERP
    erp.client.publish(f"factory/v1/{site}/dev-b/cmd/reply", b"forged", qos=1)
    assert erp.pubacks.get(timeout=5) == NOT_AUTHORIZED
    erp.client.publish(f"factory/v1/{site}/dev-b/telemetry", b"forged", qos=1)
    assert erp.pubacks.get(timeout=5) == NOT_AUTHORIZED
    erp.client.publish("factory/v1/events/order.confirmed", b"{}", qos=1)
    assert erp.pubacks.get(timeout=5) == NO_MATCHING_SUBSCRIBERS  # allowed (its outbox relay); nobody listens
    assert b.messages.empty()

    for port in p.ports:
        anonymous = _probe(port, None, None)
        probes.append(anonymous)
        assert anonymous.connack.get(timeout=5) == NOT_AUTHORIZED
    wrong = _probe(p.ports[1], p.bundles["dev-a"]["username"], "not-the-password")
    probes.append(wrong)
    assert wrong.connack.get(timeout=5) == NOT_AUTHORIZED


def test_each_service_gets_exactly_what_it_uses() -> None:
    acl = render_acl([], dict.fromkeys(SERVICES, "hash"))
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in acl.split("\n\n")[1:]}
    assert blocks["user erp-relay"] == [
        "topic read factory/v1/+/+/cmd/reply", "topic write factory/v1/events/#", "topic write factory/v1/+/+/cmd",
    ]  # fmt: skip
    assert blocks["user ingest"] == [
        *(f"topic read factory/v1/+/+/{kind}" for kind in ("telemetry", "status", "tags", "cmd/reply")),
        "topic write factory/v1/+/+/ack",
    ]
    assert blocks["user analytics"] == ["topic write factory/v1/events/#"]
    assert blocks["user commands"] == ["topic read factory/v1/+/+/cmd/reply", "topic write factory/v1/+/+/cmd"]
    # the alert bridge reads exactly what it subscribes to, and writes nothing
    assert blocks["user alerts"] == [f"topic read {f}" for f in topic_filters()]


def test_the_alert_bridge_reads_its_events_and_device_states_and_publishes_nothing(
    database_url: str, site: str, tmp_path: Path, probes: list[Probe]
) -> None:
    p = _provisioned(database_url, site, tmp_path, ("dev-a",))
    proc = _start(p.out / "mosquitto.conf", p.ports[1])
    try:
        bridge = _probe(p.ports[0], "alerts", p.passwords[3])
        probes.append(bridge)
        assert bridge.connack.get(timeout=5) == 0
        for name in [*topic_filters(), "factory/v1/events/order.created", f"factory/v1/{site}/+/telemetry"]:
            bridge.client.subscribe(name, qos=1)
            assert bridge.subacks.get(timeout=5) == [1]  # granted; `topic read` applies on delivery
        relay = _probe(p.ports[0], "erp-relay", p.passwords[2])
        probes.append(relay)
        assert relay.connack.get(timeout=5) == 0
        a = p.device("dev-a")
        probes.append(a)
        assert a.connack.get(timeout=5) == 0
        # Not for the bridge, published first: an order event and telemetry.
        relay.client.publish("factory/v1/events/order.created", b"order", qos=1)
        assert relay.pubacks.get(timeout=5) in (0, NO_MATCHING_SUBSCRIBERS)
        a.client.publish(f"factory/v1/{site}/dev-a/telemetry", b"telemetry", qos=1)
        assert a.pubacks.get(timeout=5) in (0, NO_MATCHING_SUBSCRIBERS)
        # What it reads: the event kinds it alerts on, and device states.
        for kind in ("anomaly", "work_order.created", "inventory.adjusted"):
            relay.client.publish(f"factory/v1/events/{kind}", kind.encode(), qos=1)
            assert relay.pubacks.get(timeout=5) == 0
        a.client.publish(f"factory/v1/{site}/dev-a/status", b"status", qos=1)
        assert a.pubacks.get(timeout=5) == 0
        got = [bridge.messages.get(timeout=5) for _ in range(4)]
        assert sorted(got) == sorted([("factory/v1/events/anomaly", b"anomaly"),
                                      ("factory/v1/events/work_order.created", b"work_order.created"),
                                      ("factory/v1/events/inventory.adjusted", b"inventory.adjusted"),
                                      (f"factory/v1/{site}/dev-a/status", b"status")])  # fmt: skip
        threading.Event().wait(0.5)
        assert bridge.messages.empty()  # the order event and the telemetry never reached it
        # It publishes nothing: no event, no device's topic.
        for topic in ("factory/v1/events/anomaly", f"factory/v1/{site}/dev-a/status", f"factory/v1/{site}/dev-a/cmd"):
            bridge.client.publish(topic, b"forged", qos=1)
            assert bridge.pubacks.get(timeout=5) == NOT_AUTHORIZED
        on_devices = _probe(p.ports[1], "alerts", p.passwords[3])
        probes.append(on_devices)
        assert on_devices.connack.get(timeout=5) == NOT_AUTHORIZED  # services have their own listener
    finally:
        proc.terminate()
        proc.wait(10)


def test_listen_addresses() -> None:
    assert parse_listen("0.0.0.0:1883") == ("0.0.0.0", 1883)
    assert parse_listen("[::1]:8883") == ("::1", 8883)
    for bad in ("1883", "host:", "host:99999", "a:b:1"):
        with pytest.raises(ProvisioningError):
            parse_listen(bad)


async def test_agent_and_ingest_through_the_provisioned_broker(
    database_url: str, site: str, tmp_path: Path, db: psycopg.AsyncConnection[tuple[object, ...]]
) -> None:
    """A device's bundle and the ingest account, on the generated config: the agent's one
    connection (telemetry, its ack topic, cmd) works with its user name as client id, and
    every point is confirmed stored and leaves the agent's buffer. A write-back sent on the
    `commands` account is carried out and its reply recorded by ingest."""
    p = await asyncio.to_thread(_provisioned, database_url, site, tmp_path, ("dev-a",))  # the CLI runs its own loop
    proc = _start(p.out / "mosquitto.conf", p.ports[1])
    bundle = Path(p.bundles["dev-a"]["config"])
    config = yaml.safe_load(bundle.read_text())
    config["mqtt"]["url"] = f"mqtt://127.0.0.1:{p.ports[1]}"
    config["buffer"]["path"] = str(tmp_path / "buffer.db")
    config["publish"] = {"max_points": 50, "max_interval_ms": 100}
    try:
        async with tcp_server() as (server, port):
            config["sources"] = [{"name": "line", "kind": "modbus", "host": "127.0.0.1", "port": port, "unit": 1,
                                  "poll_ms": 20, "tags": [{"name": "line1.count", "table": "holding", "address": 0,
                                                           "type": "uint16"},
                                                          {"name": "line1.target", "table": "holding", "address": 1,
                                                           "type": "uint16", "writable": True}]}]  # fmt: skip
            bundle.write_text(yaml.safe_dump(config))
            agent = EdgeAgent(load_config(bundle), bundle.parent)
            ingest_url = f"mqtt://ingest:{p.passwords[0]}@127.0.0.1:{p.ports[0]}"
            async with running_ingest(database_url, ingest_url, site) as ingest:
                task = asyncio.create_task(agent.run())
                for value in range(1, 101):
                    await server.set(1, "holding", 0, [value])
                    await asyncio.sleep(0.02)
                await until(ingest, lambda: agent.publisher is not None and agent.publisher.stats.confirmed_points > 50)
                commands_url = f"mqtt://commands:{p.passwords[1]}@127.0.0.1:{p.ports[0]}"
                async with mqtt_connect(parse_mqtt_url(commands_url), "") as commands:
                    await commands.subscribe(f"factory/v1/{site}/dev-a/cmd/reply", qos=1)
                    request = encode_request(WriteRequest("t-1", "line1.target", 640, by="planner"))
                    await commands.publish(f"factory/v1/{site}/dev-a/cmd", request, qos=1)
                    async with asyncio.timeout(15):
                        reply = decode_reply((await anext(aiter(commands.messages))).payload)
                assert (reply.id, reply.ok, reply.by, reply.value) == ("t-1", True, "planner", 640)
                await until(ingest, lambda: ingest.stats.write_backs_recorded == 1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            total = buffered_ever(tmp_path / "buffer.db")
            assert await until_rows(db, site, total) == total
            assert agent.publisher is not None
            assert agent.publisher.stats.confirmed_points == total  # all confirmed before it stopped
            assert agent.publisher.stats.reconnects == 0
            assert await server.get(1, "holding", 1, 1) == [640]
        cur = await db.execute(
            "SELECT w.request_id, w.tag, w.value, w.requested_by, w.ok FROM telemetry.write_back w"
            " JOIN telemetry.device d ON d.id = w.device_id WHERE d.site = %s AND d.name = 'dev-a'",
            (site,),
        )
        assert await cur.fetchall() == [("t-1", "line1.target", 640, "planner", True)]
    finally:
        proc.terminate()
        proc.wait(10)
