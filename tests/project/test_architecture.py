"""The house rules of docs/architecture.md: who may import whom, and a command line that
loads a part only when one of its commands runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from factory_cli.command import COMMANDS, PROVISION, Lazy

ROOT = Path(__file__).resolve().parents[2]
PARTS = (
    "edge_agent",
    "ingest",
    "erp_api",
    "analytics",
    "maintenance_models",
    "provisioning",
    "dashboards",
    "alerting",
    "simulator",
)


def test_the_import_rules_hold() -> None:
    """import-linter with the contracts in pyproject.toml: layers (the command above the demo
    and the benchmarks, above the embedded servers, above the parts, above the contract in
    ``factory``), an edge agent that reaches nothing of the cloud side, and aiomqtt and
    paho-mqtt behind factory.mqtt only."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is part of the dev install"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("name", "entry"), [*COMMANDS.items(), *PROVISION.items()])
def test_the_command_table_says_what_each_command_says(name: str, entry: Lazy) -> None:
    """The help ``factory --help`` lists without importing a part is the command's own."""
    command = entry.load()
    assert isinstance(command, click.Command)
    assert command.help is not None
    assert entry.help == command.help.strip().splitlines()[0], name


def test_help_imports_no_part() -> None:
    probe = (
        "import sys\nfrom factory_cli.command import main\n"
        "for args in (['--help'], ['provision', '--help']):\n"
        "    try:\n        main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        f"print('LOADED:' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(PARTS)!r})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert "Commands:" in result.stdout
    assert result.stdout.rsplit("LOADED:", 1)[1].strip() == ""


def test_a_missing_install_is_one_line() -> None:
    """A command whose part needs an install that is not here says which, instead of a traceback."""
    probe = (
        "import sys\nsys.modules['psycopg'] = None\nfrom factory_cli.command import main\n"
        "main(['provision', 'db', '--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "this command needs the cloud install: pip install 'factory-platform[cloud]' (module psycopg is missing)"
    )
