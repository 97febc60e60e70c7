"""The edge agent runs on a Raspberry Pi: it must not pull in the cloud side."""

from __future__ import annotations

import subprocess
import sys

CLOUD = ("numpy", "sklearn", "scipy", "fastapi", "starlette", "uvicorn", "psycopg", "psycopg_pool", "jsonschema")

PROBE = """
import sys
import edge_agent, edge_agent.agent, edge_agent.check, edge_agent.modbus, edge_agent.opcua, edge_agent.publisher
from factory_cli.command import main
try:
    main(["edge", "check", "--help"], standalone_mode=False)
except SystemExit:
    pass
print("CLOUD:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in {cloud!r})))
"""


def test_edge_agent_imports_nothing_from_the_cloud_side() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(cloud=set(CLOUD))], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = result.stdout.rsplit("CLOUD:", 1)[1].strip()
    assert loaded == "", f"edge agent imported cloud modules: {loaded}"


def test_asyncua_is_imported_only_for_an_opc_ua_source() -> None:
    """asyncua and the cryptography it loads cost about 27 MB of RSS on a Pi with Modbus only."""
    probe = "import sys, edge_agent.agent, edge_agent.commands; print('ASYNCUA:', 'asyncua' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip().endswith("ASYNCUA: False")
