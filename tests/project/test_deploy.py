"""The deployment files, checked as far as this machine can: Docker is not installed here, so
the compose file is parsed as YAML and its references resolved, the Dockerfile's COPY
sources are checked against the repository, and every `factory` command the compose file,
the Dockerfile and the systemd units run is parsed by the real CLI. The database init
script runs for real against the test PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
import yaml
from click.testing import CliRunner

from dashboards.cli import dashboards
from factory.db import client_binary
from factory_cli.command import main

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
# Bind-mounted folders the operator makes during the install (docs/deployment.md says how).
MADE_AT_INSTALL = {"./broker", "./bundles", "./backups", "./gateway", "./gateway/nginx.conf", "./gateway/tls",
                   "./alerting", "./alerting/prometheus", "./alerting/alertmanager"}  # fmt: skip


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def parse_factory(argv: list[str]) -> None:
    """Resolve a `factory ...` command line with the real CLI, without running it: an unknown
    command or option raises a click error."""
    assert argv[0] == "factory", argv
    command: click.Command = main
    args = argv[1:]
    with click.Context(main) as ctx:
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            sub = command.get_command(ctx, args[0])
            assert sub is not None, f"no command {args[0]!r} in {argv}"
            command, args = sub, args[1:]
        if "--help" not in args:
            command.make_context(argv[0], list(args), parent=ctx)


def bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_compose_services_images_and_volumes() -> None:
    spec = compose()
    services = spec["services"]
    assert {"mosquitto", "timescaledb", "grafana", "ingest", "erp", "analytics", "migrate", "dashboards"} <= set(
        services
    )
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert "ports" not in services["timescaledb"]  # PostgreSQL never leaves the host's compose network
    named = set(spec["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()
            stages = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
            assert build["target"] in stages


def test_every_service_has_a_memory_limit_that_fits_a_pi() -> None:
    def size(text: str) -> int:
        number, unit = re.fullmatch(r"(\d+)([mg])", text).groups()  # type: ignore[union-attr]
        return int(number) * (1024 if unit == "g" else 1)

    limits = {name: size(service["mem_limit"]) for name, service in compose()["services"].items()}
    assert max(limits.values()) <= 1024, limits  # MiB: at most 1 GiB per service
    assert sum(limits.values()) <= 6 * 1024, limits  # and 6 GiB in all


def test_compose_bind_mounts_exist_or_are_made_at_install() -> None:
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for name, service in compose()["services"].items():
        for source in bind_sources(service):
            if source in MADE_AT_INSTALL:
                assert source.removeprefix("./") + "/" in docs or source in docs, f"{source} not in the install steps"
            else:
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_grafana_reads_what_dashboards_export_writes(tmp_path: Path) -> None:
    services = compose()["services"]
    export, grafana = services["dashboards"], services["grafana"]
    (volume_out,) = [v for v in export["volumes"] if v.startswith("grafana-provisioning:")]
    (volume_in,) = [v for v in grafana["volumes"] if v.startswith("grafana-provisioning:")]
    out, seen_at = volume_out.split(":")[1], volume_in.split(":")[1]
    command = export["command"]
    assert command[command.index("--out") + 1] == out
    assert grafana["environment"]["GF_PATHS_PROVISIONING"] == f"{seen_at}/provisioning"

    # Run the same export here and follow the provider's path from Grafana's side of the volume.
    args = command[command.index("--out") + 2 :]
    result = CliRunner().invoke(dashboards, ["export", "--out", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    providers = yaml.safe_load((tmp_path / "provisioning" / "dashboards" / "factory.yaml").read_text())
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        assert path.startswith(seen_at + "/")
        assert list((tmp_path / path.removeprefix(seen_at + "/")).glob("*.json")), path
    sources = yaml.safe_load((tmp_path / "provisioning" / "datasources" / "factory.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "timescaledb:5432"
    assert source["secureJsonData"]["password"] == "$FACTORY_GRAFANA_DB_PASSWORD"
    assert "FACTORY_GRAFANA_DB_PASSWORD" in grafana["environment"]


def test_every_factory_command_parses() -> None:
    commands = [s["command"] for s in compose()["services"].values() if s.get("command", [""])[0] == "factory"]
    commands += [
        shlex.split(line.split("=", 1)[1].replace("/opt/factory/venv/bin/factory", "factory"))
        for unit in (DEPLOY / "systemd").glob("*.service")
        for line in unit.read_text().splitlines()
        if line.startswith(("ExecStart=", "ExecStartPre="))
    ]
    commands += [
        json.loads(line.removeprefix("CMD ")) for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")
    ]
    assert len(commands) >= 12
    for argv in commands:
        parse_factory(argv)


def test_dockerfile_copies_every_package_from_the_repository() -> None:
    text = DOCKERFILE.read_text()
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied: set[str] = set()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _target = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, f"{source} is excluded by .dockerignore"
                copied.add(source.rstrip("/"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*").rstrip(".") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", pyproject["project"]["readme"], "requirements"} == copied


def test_dockerfile_installs_from_the_locks() -> None:
    """Each image gets its lock's pinned, hash-checked dependencies and then the project alone,
    so nothing unpinned slips in through the project's own requirements."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for stage, lock in (("build-edge", "edge"), ("build-cloud", "cloud")):
        (run,) = re.findall(rf"^FROM source AS {stage}\nRUN (.+)$", text, re.MULTILINE)
        installs = [shlex.split(step) for step in run.split("&&") if " install " in step]
        assert [args[args.index("install") + 1 :] for args in installs] == [
            ["--no-cache-dir", "--require-hashes", "-r", f"requirements/{lock}.txt"],
            ["--no-cache-dir", "--no-deps", "."],
        ], stage
        assert (ROOT / "requirements" / f"{lock}.txt").is_file()


@pytest.mark.integration
def test_grafana_role_init_script(pg_admin_url: str, database_url: str) -> None:
    """The init script TimescaleDB's image runs, against the test database: the role it makes
    can read the dashboards' tables and nothing of provisioning."""
    role = f"grafana_{uuid.uuid4().hex[:8]}"
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    env = os.environ | {
        "PGHOST": str(params.get("host", "127.0.0.1")), "PGPORT": str(params.get("port", 5432)),
        "POSTGRES_USER": str(params.get("user", "postgres")), "POSTGRES_DB": str(params["dbname"]),
        "FACTORY_GRAFANA_DB_USER": role, "FACTORY_GRAFANA_DB_PASSWORD": "it's a secret",
    }  # fmt: skip
    env["PATH"] = f"{Path(client_binary('psql')).parent}{os.pathsep}{env['PATH']}"  # the wheel's psql, if need be
    script = DEPLOY / "timescaledb" / "10-grafana-role.sh"
    try:
        done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        with psycopg.connect(database_url, user=role) as conn:
            assert conn.execute("SELECT count(*) FROM telemetry.tag").fetchone() is not None
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM provisioning.device")
        missing = subprocess.run(["sh", str(script)], env={**env, "FACTORY_GRAFANA_DB_PASSWORD": ""},
                                 capture_output=True, text=True, check=False)  # fmt: skip
        assert missing.returncode != 0
        assert "set FACTORY_GRAFANA_DB_PASSWORD" in missing.stderr
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
