"""Write the dashboards and Grafana's file-provisioning YAML into a folder.

Layout (mount ``DIR/provisioning`` at /etc/grafana/provisioning and ``DIR/dashboards`` at
the ``dashboards_path`` the provider YAML names, /var/lib/grafana/dashboards by default)::

    DIR/dashboards/factory/<uid>.json
    DIR/provisioning/dashboards/factory.yaml
    DIR/provisioning/datasources/factory.yaml
    DIR/provisioning/alerting/factory.yaml      (alert rules over the SQL, sent to Alertmanager)
    DIR/grafana.ini                             (server settings the dashboards need: merge into
                                                 /etc/grafana/grafana.ini, or set GF_DASHBOARDS_*)

The datasource and folder definitions here are also what ``factory provision grafana``
pushes through the HTTP API, so both ways of provisioning give Grafana the same objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml

from dashboards.alerting import ALERTMANAGER_URL, RUNBOOK_URL, alerting_provisioning
from dashboards.model import DATASOURCE, MIN_REFRESH, Dashboard

__all__ = [
    "DASHBOARDS_PATH",
    "DATASOURCE_NAME",
    "datasource",
    "datasource_provisioning",
    "export",
    "folder_uid",
    "provider_provisioning",
]

DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards"
DATASOURCE_NAME: Final = "Factory PostgreSQL"


def folder_uid(folder: str) -> str:
    """The folder's uid in Grafana: the same whether files or the HTTP API created it."""
    return folder.lower()


def provider_provisioning(folders: list[str], dashboards_path: str = DASHBOARDS_PATH) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": f"factory-{folder_uid(folder)}",
                "folder": folder,
                "folderUid": folder_uid(folder),
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{dashboards_path}/{folder_uid(folder)}"},
            }
            for folder in folders
        ],
    }


def datasource(host: str, database: str, user: str) -> dict[str, Any]:
    """The read-only PostgreSQL datasource, without its password."""
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE["uid"],
        "type": DATASOURCE["type"],
        "access": "proxy",
        "url": host,
        "user": user,
        "isDefault": True,
        "jsonData": {
            "database": database,
            "sslmode": "disable",
            "postgresVersion": 1500,
            "timescaledb": True,
            "maxOpenConns": 10,
        },
    }


def datasource_provisioning(host: str, database: str, user: str) -> dict[str, Any]:
    """The datasource file; Grafana takes the password from its environment, never from the file."""
    source = datasource(host, database, user) | {
        "editable": False,
        "secureJsonData": {"password": "$FACTORY_GRAFANA_DB_PASSWORD"},
    }
    return {"apiVersion": 1, "datasources": [source]}


def server_settings() -> str:
    """grafana.ini lines the dashboards rely on: without them Grafana (default 5s) slows the
    live dashboards' 2 s refresh down."""
    return (
        "# Written by `factory dashboards export`: merge into grafana.ini\n"
        "# (deploy/docker-compose.yml sets GF_DASHBOARDS_MIN_REFRESH_INTERVAL instead).\n"
        f"[dashboards]\nmin_refresh_interval = {MIN_REFRESH}\n"
    )


def export(
    boards: tuple[Dashboard, ...],
    out: Path,
    *,
    db_host: str = "timescaledb:5432",
    database: str = "factory",
    dashboards_path: str = DASHBOARDS_PATH,
    alertmanager_url: str = ALERTMANAGER_URL,
    runbook_url: str = RUNBOOK_URL,
) -> list[Path]:
    """Write every dashboard and the provisioning files; returns the paths written."""
    written: list[Path] = []
    folders = sorted({b.folder for b in boards})
    for board in boards:
        path = out / "dashboards" / folder_uid(board.folder) / f"{board.uid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(board.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    for name, content in (
        ("dashboards", provider_provisioning(folders, dashboards_path)),
        ("datasources", datasource_provisioning(db_host, database, "grafana")),
        ("alerting", alerting_provisioning(alertmanager_url, runbook_url)),
    ):
        path = out / "provisioning" / name / "factory.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        written.append(path)
    ini = out / "grafana.ini"
    ini.write_text(server_settings(), encoding="utf-8")
    written.append(ini)
    return written
