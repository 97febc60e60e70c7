"""``factory sim``: only the simulated plant, and the ``--faults`` option the demo shares."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from factory.configfile import ConfigError
from factory.runtime import fail, run_service
from simulator.faults import FaultSchedule, default_schedule, load_schedule
from simulator.runner import SimulatedPlant

__all__ = ["FAULTS_HELP", "schedule", "sim"]

FAULTS_HELP = "Fault schedule: 'default' (the demo's), 'none', or a YAML file (docs/simulator.md)."


def schedule(faults: str) -> FaultSchedule:
    """The fault schedule a ``--faults`` option names; a bad file ends the command with its problems."""
    if faults in {"default", "none"}:
        return default_schedule() if faults == "default" else FaultSchedule()
    try:
        return load_schedule(Path(faults))
    except ConfigError as exc:
        fail(exc.report())


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--modbus-port", type=int, default=5020, show_default=True)
@click.option("--opcua-port", type=int, default=4840, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--faults", default="default", show_default=True, help=FAULTS_HELP)
def sim(host: str, modbus_port: int, opcua_port: int, seed: int, faults: str) -> None:
    """Only the simulated plant: a Modbus TCP and an OPC UA server, with faults on a schedule."""
    plan = schedule(faults)

    async def go() -> None:
        async with SimulatedPlant(host=host, modbus_port=modbus_port, opcua_port=opcua_port, seed=seed,
                                  faults=plan) as plant:  # fmt: skip
            click.echo(f"Modbus TCP on {host}:{plant.modbus_port}, OPC UA on {plant.opcua_endpoint}", err=True)
            click.echo("Edge config that reads it: simulator/mill-edge.yaml. Stop with Ctrl-C.", err=True)
            await asyncio.Event().wait()

    run_service(go())
