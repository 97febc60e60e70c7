"""The provisioned gateway, run by the distribution's nginx on free loopback ports in front
of a real ERP server process: TLS from our own CA (or given certificates), HTTP only
redirecting, rate limits with 429, the body limit, the header timeout, security headers,
X-Forwarded-For overwritten, /metrics kept inside."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from erp_support import running as erp_running
from erp_support import server_process, sync_client

from erp_api.config import MAX_CONTENT
from factory_servers import free_port
from provisioning.cli import gateway
from provisioning.gateway import DEFAULT_MAX_BODY, GatewayOptions, render

HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")


def nginx() -> str:
    """The nginx binary. Never a skip: without it the tests fail, saying why."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.fail("the gateway tests need nginx: scripts/test installs it as root on Debian/Ubuntu;"
                    " otherwise install the package nginx")  # fmt: skip
    return binary


def provision(out: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(gateway, ["--out", str(out), "--json", *args])
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


@dataclass
class Gateway:
    https: int
    http: int
    ca: Path | None
    prefix: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.https}"

    def client(self, **headers: str) -> httpx.Client:
        assert self.ca is not None
        return httpx.Client(base_url=self.base, verify=ssl.create_default_context(cafile=self.ca), headers=headers,
                            timeout=30)  # fmt: skip

    def log(self) -> str:
        return (self.prefix / "access.log").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def erp(database_url: str) -> Iterator[str]:
    with server_process(database_url) as base:
        yield base


def _upstream(base: str) -> str:
    return base.removeprefix("http://")


@contextlib.contextmanager
def running(
    tmp: Path, upstream: str, *options: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Iterator[Gateway]:
    """`factory provision gateway` into ``tmp``/conf, then nginx with ``tmp``/prefix, on loopback."""
    https, http = free_port(), free_port()
    args = ["--erp", upstream, "--grafana", "none", "--listen-address", "127.0.0.1",
            "--https-port", str(https), "--http-port", str(http), *(a for h in hosts for a in ("--host", h))]  # fmt: skip
    if os.geteuid() == 0:  # nginx's workers would otherwise be `nobody`, shut out of pytest's folders
        args += ["--run-as", pwd.getpwuid(os.geteuid()).pw_name]
    payload = provision(tmp / "conf", *args, *options)
    prefix = tmp / "prefix"
    prefix.mkdir(exist_ok=True)
    proc = subprocess.Popen([nginx(), "-p", str(prefix), "-c", payload["conf"], "-e", "stderr"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {proc.stderr.read() if proc.stderr else ''}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https), timeout=1):
                break
            time.sleep(0.05)
        yield Gateway(https, http, Path(payload["ca"]) if payload["ca"] else None, prefix)
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()


def test_the_default_body_limit_is_the_erps() -> None:
    assert DEFAULT_MAX_BODY == MAX_CONTENT


def test_nginx_accepts_the_config_with_every_upstream(tmp_path: Path) -> None:
    payload = provision(tmp_path / "conf", "--erp", "127.0.0.1:8000", "--grafana", "127.0.0.1:3000",
                        "--mcp", "127.0.0.1:8765", "--https-port", "8443", "--http-port", "8080")  # fmt: skip
    (tmp_path / "prefix").mkdir()
    checked = subprocess.run([nginx(), "-t", "-p", str(tmp_path / "prefix"), "-c", payload["conf"], "-e", "stderr"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_mcp_is_served_only_when_its_upstream_is_given() -> None:
    assert "/mcp" not in render(GatewayOptions())
    assert "location /mcp" in render(GatewayOptions(mcp=GatewayOptions().erp))


def test_tls_with_our_own_ca_and_plain_http_only_redirects(tmp_path: Path, erp: str) -> None:
    with running(tmp_path, _upstream(erp)) as gw:
        assert gw.ca is not None
        trusting = ssl.create_default_context(cafile=gw.ca)
        with socket.create_connection(("127.0.0.1", gw.https), timeout=30) as raw, \
                trusting.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
        for context, name in ((ssl.create_default_context(), "localhost"), (trusting, "not-this-host.example")):
            with socket.create_connection(("127.0.0.1", gw.https), timeout=30) as raw, \
                    pytest.raises(ssl.SSLCertVerificationError):  # fmt: skip
                context.wrap_socket(raw, server_hostname=name)
        with gw.client() as client:
            health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        plain = httpx.get(f"http://127.0.0.1:{gw.http}/api/v1/products?limit=1", timeout=30)
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://127.0.0.1:{gw.https}/api/v1/products?limit=1"
        assert "products" not in plain.text  # nothing of the API on the plain port


def test_security_headers_and_the_request_id(tmp_path: Path, erp: str) -> None:
    with running(tmp_path, _upstream(erp)) as gw, gw.client() as client:
        reply = client.get("/healthz")
        own = client.get("/healthz", headers={"X-Request-Id": "order-import.42"})
        odd = client.get("/healthz", headers={"X-Request-Id": 'a"b c'})
        missing = client.get("/no/such/page")
    for response in (reply, missing):
        for header in HEADERS:
            assert response.headers.get(header), f"{header} missing on {response.url}"
        assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
        assert response.headers["server"] == "nginx"  # no version
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert len(reply.headers["x-request-id"]) == 32
    assert own.headers["x-request-id"] == "order-import.42"
    assert odd.headers["x-request-id"] != 'a"b c'
    assert len(odd.headers["x-request-id"]) == 32
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "urn:factory:gateway:problem:not-found"


def test_requests_beyond_the_burst_get_429_with_retry_after(tmp_path: Path, erp: str) -> None:
    burst = 5
    with running(tmp_path, _upstream(erp), "--rate", "1", "--burst", str(burst)) as gw, gw.client() as client:
        replies = [client.get("/healthz") for _ in range(40)]
        log = gw.log()
    statuses = [r.status_code for r in replies]
    # The first burst + 1 are always served; then one a second: 40 requests take far less than 34 s.
    assert statuses[: burst + 1] == [200] * (burst + 1), statuses
    assert 429 in statuses, statuses
    assert set(statuses) == {200, 429}, statuses
    refused = replies[statuses.index(429)]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "urn:factory:gateway:problem:too-many-requests"
    assert problem["status"] == 429
    assert problem["request_id"] == refused.headers["x-request-id"]
    for header in HEADERS:
        assert refused.headers.get(header), header
    assert '"GET /healthz HTTP/1.1" 429 ' in log


def test_sign_ins_have_a_stricter_limit_of_their_own(tmp_path: Path, erp: str) -> None:
    with running(tmp_path, _upstream(erp), "--login-rate", "1", "--login-burst", "2") as gw, gw.client() as client:
        sign_ins = [client.post("/api/v1/auth/token", data={"username": f"nobody-{uuid.uuid4().hex[:8]}",
                                                           "password": "wrong"}) for _ in range(6)]  # fmt: skip
        reads = [client.get("/api/v1/auth/token") for _ in range(6)]  # not a sign-in: not counted
    statuses = [r.status_code for r in sign_ins]
    assert statuses[:3] == [401] * 3, statuses  # reached the ERP, which refused the password
    assert statuses[3:] == [429] * 3, statuses  # one a minute: the next is a minute away
    assert sign_ins[-1].headers["retry-after"] == "60"
    assert sign_ins[-1].json()["type"] == "urn:factory:gateway:problem:too-many-requests"
    assert {r.status_code for r in reads} == {405}


def test_a_body_over_the_limit_is_refused_before_the_erp(tmp_path: Path, erp: str) -> None:
    with running(tmp_path, _upstream(erp), "--max-body", "4096") as gw, gw.client() as client:
        within = client.post(
            "/api/v1/products", content=b"{" + b" " * 4000, headers={"Content-Type": "application/json"}
        )
        over = client.post("/api/v1/products", content=b"{" + b" " * 5000, headers={"Content-Type": "application/json"})
        chunks = client.post("/api/v1/products", content=iter([b"{", b" " * 3000, b" " * 3000]),
                             headers={"Content-Type": "application/json"})  # fmt: skip
    # Within the limit the ERP answers, with a problem of its own (the JSON is cut short).
    assert within.status_code == 422, within.text
    assert within.json()["type"].startswith("urn:factory:erp:problem:")
    for refused in (over, chunks):
        assert refused.status_code == 413, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:factory:gateway:problem:content-too-large"
        assert "4096" in refused.json()["detail"]


def _closed_by_server(sock: socket.socket, seconds: float) -> bool:
    """True when the server ends the connection within ``seconds`` without answering."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 408")


def test_half_sent_requests_and_silent_connections_are_cut_off(tmp_path: Path, erp: str) -> None:
    with running(tmp_path, _upstream(erp), "--header-timeout", "2") as gw:
        assert gw.ca is not None
        context = ssl.create_default_context(cafile=gw.ca)
        silent = [socket.create_connection(("127.0.0.1", gw.https), timeout=30) for _ in range(20)]
        half = socket.create_connection(("127.0.0.1", gw.https), timeout=30)
        tls = context.wrap_socket(half, server_hostname="localhost")
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        started = time.monotonic()
        try:
            assert _closed_by_server(tls, 60), "the half-sent request was still open after 60 s"
            assert time.monotonic() - started > 1  # by the timeout, not at once
            assert all(_closed_by_server(s, 60) for s in silent), "a connection that sent nothing stayed open"
        finally:
            tls.close()
            for s in silent:
                s.close()
        with gw.client() as client:  # the gateway still serves
            assert client.get("/healthz").status_code == 200


def test_requests_in_progress_per_address_are_limited(tmp_path: Path, erp: str) -> None:
    """A request whose body never comes is in progress (nginx waits for it, --body-timeout);
    with --conns 1 the same address's next request is refused until it ends."""
    with running(tmp_path, _upstream(erp), "--conns", "1") as gw:
        assert gw.ca is not None
        context = ssl.create_default_context(cafile=gw.ca)
        raw = socket.create_connection(("127.0.0.1", gw.https), timeout=30)
        with context.wrap_socket(raw, server_hostname="localhost") as waiting, gw.client() as client:
            waiting.sendall(b"POST /api/v1/products HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{")  # fmt: skip
            refused = None
            for _ in range(100):  # until nginx has read the headers and counts the request
                reply = client.get("/healthz")
                if reply.status_code == 429:
                    refused = reply
                    break
                time.sleep(0.1)
            assert refused is not None, "a second request in progress was served"
            assert refused.json()["type"] == "urn:factory:gateway:problem:too-many-requests"
            waiting.sendall(b" " * 98 + b"}")  # the first request completes (the ERP refuses it: no token)
            assert waiting.recv(64).startswith(b"HTTP/1.1 401")
            # nginx stops counting the request as it frees it, a moment after the reply.
            assert any(client.get("/healthz").status_code == 200 or time.sleep(0.1) for _ in range(100))


def test_the_erp_sees_the_client_address_not_a_forwarded_for_header(tmp_path: Path, erp: str) -> None:
    invented, direct = f"203.0.113.{uuid.uuid4().int % 250 + 1}", f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    form = {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "wrong"}
    with running(tmp_path, _upstream(erp)) as gw, gw.client(**{"X-Forwarded-For": invented}) as client:
        assert client.post("/api/v1/auth/token", data=form).status_code == 401
    # The ERP believes X-Forwarded-For from 127.0.0.1 (where the gateway is): straight to it, the header counts.
    assert httpx.post(f"{erp}/api/v1/auth/token", data=form, headers={"X-Forwarded-For": direct},
                      timeout=30).status_code == 401  # fmt: skip
    with sync_client(erp) as admin:
        locks = admin.get("/api/v1/auth/locks")
    assert locks.status_code == 200, locks.text
    addresses = {lock["key"] for lock in locks.json() if lock["kind"] == "address"}
    assert direct in addresses
    assert invented not in addresses
    assert "127.0.0.1" in addresses


def test_metrics_stay_inside_and_unknown_upstreams_are_502(tmp_path: Path, erp: str) -> None:
    assert httpx.get(f"{erp}/metrics", timeout=30).status_code == 200
    with running(tmp_path / "a", _upstream(erp)) as gw, gw.client() as client:
        metrics = client.get("/metrics")
        docs, spec = client.get("/docs"), client.get("/openapi.json")
    assert metrics.status_code == 404
    assert "erp_" not in metrics.text
    assert docs.status_code == 200
    assert spec.json()["info"]["title"] == "Factory ERP API"
    with running(tmp_path / "b", f"127.0.0.1:{free_port()}") as gw, gw.client() as client:
        down = client.get("/healthz")
    assert down.status_code == 502
    assert down.json()["type"] == "urn:factory:gateway:problem:upstream-unavailable"
    # A service that takes the connection and never answers (the kernel accepts it into the backlog).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        hung = f"127.0.0.1:{silent.getsockname()[1]}"
        with running(tmp_path / "c", hung, "--upstream-timeout", "1") as gw, gw.client() as client:
            late = client.get("/healthz")
    assert late.status_code == 504
    assert late.json()["type"] == "urn:factory:gateway:problem:upstream-timeout"


def test_grafana_and_mcp_are_proxied_with_their_paths(tmp_path: Path, erp: str) -> None:
    # The ERP stands in for both services: its own 404, naming the path it got, proves that the
    # request reached the upstream with its path as the client sent it.
    upstream = _upstream(erp)
    with running(tmp_path, upstream) as gw, gw.client() as client:
        assert client.get("/mcp").json()["type"] == "urn:factory:gateway:problem:not-found"
        assert client.get("/grafana/api/health").json()["type"] == "urn:factory:gateway:problem:not-found"
    with running(tmp_path / "b", upstream, "--mcp", upstream, "--grafana", upstream) as gw, gw.client() as client:
        mcp, grafana, home = client.get("/mcp"), client.get("/grafana/api/health"), client.get("/")
    for reply, path in ((mcp, "/mcp"), (grafana, "/grafana/api/health")):
        assert reply.status_code == 404
        assert reply.json()["instance"] == path  # the ERP's problem document, not the gateway's
        assert reply.json()["type"] == "about:blank"
    assert home.status_code == 302
    assert home.headers["location"].endswith("/grafana/")


def test_the_ca_is_kept_and_the_certificate_follows_the_names(tmp_path: Path) -> None:
    first = provision(tmp_path, "--host", "plant.example")
    ca, cert, key = Path(first["ca"]), Path(first["cert"]), Path(first["key"])
    assert first["ca_created"]
    assert first["cert_issued"]
    assert ca.parent != cert.parent  # nginx gets tls/, never the CA's key
    for secret in (key, ca.parent / "ca.key"):
        assert secret.stat().st_mode & 0o777 == 0o600
    ca_bytes, cert_bytes = ca.read_bytes(), cert.read_bytes()
    again = provision(tmp_path, "--host", "plant.example")
    assert not again["ca_created"]
    assert not again["cert_issued"]
    assert (ca.read_bytes(), cert.read_bytes()) == (ca_bytes, cert_bytes)
    renamed = provision(tmp_path, "--host", "plant.example", "--host", "10.0.0.5")
    assert not renamed["ca_created"]
    assert renamed["cert_issued"]
    assert ca.read_bytes() == ca_bytes
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {str(n.value) for n in names.value} == {"plant.example", "10.0.0.5"}
    assert provision(tmp_path, "--host", "plant.example", "--new-ca")["ca_created"]
    assert ca.read_bytes() != ca_bytes


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate as a plant might have it from elsewhere: RSA, self-signed, for ``name``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "plant.crt", folder / "plant.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_given_certificates(tmp_path: Path, erp: str) -> None:
    cert, key = _self_signed(tmp_path, "gateway.plant.test")
    with running(tmp_path / "gw", _upstream(erp), "--cert", str(cert), "--key", str(key)) as gw:
        assert gw.ca is None
        context = ssl.create_default_context(cafile=cert)
        with socket.create_connection(("127.0.0.1", gw.https), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname="gateway.plant.test") as tls:  # fmt: skip
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway.plant.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(64).startswith(b"HTTP/1.1 200")
    wrong_cert, _ = _self_signed(tmp_path / "other", "other.plant.test")
    mismatched = CliRunner().invoke(
        gateway, ["--out", str(tmp_path / "x"), "--cert", str(wrong_cert), "--key", str(key)]
    )
    assert mismatched.exit_code == 2
    assert "is not the key of the certificate" in mismatched.output


def test_nginx_runs_the_config_unprivileged(tmp_path: Path, erp: str) -> None:
    """As a user who is not root (nobody here, or whoever runs the tests): everything nginx
    writes is inside its prefix, on ports above 1023, without `user`."""
    if os.geteuid() != 0:
        with running(tmp_path, _upstream(erp)) as gw, gw.client() as client:
            assert client.get("/healthz").status_code == 200
        return
    folder = Path(tempfile.mkdtemp(prefix="factory-gateway-"))
    try:
        https, http = free_port(), free_port()
        payload = provision(folder / "conf", "--erp", _upstream(erp), "--grafana", "none", "--listen-address",
                            "127.0.0.1", "--https-port", str(https), "--http-port", str(http), "--host", "127.0.0.1")  # fmt: skip
        (folder / "prefix").mkdir()
        nobody = pwd.getpwnam("nobody")
        for path in (folder, *folder.rglob("*")):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        proc = subprocess.Popen([nginx(), "-p", str(folder / "prefix"), "-c", payload["conf"], "-e", "stderr"],
                                user=nobody.pw_uid, group=nobody.pw_gid, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            context = ssl.create_default_context(cafile=payload["ca"])
            with httpx.Client(base_url=f"https://127.0.0.1:{https}", verify=context, timeout=30) as client:
                for _ in range(600):
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    with contextlib.suppress(httpx.TransportError):
                        assert client.get("/healthz").status_code == 200
                        break
                    time.sleep(0.05)
                else:
                    pytest.fail("the unprivileged gateway did not answer")
            assert (folder / "prefix" / "nginx.pid").is_file()
            assert (folder / "prefix" / "access.log").stat().st_uid == nobody.pw_uid
        finally:
            proc.terminate()
            proc.wait(20)
            if proc.stderr:
                proc.stderr.close()
    finally:
        shutil.rmtree(folder)


async def test_the_erp_believes_forwarded_for_only_from_the_addresses_given(database_url: str) -> None:
    """`factory erp serve --forwarded-allow-ips`: in compose the gateway's address, not loopback."""
    invented = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    form = {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "wrong"}
    async with erp_running(database_url, forwarded_allow_ips="192.0.2.10") as api, api.client(None) as anonymous:
        signed_in = await anonymous.post("/api/v1/auth/token", data=form, headers={"X-Forwarded-For": invented})
        assert signed_in.status_code == 401
        async with api.client() as admin:
            locks = (await admin.get("/api/v1/auth/locks")).json()
    assert invented not in {lock["key"] for lock in locks}
    assert form["username"] in {lock["key"] for lock in locks}  # the failure was counted, under 127.0.0.1


@pytest.mark.parametrize(
    "args",
    [
        ["--erp", "erp:8000; include /etc/passwd"],
        ["--grafana", "grafana"],
        ["--run-as", "root; daemon on"],
        ["--listen-address", "0.0.0.0:80 ssl"],
        ["--access-log", "/tmp/x factory; error_log /tmp/y"],
        ["--https-port", "8443", "--http-port", "8443"],
        ["--cert", __file__],
    ],
)
def test_values_that_would_break_the_config_are_refused(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(gateway, ["--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "nginx.conf").exists()
