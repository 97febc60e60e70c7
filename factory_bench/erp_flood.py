"""``factory bench login-flood``: what a flood of wrong passwords does to everyone else.

One API server process on a scratch database (dropped afterwards). Reads (get an order, a
stock page) at a fixed rate, first alone (the ceiling: the same reads on the same server
without the flood), then while ``--attackers`` clients send wrong passwords back to back,
each from its own client address (``X-Forwarded-For``, trusted from loopback) and for a
name of its own, so that no lockout makes the flood cheap: every attempt the server
accepts costs a real Argon2 check. Reports the readers' latency in both phases and their
ratio, the readers' errors, and what the attackers got (401 checked, 503 turned away,
429 locked). One JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import click

from factory.db import create_database, drop_database, redact
from factory.settings import current
from factory_bench.erp import api_servers, machine, migrate_scratch, scratch_url, to_stderr
from factory_bench.erp_flows import Fixtures, flow_phase, read_phase

__all__ = ["FloodOptions", "bench_login_flood", "run_flood_bench"]

TARGET_P99_MS = 100.0  # the readers' p99 during the flood
# The attackers: a process of their own, so that the readers' latencies are the server's
# and not the wait for a load generator busy with the flood. Until SIGINT, then one JSON
# line: attempts, attempts per second, answers by status (after "flooding" once the first
# answer is in).
ATTACKERS = """
import asyncio, collections, json, signal, sys, time, uuid
from factory_bench.loadgen import RawHttp
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def attack(http, answers, stop):
    while not stop.is_set():  # a new name from a new address each time: no lock makes it cheap
        n = uuid.uuid4().int
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        form = {"username": f"nobody-{n % 10**9}", "password": "not the password"}
        try:
            status, _ = await http.request("POST", "/api/v1/auth/token", headers={"X-Forwarded-For": address},
                                           form=form)
        except (OSError, TimeoutError, ValueError):
            answers["connection error"] += 1
            continue
        answers[str(status)] += 1

async def main():
    http, answers, stop = RawHttp(host, port, {}, size=count), collections.Counter(), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    started = time.perf_counter()
    tasks = [asyncio.create_task(attack(http, answers, stop)) for _ in range(count)]
    while not answers:
        await asyncio.sleep(0.01)
    print("flooding", flush=True)
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    total = sum(answers.values())
    print(json.dumps({"attempts": total, "attempts_per_s": round(total / seconds, 1),
                      "answers": dict(sorted(answers.items()))}))  # 401 checked, 503 turned away, 429 locked

asyncio.run(main())
"""


@dataclass(frozen=True)
class FloodOptions:
    seconds: float = 10.0
    read_rate: float = 100.0
    attackers: int = 64
    pool_size: int = 8
    warmup_seconds: float = 2.0


@click.command("login-flood")
@click.option("--seconds", type=click.FloatRange(min=1), default=10.0, show_default=True, help="Length of each phase.")
@click.option("--read-rate", type=click.FloatRange(min=1), default=100.0, show_default=True, help="Reads per second.")
@click.option("--attackers", type=click.IntRange(min=1), default=64, show_default=True,
              help="Clients sending wrong passwords back to back.")  # fmt: skip
@click.option("--pool-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Database connections of the API process.")  # fmt: skip
@click.option("--warmup-seconds", type=click.FloatRange(min=0), default=2.0, show_default=True)
def bench_login_flood(**options: Any) -> None:
    """Readers' latency during a login flood, against the same reads without it."""
    result = asyncio.run(run_flood_bench(FloodOptions(**options), current().database(), progress=to_stderr))
    click.echo(json.dumps(result))


async def run_flood_bench(options: FloodOptions, base: str, progress: Any = print) -> dict[str, Any]:
    """``base``: a database URL on the server to measure; the scratch database goes beside it."""
    url = scratch_url(base, "flood")
    started = time.monotonic()
    load = os.getloadavg()[0]
    try:
        await create_database(url)
        await migrate_scratch(url)
        progress(f"bench login-flood: scratch database {redact(url)}")
        phases = await _phases(url, options, progress)
    finally:
        await drop_database(url)
    quiet, flooded = phases["reads_alone"]["all"], phases["reads_during_flood"]["all"]
    return {
        "benchmark": "login-flood",
        **phases,
        "ratio": {
            "p99_flood_per_alone": round(flooded["p99_ms"] / quiet["p99_ms"], 2) if quiet["p99_ms"] else None,
            "p50_flood_per_alone": round(flooded["p50_ms"] / quiet["p50_ms"], 2) if quiet["p50_ms"] else None,
        },
        "targets": {
            "reads_p99_during_flood_le_100ms": flooded["p99_ms"] <= TARGET_P99_MS,
            "no_read_errors": flooded["errors"] == 0,
        },
        "machine": machine(load),
        "options": asdict(options),
        "seconds": round(time.monotonic() - started, 1),
    }


async def _phases(url: str, options: FloodOptions, progress: Any) -> dict[str, Any]:
    async with api_servers(url, workers=1, pool_size=options.pool_size, connections=64) as api:
        http = api.http
        fixtures = await Fixtures.create(http)
        progress("bench login-flood: warm-up (order flows, so there are orders to read)")
        await flow_phase(http, fixtures, rate=20, seconds=max(options.warmup_seconds, 1.0))
        progress(f"bench login-flood: {options.read_rate:g} reads/s alone for {options.seconds:g} s")
        alone = await read_phase(http, fixtures, rate=options.read_rate, seconds=options.seconds)
        progress(f"bench login-flood: the same reads with {options.attackers} attackers for {options.seconds:g} s")
        attackers = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ATTACKERS, "127.0.0.1", str(api.port), str(options.attackers),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert attackers.stdout is not None
            await asyncio.wait_for(attackers.stdout.readline(), 30)  # the flood is on
            during = await read_phase(http, fixtures, rate=options.read_rate, seconds=options.seconds)
        finally:
            attackers.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(attackers.communicate(), 30)
        flood = json.loads(out)
    return {"reads_alone": alone, "reads_during_flood": during, "flood": {"attackers": options.attackers, **flood}}
