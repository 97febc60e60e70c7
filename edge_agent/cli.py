"""``factory edge``: run the agent, or check a config against the equipment it names."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from edge_agent.agent import EdgeAgent, catalog
from edge_agent.check import probe_all
from edge_agent.config import EdgeConfig, load_config
from factory.configfile import ConfigError
from factory.runtime import fail, run_service
from factory.wire import MAX_CATALOG_BYTES, WireError, encode_catalog

__all__ = ["edge"]


@click.group()
def edge() -> None:
    """The edge agent (runs on the Raspberry Pi)."""


def _load(config: Path) -> EdgeConfig:
    try:
        return load_config(config)
    except ConfigError as exc:
        fail(exc.report())


@edge.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def edge_run(config_path: Path) -> None:
    """Read the configured sources and publish telemetry."""
    config = _load(config_path)
    run_service(EdgeAgent(config, config_path.resolve().parent).run())


@edge.command("check")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def edge_check(config_path: Path) -> None:
    """Validate the config, then probe every source and print what each tag reads."""
    config = _load(config_path)
    click.echo(
        f"{config_path}: valid ({sum(len(s.tags) for s in config.sources)} tags in {len(config.sources)} sources)"
    )
    try:
        size = len(encode_catalog(catalog(config)))
    except WireError as exc:
        fail(f"{config_path}: {exc}", code=1)
    click.echo(f"tag catalog: {size:,} bytes of the {MAX_CATALOG_BYTES:,} a message may hold")
    ok = asyncio.run(probe_all(config, click.echo))
    sys.exit(0 if ok else 1)
