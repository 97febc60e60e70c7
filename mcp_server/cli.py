"""``factory mcp serve``: the MCP server for assistants, on stdio or streamable HTTP."""

from __future__ import annotations

import click
from pydantic import SecretStr, ValidationError

from analytics.oee import load_oee_config
from factory.configfile import ConfigError
from factory.runtime import fail, run_service
from factory.settings import current
from mcp_server.config import McpConfig
from mcp_server.service import serve_http, serve_stdio

__all__ = ["mcp"]


@click.group()
def mcp() -> None:
    """The MCP server: the plant and the ERP for assistants."""


@mcp.command("serve")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--http", "http_flag", is_flag=True, help="Same as --transport http.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: the address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="HTTP: the port.")
@click.option("--path", default="/mcp", show_default=True, help="HTTP: the endpoint's path (the gateway routes /mcp).")
@click.option(
    "--public-url", default=None, help="HTTP: the URL clients use (behind the gateway), e.g. https://plant.example/mcp."
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="HTTP: a Host header to accept besides the listen address (the gateway's name); repeatable.",
)
@click.option("--erp-url", default=None, help="The ERP API [default: FACTORY_ERP_URL, else http://127.0.0.1:8000].")
@click.option(
    "--grafana-url", default="http://127.0.0.1:3000", show_default=True, help="Base of the dashboards' links."
)
@click.option("--max-rows", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Rows in one answer.")
@click.option(
    "--max-range-days",
    type=click.FloatRange(0.01, 366),
    default=31.0,
    show_default=True,
    help="Longest time range of one call.",
)
def serve(*, transport: str, http_flag: bool, host: str, port: int, path: str, public_url: str | None,
          allowed_hosts: tuple[str, ...], erp_url: str | None, grafana_url: str, max_rows: int,
          max_range_days: float) -> None:  # fmt: skip
    """Serve the MCP tools. stdio acts with FACTORY_ERP_API_KEY; HTTP takes each caller's ERP API key
    or ERP access token as a bearer token (JWTs verified with FACTORY_JWT_SECRET)."""
    settings = current()
    try:
        config = McpConfig(
            database_url=SecretStr(settings.database()), erp_url=erp_url or settings.erp_url or "http://127.0.0.1:8000",
            jwt_secret=settings.jwt_secret, api_key=settings.erp_api_key, grafana_url=grafana_url,
            limits={"max_rows": max_rows, "max_range_days": max_range_days},
            lines=load_oee_config(settings.oee_config),
        )  # fmt: skip
    except (ValidationError, ConfigError) as exc:
        fail(f"factory mcp serve: {exc}")
    if http_flag or transport == "http":
        main = serve_http(config, host=host, port=port, path=path, public_url=public_url,
                          allowed_hosts=list(allowed_hosts))  # fmt: skip
    else:
        main = serve_stdio(config)
    run_service(main)
