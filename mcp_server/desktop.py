"""The configuration a desktop assistant needs to start ``factory mcp serve`` on stdio."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

__all__ = ["desktop_config", "desktop_config_json"]


def desktop_config(database_url: str, erp_url: str, api_key: str) -> dict[str, Any]:
    """The ``mcpServers`` entry (the shape desktop assistants read): the command and its environment."""
    factory = shutil.which("factory")
    command, args = (factory, ["mcp", "serve"]) if factory else (sys.executable, ["-m", "factory_cli", "mcp", "serve"])
    env = {"FACTORY_DATABASE_URL": database_url, "FACTORY_ERP_URL": erp_url, "FACTORY_ERP_API_KEY": api_key}
    return {"mcpServers": {"factory": {"command": command, "args": args, "env": env}}}


def desktop_config_json(database_url: str, erp_url: str, api_key: str) -> str:
    return json.dumps(desktop_config(database_url, erp_url, api_key), indent=2)
