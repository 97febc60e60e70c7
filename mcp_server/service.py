"""Running the server on a transport: stdio (one desktop assistant, the credential from the
configuration) or streamable HTTP (shared; every request brings an ERP bearer token)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import psycopg
from mcp.server.transport_security import TransportSecuritySettings

from erp_api.security import TokenService
from factory.runtime import StartupError
from mcp_server.auth import Caller, ErpTokenVerifier
from mcp_server.config import McpConfig
from mcp_server.db import ReadOnlyDatabase
from mcp_server.server import build_server

__all__ = ["serve_http", "serve_stdio", "stdio_identity"]

log = logging.getLogger(__name__)


def _verifier(config: McpConfig, database: ReadOnlyDatabase) -> ErpTokenVerifier:
    tokens = None
    if config.jwt_secret is not None:
        # Only decode() is used: the TTLs matter to issuing, which this server never does.
        tokens = TokenService(config.jwt_secret.get_secret_value(), access_ttl_s=1, refresh_ttl_s=1)
    return ErpTokenVerifier(database, tokens)


async def stdio_identity(config: McpConfig, database: ReadOnlyDatabase) -> Caller:
    """The stdio session's caller, from its configured API key or token; refused at start if invalid."""
    secret = config.api_key or config.token
    if secret is None:
        raise StartupError("stdio needs an ERP credential: set FACTORY_ERP_API_KEY in its environment")
    try:
        caller = await _verifier(config, database).caller(secret.get_secret_value())
    except psycopg.Error as exc:
        raise StartupError(
            f"could not check the ERP credential ({str(exc).splitlines()[0]}); is the database migrated?"
        ) from exc
    if caller is None:
        raise StartupError("the configured ERP credential is not valid (revoked key, expired token?)")
    return caller


async def serve_stdio(config: McpConfig) -> None:
    async with ReadOnlyDatabase(config.database_url.get_secret_value(),
                                statement_timeout_ms=config.limits.statement_timeout_ms) as database:  # fmt: skip
        caller = await stdio_identity(config, database)
        log.info("MCP server on stdio, acting as %s (%s)", caller.name, caller.role)
        await build_server(config, database, stdio_caller=caller).run_stdio_async()


async def serve_http(
    config: McpConfig, *, host: str, port: int, path: str, public_url: str | None, allowed_hosts: list[str]
) -> None:
    """Streamable HTTP on ``host:port`` at ``path``; 401 without a valid ERP API key or token."""
    async with ReadOnlyDatabase(config.database_url.get_secret_value(),
                                statement_timeout_ms=config.limits.statement_timeout_ms) as database:  # fmt: skip
        server = build_server(config, database, verifier=_verifier(config, database), public_url=public_url)
        # DNS-rebinding protection: the Host headers this server answers; the gateway passes the public one.
        public = [urlsplit(public_url).netloc] if public_url else []
        hosts = [f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", *public, *allowed_hosts]
        origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
        security = TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)
        log.info("MCP server on http://%s:%s%s", host, port, path)
        await server.run_streamable_http_async(host=host, port=port, streamable_http_path=path,
                                               transport_security=security)  # fmt: skip
