"""``factory bench erp``: the ERP against its ceiling, measured in the same run.

Phases, each against real server processes and a scratch database (dropped afterwards):
(a) order flows (create -> confirm -> invoice -> pay) started at a fixed rate, latency per
call; (b) reads (get order, list a stock page of 50) at a fixed rate; (c) saturation:
closed-loop flows from many clients, write calls (confirm, invoice, pay) per second; then
the ceiling: pgbench TPC-B on the same PostgreSQL server. One JSON line on stdout.

Only click and the standard library at module level (the CLI is imported on the edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from erp_api.security import TokenService
from factory.db import client_binary, connect, create_database, drop_database, redact
from factory.settings import current
from factory_bench.erp_flows import Fixtures, flow_phase, read_phase, saturation_phase
from factory_bench.loadgen import RawHttp
from factory_bench.procmem import hwm_mib, rss_mib
from factory_servers import free_port
from provisioning.migrate import migrate

__all__ = [
    "ApiServers",
    "BenchOptions",
    "api_servers",
    "bench_erp",
    "machine",
    "migrate_scratch",
    "run_bench",
    "scratch_url",
    "to_stderr",
]

CHILD = """
import os, socket, sys, uvicorn
from erp_api.app import create_app
from erp_api.server import tune_gc
host, port, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
# and without it every small response waits ~40 ms for a delayed ACK (Nagle).
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind((host, port))
url, secret = os.environ["FACTORY_BENCH_DATABASE_URL"], os.environ["FACTORY_JWT_SECRET"]
app = create_app(url, jwt_secret=secret, pool_max_size=pool)
server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
tune_gc()  # as `factory erp serve`
server.run(sockets=[sock])  # uvloop when installed, as `factory erp serve`
"""


@dataclass(frozen=True)
class BenchOptions:
    seconds: float = 10.0
    flow_rate: float = 100.0
    read_rate: float = 1000.0
    saturation_clients: int = 32
    workers: int = 2
    pool_size: int = 8
    pgbench_clients: int = 8
    pgbench_seconds: int = 15
    pgbench_scale: int = 10
    warmup_seconds: float = 2.0


@click.command("erp")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Length of each measured phase.")
@click.option(
    "--flow-rate", type=float, default=100.0, show_default=True, help="Order flows started per second in (a)."
)
@click.option("--read-rate", type=float, default=1000.0, show_default=True, help="Read requests per second in (b).")
@click.option("--saturation-clients", type=int, default=32, show_default=True, help="Concurrent flows in (c).")
@click.option("--workers", type=int, default=2, show_default=True, help="API server processes (SO_REUSEPORT).")
@click.option("--pool-size", type=int, default=8, show_default=True, help="Database connections per API process.")
@click.option("--pgbench-clients", type=int, default=8, show_default=True)
@click.option("--pgbench-seconds", type=int, default=15, show_default=True)
@click.option("--pgbench-scale", type=int, default=10, show_default=True)
@click.option("--warmup-seconds", type=float, default=2.0, show_default=True)
def bench_erp(**options: Any) -> None:
    """Order flows, reads and saturation of the ERP API, with pgbench TPC-B as the ceiling."""
    result = asyncio.run(run_bench(BenchOptions(**options), current().database(), progress=to_stderr))
    click.echo(json.dumps(result))


def to_stderr(message: str) -> None:
    """Progress of a benchmark: on stderr, stdout keeps the one JSON line."""
    click.echo(message, err=True)


def machine(load_1m: float) -> dict[str, Any]:
    """What a benchmark ran on: cores, the 1-minute load when it started, Python."""
    return {"cpus": os.cpu_count(), "load_1m_at_start": round(load_1m, 2), "python": platform.python_version()}


async def run_bench(options: BenchOptions, base: str, progress: Any = print) -> dict[str, Any]:
    """``base``: a database URL on the server to measure; the scratch databases go beside it."""
    api_db, pg_db = scratch_url(base, "erp"), scratch_url(base, "pgbench")
    started = time.monotonic()
    load = os.getloadavg()[0]
    try:
        await create_database(api_db)
        await migrate_scratch(api_db)
        progress(f"bench erp: scratch database {redact(api_db)}, {options.workers} API processes")
        api = await _api_phases(api_db, options, progress)
        progress(f"bench erp: pgbench TPC-B -c {options.pgbench_clients} -T {options.pgbench_seconds}")
        await create_database(pg_db)
        tps = await _pgbench(pg_db, options)
    finally:
        for url in (api_db, pg_db):
            await drop_database(url)
    write_rate = api["saturation"]["write_calls_per_s"]
    return {
        "benchmark": "erp",
        **api,
        "ceiling": {
            "pgbench_tps": tps,
            "clients": options.pgbench_clients,
            "seconds": options.pgbench_seconds,
            "scale": options.pgbench_scale,
        },
        "ratio": {"write_calls_per_pgbench_tps": round(write_rate / tps, 3) if tps else None},
        "targets": {
            "flows_p99_le_50ms": api["flows"]["all_calls"]["p99_ms"] <= 50,
            "reads_p99_le_20ms": api["reads"]["all"]["p99_ms"] <= 20,
            "write_calls_ge_0.15_pgbench": bool(tps) and write_rate >= 0.15 * tps,
        },
        "machine": machine(load),
        "options": asdict(options),
        "seconds": round(time.monotonic() - started, 1),
        "scratch_databases": [conninfo_to_dict(url)["dbname"] for url in (api_db, pg_db)],  # dropped
    }


def scratch_url(url: str, tag: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = f"factory_bench_{tag}_{uuid.uuid4().hex[:8]}"
    return make_conninfo("", **params)


async def migrate_scratch(url: str) -> None:
    async with await connect(url) as conn:
        await migrate(conn)


@dataclass(frozen=True)
class ApiServers:
    """API server processes sharing one loopback port, and an admin client for them."""

    port: int
    procs: list[asyncio.subprocess.Process]
    http: RawHttp


@contextlib.asynccontextmanager
async def api_servers(url: str, *, workers: int, pool_size: int, connections: int) -> AsyncIterator[ApiServers]:
    """``workers`` API processes (``CHILD``) on the database ``url``, ready; stopped after."""
    secret = secrets.token_urlsafe(48)
    port = free_port()
    env = {**os.environ, "FACTORY_BENCH_DATABASE_URL": url, "FACTORY_JWT_SECRET": secret}
    args = ("-c", CHILD, "127.0.0.1", str(port), str(pool_size))
    procs = [await asyncio.create_subprocess_exec(sys.executable, *args, env=env) for _ in range(workers)]
    token = TokenService(secret, access_ttl_s=3600, refresh_ttl_s=3600).issue("bench", "admin").access_token
    http = RawHttp("127.0.0.1", port, {"Authorization": f"Bearer {token}"}, size=connections)
    try:
        await _wait_ready(http, procs)
        yield ApiServers(port, procs, http)
    finally:
        await http.close()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 15)


async def _api_phases(url: str, options: BenchOptions, progress: Any) -> dict[str, Any]:
    async with api_servers(url, workers=options.workers, pool_size=options.pool_size, connections=256) as api:
        try:
            phases = await _phases(api.http, options, progress)
        finally:
            # before any stops: the kernel's peak of each worker, and what it holds at the end
            peaks, last = [_vm(p, hwm_mib) for p in api.procs], [_vm(p, rss_mib) for p in api.procs]
    known = [p for p in peaks if p is not None]
    progress(f"bench erp: peak RSS (VmHWM) per API process: {', '.join(f'{p:.1f}' for p in known)} MiB")
    memory = {
        "worker_peak_rss_mib": [None if p is None else round(p, 1) for p in peaks],
        "peak_rss_mib_max": round(max(known), 1) if known else None,
        "peak_rss_mib_sum": round(sum(known), 1),
        "worker_rss_at_end_mib": [None if r is None else round(r, 1) for r in last],
    }
    return {**phases, "server_memory": memory}


async def _phases(http: RawHttp, options: BenchOptions, progress: Any) -> dict[str, Any]:
    fixtures = await Fixtures.create(http)
    progress("bench erp: warm-up")
    await flow_phase(http, fixtures, rate=min(options.flow_rate, 50), seconds=options.warmup_seconds)
    progress(f"bench erp: (a) {options.flow_rate:g} order flows/s for {options.seconds:g} s")
    flows = await flow_phase(http, fixtures, rate=options.flow_rate, seconds=options.seconds)
    progress(f"bench erp: (b) {options.read_rate:g} reads/s for {options.seconds:g} s")
    reads = await read_phase(http, fixtures, rate=options.read_rate, seconds=options.seconds)
    progress(f"bench erp: (c) saturation with {options.saturation_clients} clients for {options.seconds:g} s")
    saturation = await saturation_phase(http, fixtures, clients=options.saturation_clients, seconds=options.seconds)
    return {"flows": flows, "reads": reads, "saturation": saturation}


def _vm(proc: asyncio.subprocess.Process, read: Callable[[int], float]) -> float | None:
    """``read`` (VmHWM or VmRSS in MiB) of a running API process; None for one that has ended."""
    try:
        return read(proc.pid) if proc.returncode is None else None
    except (OSError, LookupError):
        return None


async def _wait_ready(http: Any, procs: list[asyncio.subprocess.Process]) -> None:
    for _ in range(400):
        if any(p.returncode is not None for p in procs):
            raise click.ClickException("an API server process exited during start-up")
        try:
            status, _ = await http.request("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise click.ClickException("the API server did not become ready")


async def _pgbench(url: str, options: BenchOptions) -> float:
    binary = client_binary("pgbench")
    params = conninfo_to_dict(url)
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    conn = (
        "-h",
        str(params.get("host", "127.0.0.1")),
        "-p",
        str(params.get("port", 5432)),
        "-U",
        str(params.get("user", "postgres")),
    )
    dbname = str(params["dbname"])
    await _run(binary, *conn, "-i", "-q", "-s", str(options.pgbench_scale), dbname, env=env)
    jobs = str(min(options.pgbench_clients, os.cpu_count() or 1))
    out = await _run(
        binary,
        *conn,
        "-c",
        str(options.pgbench_clients),
        "-j",
        jobs,
        "-T",
        str(options.pgbench_seconds),
        dbname,
        env=env,
    )
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if match is None:
        raise click.ClickException(f"cannot read pgbench output:\n{out}")
    return round(float(match.group(1)), 1)


async def _run(*args: str, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise click.ClickException(f"{args[0]} failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    return out.decode(errors="replace")
