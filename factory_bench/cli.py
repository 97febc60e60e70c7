"""``factory bench``: each benchmark prints one JSON line with its figures and the ceiling
measured in the same run (progress on stderr)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import click

from factory.settings import current
from factory_bench.analytics import bench_analytics
from factory_bench.edge import BenchOptions, run_bench
from factory_bench.edge_opcua import OpcuaBenchOptions, run_opcua_bench
from factory_bench.erp import bench_erp, to_stderr
from factory_bench.erp_flood import bench_login_flood
from factory_bench.ingest import BenchConfig, main
from factory_bench.memory import MemoryOptions, table
from factory_bench.memory import run_bench as run_memory_bench
from factory_bench.procmem import DEPLOY

__all__ = ["bench"]


@click.group()
def bench() -> None:
    """Benchmarks: each prints one JSON line with its figures and the ceiling measured in the same run."""


@bench.command("edge")
@click.option("--tags", type=int, default=2000, show_default=True, help="Holding registers polled, one tag each.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Length of each measured window.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds of bare client then agent (Modbus).")
@click.option("--idle-seconds", type=float, default=30.0, show_default=True, help="Window for idle CPU (500 tags).")
@click.option("--overload-seconds", type=float, default=60.0, show_default=True, help="Run with a slow broker link.")
@click.option("--opcua", is_flag=True, help="Subscribed OPC UA value changes instead (1,000 nodes at 10 Hz).")
@click.option("--opcua-nodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--opcua-hz", type=click.FloatRange(min=0.1, max=100), default=10.0, show_default=True,
              help="How often the server changes every node.")  # fmt: skip
def bench_edge(**options: Any) -> None:
    """Values/s, CPU and memory of the edge agent, against a bare client measured in the same run.

    One JSON line on stdout; progress on stderr.
    """
    nodes, rate_hz = options.pop("opcua_nodes"), options.pop("opcua_hz")
    if options.pop("opcua"):
        opcua = OpcuaBenchOptions(nodes=nodes, rate_hz=rate_hz, seconds=options["seconds"])
        result = asyncio.run(run_opcua_bench(opcua))
    else:
        result = asyncio.run(run_bench(BenchOptions(**options)))
    click.echo(json.dumps(result))


@bench.command("ingest")
@click.option("--points", type=int, default=1_000_000, show_default=True, help="Points sent in 500-point batches.")
@click.option("--single-messages", type=int, default=50_000, show_default=True, help="One-point messages sent.")
@click.option("--probes", type=int, default=200, show_default=True, help="Freshness probes at half load.")
@click.option("--bus", type=click.Choice(["mqtt", "nats"]), default="mqtt", show_default=True,
              help="nats: the batched run again through a 3-node NATS cluster (MQTT 3.1.1, JetStream).")  # fmt: skip
def bench_ingest(points: int, single_messages: int, probes: int, bus: Literal["mqtt", "nats"]) -> None:
    """End-to-end ingest throughput and freshness vs raw COPY, through a broker of its own."""
    config = BenchConfig(current().database(), points, single_messages, probes, bus=bus)
    click.echo(main(config))


@bench.command("memory")
@click.option("--seconds", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="How long the demo's load runs while memory is sampled.")  # fmt: skip
@click.option("--sample-s", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="How often every process's resident size is read.")  # fmt: skip
@click.option("--learn-s", type=click.FloatRange(min=10), default=60.0, show_default=True,
              help="The healthy stretch anomaly detection learns on before it scores (seconds).")  # fmt: skip
@click.option("--deploy", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEPLOY,
              show_default=True, help="Where docker-compose.yml and systemd/ with the budgets are.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of a table.")
def bench_memory(seconds: float, sample_s: float, learn_s: float, deploy: Path, as_json: bool) -> None:
    """Each service's peak memory under the demo's load, one process each, against its compose and systemd limits.

    A table on stdout (one JSON object with --json); progress on stderr.
    """
    options = MemoryOptions(seconds=seconds, sample_s=sample_s, learn_s=learn_s, deploy=deploy)
    try:
        result = asyncio.run(run_memory_bench(options, current().database(), progress=to_stderr))
    except RuntimeError as exc:  # a service that did not start or ended: its log's last lines
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result) if as_json else table(result))


bench.add_command(bench_analytics)
bench.add_command(bench_erp)
bench.add_command(bench_login_flood)
