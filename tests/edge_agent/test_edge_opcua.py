"""The OPC UA source against a real asyncua server: security None / Basic256Sha256 Sign and
SignAndEncrypt with a client certificate and a user name; a wrong password and an untrusted
certificate reported in words; nodes by browse path, resolved again when a restarted server
moved them; and writes in the node's own type. Certificates are made here with
``cryptography``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.check import probe_all
from edge_agent.commands import CommandHandler
from edge_agent.config import EdgeConfig, OpcuaSource
from edge_agent.opcua import OpcuaReader
from edge_agent.reading import Reading
from factory.commands import WriteRequest, encode_request
from factory.wire import Point, Quality
from factory_servers import free_port
from simulator.opcua_server import stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NS = "urn:test:mill"
LEVEL_PATH = ["0:Objects", "2:Mill", "2:Tank1", "2:Level"]


def make_cert(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed application certificate (PEM) with the URI and key usages OPC UA wants."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


@dataclass
class Certs:
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]  # a client certificate the server does not trust


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("pki")
    return Certs(
        make_cert(folder, "server", "urn:test:server"),
        make_cert(folder, "edge", "urn:factory:edge:pi1"),
        make_cert(folder, "stranger", "urn:factory:edge:stranger"),
    )


class Users:
    """Anonymous may read; a named user must give the right password."""

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        if username is None:
            return User(role=UserRole.User)
        return User(role=UserRole.User) if (username, password) == ("operator", "s3cret") else None


@contextlib.asynccontextmanager
async def mill_server(certs: Certs, port: int, *, moved: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Objects/Mill/Tank1/{Level, Setpoint, Running, Alarm}. ``moved``: another variable is
    made first, so every node gets another numeric NodeId."""
    server = Server(user_manager=Users())  # type: ignore[arg-type]
    await server.init()
    server.disable_clock(val=True)
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    await server.set_application_uri("urn:test:server")
    server.set_security_policy([
        ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ])  # fmt: skip
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    await server.load_certificate(str(certs.server[0]))
    await server.load_private_key(str(certs.server[1]))
    trusted = x509.load_pem_x509_certificate(certs.client[0].read_bytes()).fingerprint(hashes.SHA256())

    async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        if cert.fingerprint(hashes.SHA256()) != trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    server.set_certificate_validator(validate)  # type: ignore[arg-type]
    idx = await server.register_namespace(NS)
    mill = await server.nodes.objects.add_object(idx, "Mill")
    if moved:
        await mill.add_variable(idx, "Spare", 0.0)
    tank = await mill.add_object(idx, "Tank1")
    nodes = {
        "level": await tank.add_variable(idx, "Level", 1.5),
        "setpoint": await tank.add_variable(idx, "Setpoint", 10.0),
        "running": await tank.add_variable(idx, "Running", val=False),
        "count": await tank.add_variable(idx, "Count", 0, ua.VariantType.Int16),
        "alarm": await tank.add_variable(idx, "Alarm", val=False),
    }
    for name in ("setpoint", "running", "count"):
        await nodes[name].set_writable()
    await server.start()
    try:
        yield nodes
    finally:
        await stop_server(server)


def opcua_source(port: int, certs: Certs, mode: str, **extra: Any) -> OpcuaSource:
    security = {} if mode == "None" else {"security": {
        "policy": "Basic256Sha256", "mode": mode, "cert": str(certs.client[0]), "key": str(certs.client[1]),
        "server_cert": str(certs.server[0])}}  # fmt: skip
    return OpcuaSource.model_validate({
        "name": "mill", "kind": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}", "sampling_ms": 100,
        "tags": [
            {"name": "tank.level", "browse_path": LEVEL_PATH},
            {"name": "tank.setpoint", "browse_path": ["0:Objects", "2:Mill", "2:Tank1", "2:Setpoint"],
             "writable": True, "min": 0, "max": 50},
            {"name": "tank.running", "browse_path": ["0:Objects", "2:Mill", "2:Tank1", "2:Running"], "writable": True},
            {"name": "tank.count", "browse_path": ["0:Objects", "2:Mill", "2:Tank1", "2:Count"], "writable": True},
            {"name": "tank.alarm", "node": "ns=2;s=NoSuchNode", "writable": True},
            {"name": "tank.nowhere", "browse_path": ["0:Objects", "2:Mill", "2:Tank9", "2:Level"]},
        ],
        **security, **extra,
    })  # fmt: skip


@contextlib.asynccontextmanager
async def reading(source: OpcuaSource) -> AsyncIterator[tuple[OpcuaReader, list[Point]]]:
    points: list[Point] = []

    async def hand_over(readings: Sequence[Reading]) -> None:
        for reading in readings:
            points.extend(reading.points())

    reader = OpcuaReader(source)
    task = asyncio.create_task(reader.run(hand_over))
    try:
        yield reader, points
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_value(points: list[Point], tag: str, value: Any, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not any(p.tag == tag and p.value == value and p.quality is Quality.GOOD for p in points):
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("mode", "user"), [("None", False), ("Sign", True), ("SignAndEncrypt", True),
                                             ("SignAndEncrypt", False)])  # fmt: skip
async def test_data_arrives_in_every_security_mode(certs: Certs, tmp_path: Path, mode: str, user: bool) -> None:
    port = free_port()
    extra: dict[str, Any] = {}
    if user:
        (tmp_path / "password").write_text("s3cret\n")
        extra = {"username": "operator", "password_file": str(tmp_path / "password")}
    async with mill_server(certs, port) as nodes, reading(opcua_source(port, certs, mode, **extra)) as (reader, points):
        await until_value(points, "tank.level", 1.5)
        await nodes["level"].write_value(7.25)
        await until_value(points, "tank.level", 7.25)
        async with asyncio.timeout(5):
            while not {"tank.alarm", "tank.nowhere"} <= {p.tag for p in points if p.quality is Quality.BAD}:
                await asyncio.sleep(0.05)
        assert reader.stats.last_error == ""


async def test_wrong_password_and_untrusted_certificate_are_reported_clearly(certs: Certs, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "password").write_text("guess\n")
    wrong_password = opcua_source(port, certs, "SignAndEncrypt", username="operator",
                                  password_file=str(tmp_path / "password"))  # fmt: skip
    secure = opcua_source(port, certs, "Sign")
    untrusted = secure.model_copy(update={"security": secure.security.model_copy(  # type: ignore[union-attr]
        update={"cert": certs.stranger[0], "key": certs.stranger[1]})})  # fmt: skip
    async with mill_server(certs, port):
        for source, words in ((wrong_password, "refused the user name or password (BadUserAccessDenied)"),
                              (untrusted, "does not trust the client certificate (BadCertificateUntrusted)")):  # fmt: skip
            config = EdgeConfig.model_validate({"site": "s", "device": "d", "mqtt": {"url": "mqtt://127.0.0.1"},
                                                "buffer": {"path": "b.db"}, "sources": [source.model_dump()]})  # fmt: skip
            lines: list[str] = []
            assert not await probe_all(config, lines.append)
            assert any(words in line for line in lines), lines
            async with reading(source) as (reader, points):
                async with asyncio.timeout(10):
                    while words not in reader.stats.last_error:
                        await asyncio.sleep(0.05)
            assert points == []


async def test_browse_paths_are_resolved_again_after_a_restart_moved_the_nodes(certs: Certs) -> None:
    port = free_port()
    async with reading(opcua_source(port, certs, "None")) as (_reader, points):
        async with mill_server(certs, port) as nodes:
            before = nodes["level"].nodeid
            await until_value(points, "tank.level", 1.5)
        async with mill_server(certs, port, moved=True) as nodes:
            assert nodes["level"].nodeid != before  # the same path, another node
            await nodes["level"].write_value(8.5)
            await until_value(points, "tank.level", 8.5, timeout=40)


async def test_writes_in_the_node_type(certs: Certs, mqtt_url: str) -> None:
    """Through the command handler, without the broker: each request and its reply."""
    port = free_port()
    source = opcua_source(port, certs, "SignAndEncrypt")
    config = EdgeConfig.model_validate({"site": "s", "device": "d", "mqtt": {"url": mqtt_url},
                                        "buffer": {"path": "b.db"}, "sources": [source.model_dump()]})  # fmt: skip
    async with mill_server(certs, port) as nodes, reading(config.sources[0]) as (reader, points):  # type: ignore[arg-type]
        handler = CommandHandler(config, [reader])
        await until_value(points, "tank.level", 1.5)

        async def write(tag: str, value: Any) -> tuple[bool, str | None, str | None]:
            reply = await handler.handle(encode_request(WriteRequest("x", tag, value)))
            return reply.ok, reply.error, reply.reason

        assert await write("tank.setpoint", 42) == (True, None, None)
        assert await write("tank.running", True) == (True, None, None)  # noqa: FBT003
        assert await write("tank.count", -7) == (True, None, None)
        assert (await nodes["setpoint"].read_value(), await nodes["running"].read_value()) == (42.0, True)
        assert await nodes["count"].read_value() == -7
        assert (await write("tank.setpoint", 51))[:2] == (False, "out_of_range")
        assert (await write("tank.count", 40000))[:2] == (False, "out_of_range")
        assert (await write("tank.count", 1.5))[:2] == (False, "wrong_type")
        assert (await write("tank.running", 1))[:2] == (False, "wrong_type")
        assert (await write("tank.level", 3))[:2] == (False, "not_writable")
        assert (await write("tank.alarm", True))[:2] == (False, "device_error")  # noqa: FBT003  # the node is missing
        assert await nodes["setpoint"].read_value() == 42.0


def _values(points: list[Point], tag: str) -> list[Any]:
    return [p.value for p in points if p.tag == tag and p.quality is Quality.GOOD]


async def test_the_server_samples_queues_and_filters_as_configured(certs: Certs) -> None:
    """Deadband and queue size are applied by the server, so unwanted changes never cross the
    network. asyncua's server evaluates absolute deadbands and queues; it accepts but does not
    evaluate percent deadbands (it needs an EURange), so for those the test checks the filter
    the server holds."""
    port = free_port()
    tank = ["0:Objects", "2:Mill", "2:Tank1"]
    source = OpcuaSource.model_validate({
        "name": "mill", "kind": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}",
        "sampling_ms": 1000,  # one publish a second: the writes below all fall between two
        "tags": [
            {"name": "tank.level", "browse_path": LEVEL_PATH, "queue_size": 10,
             "server_deadband": {"type": "absolute", "value": 1.0}},
            {"name": "tank.setpoint", "browse_path": [*tank, "2:Setpoint"], "queue_size": 10, "sampling_ms": 0,
             "server_deadband": {"type": "percent", "value": 5}},
            {"name": "tank.count", "browse_path": [*tank, "2:Count"]},  # queue of one: the latest value only
        ],
    })  # fmt: skip
    async with mill_server(certs, port) as nodes, reading(source) as (_, points):
        await until_value(points, "tank.count", 0)
        await until_value(points, "tank.level", 1.5)
        for level, count in ((10.0, 1), (10.5, 2), (12.0, 3), (12.2, 4), (14.0, 5)):
            await nodes["level"].write_value(level)
            await nodes["count"].write_value(ua.Variant(count, ua.VariantType.Int16))
        await until_value(points, "tank.level", 14.0)
        await until_value(points, "tank.count", 5)
        subscriptions = nodes["level"].session.iserver.subscription_service.subscriptions.values()
        items = [item for sub in subscriptions for item in sub.monitored_item_srv._monitored_items.values()]
    assert _values(points, "tank.level") == [1.5, 10.0, 12.0, 14.0]  # 10.5 and 12.2 were within 1.0
    assert _values(points, "tank.count")[-1] == 5
    assert len(_values(points, "tank.count")) < 6  # not every write: only the latest per publish
    held = [i.filter for i in items if hasattr(i.filter, "DeadbandType")]  # the decoded DataChangeFilters
    filters = {(f.DeadbandType, f.DeadbandValue) for f in held}
    assert filters == {(ua.DeadbandType.Absolute, 1.0), (ua.DeadbandType.Percent, 5.0)}


def test_server_side_settings_are_refused_in_poll_mode() -> None:
    with pytest.raises(ValueError, match="apply to mode subscribe only"):
        OpcuaSource.model_validate({
            "name": "mill", "kind": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", "mode": "poll",
            "tags": [{"name": "tank.level", "node": "ns=2;i=2", "server_deadband": {"type": "absolute", "value": 1}}],
        })  # fmt: skip
    with pytest.raises(ValueError, match="at most 100"):
        OpcuaSource.model_validate({
            "name": "mill", "kind": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840",
            "tags": [{"name": "tank.level", "node": "ns=2;i=2", "server_deadband": {"type": "percent", "value": 150}}],
        })  # fmt: skip
