"""``factory dashboards export`` and ``factory dashboards check``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
import psycopg

from dashboards.alerting import ALERTMANAGER_URL, RUNBOOK_URL
from dashboards.catalog import DASHBOARDS
from dashboards.check import DashboardCheckError, check_dashboards
from dashboards.export import export
from factory.db import connect, redact
from factory.settings import current

__all__ = ["dashboards"]


@click.group()
def dashboards() -> None:
    """Grafana dashboards as code."""


@dashboards.command("export")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--db-host", default="timescaledb:5432", show_default=True, help="Database host:port Grafana uses.")
@click.option("--database", default="factory", show_default=True)
@click.option("--dashboards-path", default="/var/lib/grafana/dashboards", show_default=True,
              help="Where Grafana sees --out/dashboards (the provider YAML points there).")  # fmt: skip
@click.option("--alertmanager-url", default=ALERTMANAGER_URL, show_default=True,
              help="Where Grafana sends the alerts of its rules (provisioning/alerting).")  # fmt: skip
@click.option("--runbook-url", default=RUNBOOK_URL, show_default=True, help="docs/alerts.md as people reach it.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def export_command(  # noqa: PLR0917 - one parameter per option, as click passes them
    out: Path, db_host: str, database: str, dashboards_path: str, alertmanager_url: str, runbook_url: str,
    as_json: bool,
) -> None:  # fmt: skip
    """Write the dashboard JSON and Grafana's provisioning YAML into --out."""
    written = export(DASHBOARDS, out, db_host=db_host, database=database, dashboards_path=dashboards_path,
                     alertmanager_url=alertmanager_url, runbook_url=runbook_url)  # fmt: skip
    if as_json:
        click.echo(json.dumps({"files": [str(p) for p in written], "dashboards": len(DASHBOARDS)}))
    else:
        click.echo(f"wrote {len(DASHBOARDS)} dashboards and provisioning files into {out}")


@dashboards.command("check")
@click.option("--hours", type=float, default=24.0, show_default=True, help="Time range the queries cover.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Template variable value.")
@click.option("--require-rows", is_flag=True, help="Fail when a panel returns no rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def check_command(hours: float, variables: tuple[str, ...], require_rows: bool, as_json: bool) -> None:
    """Run every panel query against FACTORY_DATABASE_URL; fail naming the panel and the error."""
    url = current().database()
    if bad := [v for v in variables if "=" not in v]:
        raise click.BadParameter(f"expected NAME=VALUE, got {bad[0]!r}", param_hint="--var")
    values = dict(v.split("=", 1) for v in variables)

    async def go() -> list[dict[str, object]]:
        async with await connect(url, autocommit=True, application_name="factory-dashboards") as conn:
            results = await check_dashboards(conn, DASHBOARDS, hours=hours, variables=values)
        return [{"dashboard": r.dashboard, "panel": r.title, "rows": r.rows, "error": r.error} for r in results]

    try:
        results = asyncio.run(go())
    except (psycopg.Error, DashboardCheckError) as exc:
        click.echo(f"dashboards check on {redact(url)}: {exc}", err=True)
        sys.exit(2)
    failed = [r for r in results if r["error"] or (require_rows and not r["rows"])]
    empty = [f"{r['dashboard']} / {r['panel']}" for r in results if not r["error"] and not r["rows"]]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "empty": empty, "panels": results}))
    else:
        for r in results:
            mark = "FAIL" if r in failed else "ok"
            click.echo(f"{mark:4} {r['dashboard']} / {r['panel']}: {r['rows']} rows {r['error'] or ''}".rstrip())
    if failed:
        for r in failed:
            click.echo(f"panel {r['dashboard']} / {r['panel']} failed: {r['error'] or 'no rows'}", err=True)
        sys.exit(1)
