"""The gateway as code: nginx's configuration for the ERP API, Grafana and the MCP endpoint.

We do not terminate TLS or limit request rates ourselves: nginx (the distribution's
package, or the official image in compose) does, from the files written here. One
``nginx.conf`` holds everything; it runs with ``nginx -p PREFIX -c DIR/nginx.conf``, where
PREFIX is any writable folder (pid file, temporary files, the access log unless given
absolutely) and DIR the provisioned folder, whose ``tls/`` the config names relative to
itself. See docs/deployment.md, "Gateway".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from provisioning.certs import TlsMaterial
from provisioning.devices import ProvisioningError

__all__ = [
    "DEFAULT_MAX_BODY",
    "GatewayFiles",
    "GatewayOptions",
    "Upstream",
    "parse_upstream",
    "render",
    "write_gateway",
]

# The ERP's own limit (erp_api.config.MAX_CONTENT; a test keeps the two equal): what the
# gateway lets through, the ERP would accept.
DEFAULT_MAX_BODY: Final = 1024 * 1024
PROBLEM_BASE: Final = "urn:factory:gateway:problem:"
# Mozilla's "intermediate" TLS 1.2 suites; TLS 1.3 suites are not set by ssl_ciphers.
CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_ADDRESS = re.compile(r"[0-9.]+|\[[0-9A-Fa-f:]+\]")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_PATH = re.compile(r"[A-Za-z0-9_./-]+")
_UPSTREAM = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_upstream(text: str, option: str) -> Upstream:
    """``HOST:PORT`` (a name, an IPv4 address or a bracketed IPv6 address), nothing else:
    the value lands in nginx's configuration, so it must not carry syntax of its own."""
    match = _UPSTREAM.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ProvisioningError(f"{option} {text!r}: expected HOST:PORT, e.g. erp:8000")
    return Upstream(match["host"], int(match["port"]))


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Everything the configuration depends on; the defaults fit deploy/docker-compose.yml."""

    erp: Upstream = Upstream("erp", 8000)
    grafana: Upstream | None = Upstream("grafana", 3000)
    mcp: Upstream | None = None
    https_port: int = 443
    http_port: int = 80
    listen_address: str = ""  # "" all addresses; 127.0.0.1 in tests
    rate: int = 10  # requests a second per client address, sustained
    burst: int = 40  # requests above the rate that are served at once before 429s begin
    login_rate: int = 10  # sign-ins (POST /api/v1/auth/token) a minute per client address
    login_burst: int = 5
    conns: int = 50  # requests in progress at once per client address
    max_body: int = DEFAULT_MAX_BODY
    header_timeout_s: int = 10
    # nginx 1.25.5 gave the TLS handshake a timeout of its own (60 s); before, client_header_timeout
    # covers it, and older nginx refuses the directive: set only where nginx knows it.
    handshake_timeout_s: int | None = None
    body_timeout_s: int = 30
    send_timeout_s: int = 30
    keepalive_timeout_s: int = 30
    upstream_timeout_s: int = 60
    run_as: str | None = None  # the workers' user when the master runs as root
    access_log: str = "access.log"  # relative to nginx's prefix, or absolute (/dev/stdout)
    worker_connections: int = 4096

    def __post_init__(self) -> None:
        """Values that land in nginx.conf carry no syntax of their own (no `;`, braces or spaces)."""
        if self.listen_address and not _ADDRESS.fullmatch(self.listen_address):
            raise ProvisioningError(f"--listen-address {self.listen_address!r}: an IPv4 or bracketed IPv6 address")
        if self.run_as is not None and not _USER.fullmatch(self.run_as):
            raise ProvisioningError(f"--run-as {self.run_as!r}: a user name")
        if not _PATH.fullmatch(self.access_log):
            raise ProvisioningError(f"--access-log {self.access_log!r}: a path without spaces, quotes, ';' or braces")
        if self.https_port == self.http_port:
            raise ProvisioningError("--https-port and --http-port must differ")


@dataclass(frozen=True, slots=True)
class GatewayFiles:
    conf: Path
    tls: TlsMaterial


def _problem(status: int, slug: str, title: str, detail: str) -> str:
    """An RFC 9457 document shaped like the ERP's, with nginx's request id as an extension."""
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    text = json.dumps(body, separators=(",", ":"))
    # The request id is [A-Za-z0-9._-] (see the map): no JSON escaping; nginx's return text is single-quoted.
    return text[:-1] + ',"request_id":"$factory_request_id"}'


def _security_headers() -> list[str]:
    return [
        'add_header Strict-Transport-Security "max-age=63072000" always;',
        "add_header X-Content-Type-Options nosniff always;",
        "add_header X-Frame-Options SAMEORIGIN always;",
        "add_header Content-Security-Policy \"frame-ancestors 'self'\" always;",
        "add_header Referrer-Policy strict-origin-when-cross-origin always;",
        "add_header X-Request-Id $factory_request_id always;",
    ]


def _error_locations(o: GatewayOptions) -> list[str]:
    """Named locations that answer nginx's own refusals with problem documents. A location
    with add_header of its own inherits none from the server, so each repeats them."""
    pages = [
        ("too_many", 429, "too-many-requests", "Too many requests",
         "this client address sent requests faster than the gateway allows; retry after the time in Retry-After",
         ["add_header Retry-After 1 always;"]),  # at --rate 1 or more a second, a slot frees within 1 s
        ("too_many_sign_ins", 429, "too-many-requests", "Too many requests",
         "this client address tried to sign in too often; retry after the time in Retry-After",
         [f"add_header Retry-After {max(1, math.ceil(60 / o.login_rate))} always;"]),
        ("too_large", 413, "content-too-large", "The request body is too large",
         f"the body may have at most {o.max_body} bytes", []),
        ("not_found", 404, "not-found", "Not found", "nothing is served at this path", []),
        ("unavailable", 502, "upstream-unavailable", "The service behind the gateway is unavailable",
         "the service did not answer; try again shortly", []),
        ("timed_out", 504, "upstream-timeout", "The service behind the gateway did not answer in time",
         f"no reply within {o.upstream_timeout_s} s", []),
    ]  # fmt: skip
    lines: list[str] = []
    for name, status, slug, title, detail, extra in pages:
        lines += [f"location @{name} {{", "    default_type application/problem+json;"]
        lines += [f"    {h}" for h in [*_security_headers(), *extra]]
        lines += [f"    return {status} '{_problem(status, slug, title, detail)}';", "}"]
    return lines


def _error_pages(too_many: str) -> list[str]:
    return [f"error_page 429 = {too_many};", "error_page 413 = @too_large;", "error_page 404 = @not_found;",
            "error_page 502 503 = @unavailable;", "error_page 504 = @timed_out;"]  # fmt: skip


def _proxy_headers() -> list[str]:
    """For every proxied location (they inherit these from the server block)."""
    return [
        "proxy_http_version 1.1;",
        "proxy_set_header Host $host;",
        # Overwritten, not appended: what a client sends as X-Forwarded-For never reaches the service.
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
        "proxy_set_header X-Request-Id $factory_request_id;",
        # The services answer with the id they were sent (the ERP does); the gateway adds it itself.
        "proxy_hide_header X-Request-Id;",
        "proxy_set_header Connection $factory_connection;",
        "proxy_set_header Upgrade $http_upgrade;",
    ]


def _locations(o: GatewayOptions) -> list[str]:
    lines = ["location = /metrics { return 404; }"]  # the ERP's metrics are for Prometheus inside only
    lines += [
        f"location = {exact} {{ proxy_pass http://factory_erp; }}" for exact in ("/healthz", "/docs", "/openapi.json")
    ]
    lines += ["location /api/ { proxy_pass http://factory_erp; }"]
    lines += [
        "location = /api/v1/auth/token {",
        f"    limit_req zone=factory_per_address burst={o.burst} nodelay;",
        f"    limit_req zone=factory_sign_in burst={o.login_burst} nodelay;",
        # error_page is inherited only by a location that sets none: all of them again.
        *(f"    {e}" for e in _error_pages("@too_many_sign_ins")),
        "    proxy_pass http://factory_erp;",
        "}",
    ]
    if o.grafana is not None:
        # Grafana serves from its sub-path (GF_SERVER_SERVE_FROM_SUB_PATH): the URI goes as it came.
        # A location with proxy_hide_header of its own inherits none: X-Request-Id is hidden again.
        hide = "proxy_hide_header X-Frame-Options; proxy_hide_header X-Request-Id;"
        lines += [f"location /grafana/ {{ {hide} proxy_pass http://factory_grafana; }}",
                  "location = / { return 302 /grafana/; }"]  # fmt: skip
    else:
        lines += ["location = / { return 302 /docs; }"]
    if o.mcp is not None:
        # Replies may stream (server-sent events): passed on as they come, not buffered.
        lines += ["location /mcp { proxy_buffering off; proxy_pass http://factory_mcp; }"]
    lines += ["location / { return 404; }"]
    return lines


def _listen(o: GatewayOptions, port: int, extra: str = "") -> str:
    where = f"{o.listen_address}:{port}" if o.listen_address else str(port)
    return f"listen {where}{extra};"


def render(o: GatewayOptions) -> str:
    """nginx.conf for these options; TLS files are ``tls/server.crt`` and ``tls/server.key``
    next to it."""
    upstreams = [("factory_erp", o.erp), ("factory_grafana", o.grafana), ("factory_mcp", o.mcp)]
    redirect = "https://$host$request_uri" if o.https_port == 443 else f"https://$host:{o.https_port}$request_uri"
    indent = "        "
    main = [
        "# Written by `factory provision gateway`; changes here are lost on the next run.",
        *([f"user {o.run_as};"] if o.run_as else []),
        "worker_processes auto;",
        # Two descriptors per proxied connection (client and service).
        f"worker_rlimit_nofile {2 * o.worker_connections};",
        "daemon off;",
        "pid nginx.pid;",
        "error_log stderr warn;",
        "events {",
        f"    worker_connections {o.worker_connections};",
        "}",
        "http {",
        "    default_type application/octet-stream;",
        "    server_tokens off;",
        "    client_body_temp_path client_body_temp;",
        "    proxy_temp_path proxy_temp;",
        "    fastcgi_temp_path fastcgi_temp;",
        "    uwsgi_temp_path uwsgi_temp;",
        "    scgi_temp_path scgi_temp;",
        "    log_format factory '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '",
        "                       '$request_time $upstream_response_time $factory_request_id \"$http_user_agent\"';",
        f"    access_log {o.access_log} factory;",
        # Against half-sent and slow clients: every phase of a connection has a deadline.
        f"    client_header_timeout {o.header_timeout_s}s;",
        f"    client_body_timeout {o.body_timeout_s}s;",
        f"    send_timeout {o.send_timeout_s}s;",
        f"    keepalive_timeout {o.keepalive_timeout_s}s;",
        "    reset_timedout_connection on;",
        f"    client_max_body_size {o.max_body};",
        "    proxy_connect_timeout 5s;",
        f"    proxy_send_timeout {o.upstream_timeout_s}s;",
        f"    proxy_read_timeout {o.upstream_timeout_s}s;",
        f"    limit_req_zone $binary_remote_addr zone=factory_per_address:10m rate={o.rate}r/s;",
        f"    limit_req_zone $factory_sign_in_key zone=factory_sign_in:10m rate={o.login_rate}r/m;",
        "    limit_conn_zone $binary_remote_addr zone=factory_conns:10m;",
        "    limit_req_status 429;",
        "    limit_conn_status 429;",
        "    limit_req_log_level warn;",
        "    limit_conn_log_level warn;",
        # Only POST is a sign-in; an empty key is not counted.
        "    map $request_method $factory_sign_in_key { POST $binary_remote_addr; default ''; }",
        # A client's own request id is kept when it is short and plain; otherwise nginx's.
        "    map $http_x_request_id $factory_request_id {",
        '        default $request_id; "~^[A-Za-z0-9._-]{1,64}$" $http_x_request_id;',
        "    }",
        "    map $http_upgrade $factory_connection { default upgrade; '' ''; }",
    ]
    for name, upstream in upstreams:
        if upstream is not None:
            main += [f"    upstream {name} {{", f"        server {upstream};", "        keepalive 16;", "    }"]
    main += [
        "    server {",
        f"        {_listen(o, o.http_port, ' default_server')}",
        f"        location / {{ return 301 {redirect}; }}",
        "    }",
        "    server {",
        f"        {_listen(o, o.https_port, ' ssl default_server')}",
        "        ssl_certificate tls/server.crt;",
        "        ssl_certificate_key tls/server.key;",
        "        ssl_protocols TLSv1.2 TLSv1.3;",
        f"        ssl_ciphers {CIPHERS};",
        "        ssl_prefer_server_ciphers off;",
        "        ssl_session_cache shared:factory_tls:10m;",
        "        ssl_session_tickets off;",
        *([f"        ssl_handshake_timeout {o.handshake_timeout_s}s;"] if o.handshake_timeout_s else []),
        f"        limit_req zone=factory_per_address burst={o.burst} nodelay;",
        f"        limit_conn factory_conns {o.conns};",
        *(indent + e for e in _error_pages("@too_many")),
        *(indent + h for h in _security_headers()),
        *(indent + p for p in _proxy_headers()),
        *(indent + line for line in _locations(o)),
        *(indent + line for line in _error_locations(o)),
        "    }",
        "}",
    ]
    return "\n".join(line for line in main if line) + "\n"


def write_gateway(out: Path, options: GatewayOptions, tls: TlsMaterial) -> GatewayFiles:
    """Write ``out``/nginx.conf; ``tls`` must already be in ``out``/tls."""
    if tls.cert != out / "tls" / "server.crt" or tls.key != out / "tls" / "server.key":
        raise ProvisioningError(f"the TLS files must be in {out / 'tls'}")
    conf = out / "nginx.conf"
    conf.write_text(render(options), encoding="utf-8")
    return GatewayFiles(conf, tls)
