"""Write the dashboards and Grafana's file-provisioning YAML into a folder.

Layout (mount ``DIR/provisioning`` at /etc/grafana/provisioning and ``DIR/dashboards`` at
/var/lib/grafana/dashboards)::

    DIR/dashboards/factory/<uid>.json
    DIR/provisioning/dashboards/factory.yaml
    DIR/provisioning/datasources/factory.yaml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import yaml

from dashboards.model import DATASOURCE, Dashboard

__all__ = ["DASHBOARDS_PATH", "datasource_provisioning", "export", "provider_provisioning"]

DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards"


def provider_provisioning(folders: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": f"factory-{folder.lower()}",
                "folder": folder,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": f"{DASHBOARDS_PATH}/{folder.lower()}"},
            }
            for folder in folders
        ],
    }


def datasource_provisioning(host: str, database: str, user: str) -> dict[str, Any]:
    """The read-only PostgreSQL datasource; the password comes from Grafana's environment."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Factory PostgreSQL",
                "uid": DATASOURCE["uid"],
                "type": DATASOURCE["type"],
                "url": host,
                "user": user,
                "isDefault": True,
                "editable": False,
                "jsonData": {
                    "database": database,
                    "sslmode": "disable",
                    "postgresVersion": 1500,
                    "timescaledb": True,
                    "maxOpenConns": 10,
                },
                "secureJsonData": {"password": "$FACTORY_GRAFANA_DB_PASSWORD"},
            }
        ],
    }


def export(
    boards: tuple[Dashboard, ...], out: Path, *, db_host: str = "timescaledb:5432", database: str = "factory"
) -> list[Path]:
    """Write every dashboard and the provisioning files; returns the paths written."""
    written: list[Path] = []
    folders = sorted({b.folder for b in boards})
    for board in boards:
        path = out / "dashboards" / board.folder.lower() / f"{board.uid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(board.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    for name, content in (
        ("dashboards", provider_provisioning(folders)),
        ("datasources", datasource_provisioning(db_host, database, "grafana")),
    ):
        path = out / "provisioning" / name / "factory.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written
