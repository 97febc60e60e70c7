"""``factory demo``: the whole platform on one machine with the simulated sugar mill."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from factory.runtime import run_service
from factory.settings import current
from factory_demo.demo import DemoSummary, run_demo
from factory_demo.plant import DemoTiming
from factory_servers import BrokerKind
from simulator.cli import FAULTS_HELP, schedule

__all__ = ["demo"]


@click.command()
@click.option("--seconds", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Where the demo keeps its edge config, broker and database files"
                   " [default: .factory-demo; .factory-demo-2 for a second demo beside it, ...].")  # fmt: skip
@click.option("--erp-port", type=click.IntRange(0, 65535), default=None,
              help="ERP API port [default: 8000, or a free port if it is busy; 0: any free port].")  # fmt: skip
@click.option("--faults", default="default", show_default=True, help=FAULTS_HELP)
@click.option("--learn-s", type=click.FloatRange(min=60), default=120.0, show_default=True,
              help="The healthy stretch anomaly detection learns on before it judges (seconds).")  # fmt: skip
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "nats"]),
    default="auto",
    show_default=True,
    help="The broker to start when FACTORY_MQTT_URL is not set; auto: Mosquitto if installed, else NATS.",
)
@click.option("--alert-settings", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Alert receivers (as for `factory provision alerts --settings`) to notify instead of the demo's"
                   " own webhook and mail server (which keeps each e-mail in WORKDIR/mail/); a file without `smtp`"
                   " keeps the demo's beside its receivers. Used when Alertmanager is installed.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
def demo(*, seconds: float | None, workdir: Path | None, erp_port: int | None, faults: str, learn_s: float,
         broker: BrokerKind, alert_settings: Path | None, as_json: bool) -> None:  # fmt: skip
    """The whole platform on one machine with the simulated sugar mill."""
    timing = DemoTiming(healthy_s=learn_s, faults=schedule(faults))
    settings = current()
    result: list[DemoSummary] = []

    async def go() -> None:
        result.append(await run_demo(settings, workdir and workdir.resolve(), erp_port, seconds=seconds,
                                     timing=timing, broker=broker, alert_settings=alert_settings))  # fmt: skip

    run_service(go())
    if as_json and result:
        click.echo(json.dumps(asdict(result[0]), default=str))
