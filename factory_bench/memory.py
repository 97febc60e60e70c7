"""``factory bench memory``: each service's peak memory under the demo's load, against its budgets.

``factory demo`` runs every part in one process, so it cannot tell one service's memory from
another's. This bench runs the demo's plant the way a deployment does, one OS process per
service on its own loopback port: Mosquitto (with the limits we ship), the simulated mill
(``factory sim``), ``factory edge run`` with the mill's rendered edge config, ``factory
ingest run``, ``factory erp serve`` and ``factory analytics run``, on a scratch database
(created, migrated, dropped afterwards). Then it drives the demo's load for ``seconds``:
telemetry from the simulator through the agent and the broker into the database; the ERP
seed flows (``seed_order_flow`` back to back, ``seed_plant`` with every tenth) against the
API; the analytics jobs (anomaly learning and scoring, rollups, OEE, and maintenance scoring
with the demo's model and the ERP's plant data).

Each service's resident size (its process and any children) is sampled; at the end the
kernel's own peak, VmHWM, is read. Beside each peak: the budgets of
``deploy/docker-compose.yml`` (``mem_limit``) and of the service's systemd unit
(``MemoryMax=``), read from the files, and peak ÷ budget. The floor, measured in the same
run: a bare interpreter that has only imported the service's command (what any process of
it holds before it does anything); peak ÷ floor says how much the work itself adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tqdm import tqdm

from factory.db import connect, create_database, drop_database
from factory_bench.edge import Agent, child
from factory_bench.erp import machine
from factory_bench.procmem import DEPLOY, Budget, budgets, hwm_mib, rss_mib
from factory_demo.demo import DEVICE
from factory_demo.plant import DemoTiming, live_config, maintenance_config, oee_config, prepare_model
from factory_demo.seed import PlantSeed, SeedError, seed_order_flow, seed_plant
from factory_servers import free_port, mosquitto_binary, mosquitto_conf
from provisioning.migrate import migrate
from simulator import render_edge_config

__all__ = ["SERVICES", "MemoryOptions", "Service", "alive", "run_bench", "table"]

SITE: Final = "bench-memory"
CLI: Final = (sys.executable, "-m", "factory_cli", "--log-level", "WARNING")
PLANT_EVERY: Final = 10  # a seed_plant with every tenth order flow
# What a process of the service holds before it does anything: the interpreter with the
# command's module imported, as ``factory <command>`` imports it. Prints VmHWM in KiB.
FLOOR: Final = (
    "import importlib, sys\n"
    "importlib.import_module('factory_cli.command'); importlib.import_module(sys.argv[1])\n"
    "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
)


@dataclass(frozen=True, slots=True)
class Service:
    """A process of the deployment: the module its command imports (None: not Python), and
    where the deploy files budget it (None: not run that way)."""

    name: str
    module: str | None
    compose: str | None
    systemd: str | None


SERVICES: Final = (
    Service("mosquitto", None, "mosquitto", None),
    Service("simulator", "simulator.cli", None, None),  # stands in for the plant's machines
    Service("ingest", "ingest.cli", "ingest", "factory-ingest.service"),
    Service("erp", "erp_api.cli", "erp", "factory-erp.service"),
    Service("edge", "edge_agent.cli", None, "factory-edge.service"),  # on the Pi, not in compose
    Service("analytics", "analytics.cli", "analytics", "factory-analytics.service"),
)


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    seconds: float = 120.0
    sample_s: float = 0.5
    learn_s: float = 60.0  # the anomaly detection's healthy stretch (the demo's is 120 s)
    deploy: Path = DEPLOY


@dataclass(slots=True)
class Load:
    """What the driver did, and what the services say they did."""

    flows_ok: int = 0
    flows_failed: int = 0
    plant_seeds: int = 0
    last_error: str | None = None
    counters: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Running:
    """The started services: pid and port of each, and what the driver needs to reach them."""

    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)  # each one's stderr
    mqtt_url: str = ""
    erp_url: str = ""


async def floor_mib(module: str) -> float:
    """VmHWM of a fresh interpreter that imported ``factory_cli.command`` and ``module``."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FLOOR, module, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"importing {module} failed ({proc.returncode})")
    return int(out.split()[-1]) / 1024


def _scratch(url: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = f"factory_bench_memory_{uuid.uuid4().hex[:8]}"
    return make_conninfo("", **params)


async def _healthy(url: str, what: str, timeout_s: float = 60.0) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not answer 200 on {url} within {timeout_s:.0f} s")


async def _start(stack: contextlib.AsyncExitStack, db_url: str, work: Path, run: Running,
                 progress: Callable[[str], None]) -> dict[str, str]:  # fmt: skip
    """Broker, simulator, ingest, ERP and edge agent, in the order a plant comes up; returns
    the environment the services share."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("Mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = run.ports["mosquitto"] = free_port()
    (work / "mqtt").mkdir()
    conf = work / "mqtt" / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, work / "mqtt"))
    run.mqtt_url = f"mqtt://127.0.0.1:{port}"
    env = {**os.environ, "FACTORY_DATABASE_URL": db_url, "FACTORY_MQTT_URL": run.mqtt_url,
           "FACTORY_JWT_SECRET": secrets.token_urlsafe(48)}  # fmt: skip
    for stale in ("FACTORY_OEE_CONFIG", "FACTORY_MAINTENANCE_CONFIG", "FACTORY_ERP_URL", "FACTORY_ERP_API_KEY"):
        env.pop(stale, None)

    async def start(name: str, args: list[str], port: int, what: str) -> None:
        progress(f"bench memory: starting {what}")
        run.ports[name], run.logs[name] = port, work / f"{name}.log"
        try:
            run.pids[name] = await stack.enter_async_context(child(args, port, what, run.logs[name], env))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_tail(run.logs[name])}") from exc

    await start("mosquitto", [binary, "-c", str(conf)], port, "Mosquitto")
    modbus, opcua = free_port(), free_port()
    await start("simulator", [*CLI, "sim", "--host", "127.0.0.1", "--modbus-port", str(modbus), "--opcua-port",
                              str(opcua), "--faults", "default"], opcua, "the simulated mill")  # fmt: skip
    http = free_port()
    await start("ingest", [*CLI, "ingest", "run", "--client-id", f"{SITE}-ingest", "--site", SITE,
                           "--session-expiry", "60", "--http", f"127.0.0.1:{http}"], http, "ingest")  # fmt: skip
    erp = free_port()
    await start("erp", [*CLI, "erp", "serve", "--host", "127.0.0.1", "--port", str(erp)], erp, "the ERP API")
    run.erp_url = f"http://127.0.0.1:{erp}"
    await _healthy(f"{run.erp_url}/healthz", "the ERP API")
    config = yaml.safe_load(render_edge_config(
        site=SITE, device=DEVICE, mqtt_url=run.mqtt_url, modbus_host="127.0.0.1", modbus_port=modbus,
        opcua_endpoint=f"opc.tcp://127.0.0.1:{opcua}", buffer_path=str(work / "edge-buffer.db"),
    ))  # fmt: skip
    edge = free_port()
    (work / "edge.yaml").write_text(yaml.safe_dump({**config, "http": {"host": "127.0.0.1", "port": edge}}))
    await start("edge", [*CLI, "edge", "run", "--config", str(work / "edge.yaml")], edge, "the edge agent")
    return env


async def _start_analytics(stack: contextlib.AsyncExitStack, env: dict[str, str], seed: PlantSeed, *, work: Path,
                           run: Running, timing: DemoTiming) -> None:  # fmt: skip
    """``factory analytics run`` with the demo's configurations, written as a deployment writes
    them: the live job's file, FACTORY_OEE_CONFIG, FACTORY_MAINTENANCE_CONFIG and the ERP's key."""
    maintenance = maintenance_config(seed, run.erp_url)
    files = {
        "live.yaml": live_config(SITE, timing).model_dump(mode="json"),
        "oee.yaml": oee_config(seed).model_dump(mode="json"),
        "maintenance.yaml": maintenance.model_dump(mode="json", exclude={"api_key"}),
    }
    for name, content in files.items():
        (work / name).write_text(yaml.safe_dump(content))
    env = {
        **env,
        "FACTORY_OEE_CONFIG": str(work / "oee.yaml"),
        "FACTORY_MAINTENANCE_CONFIG": str(work / "maintenance.yaml"),
        "FACTORY_ERP_API_KEY": seed.service_key,
    }
    port = run.ports["analytics"] = free_port()
    log = run.logs["analytics"] = work / "analytics.log"
    args = [*CLI, "analytics", "run", "--config", str(work / "live.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    try:
        run.pids["analytics"] = await stack.enter_async_context(child(args, port, "analytics", log, env))
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{_tail(log)}") from exc


def _tail(log: Path, lines: int = 20) -> str:
    """The end of a service's stderr, for the error that says it failed."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _all_alive(run: Running) -> None:
    """A service that ended takes its peak with it: the run would measure nothing."""
    for name, pid in run.pids.items():
        if not alive(pid):
            raise RuntimeError(f"{name} ended during the run:\n{_tail(run.logs[name])}")


def alive(pid: int) -> bool:
    """Running or sleeping, not ended (a child that ended is a zombie until it is waited for)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


async def _drive(db_url: str, run: Running, load: Load, stop: asyncio.Event) -> None:
    """The demo's ERP seed flows, one after another, until ``stop``; a failure is counted and
    the next flow follows a second later."""
    while not stop.is_set():
        try:
            await seed_order_flow(db_url, run.erp_url, run.mqtt_url, timeout_s=10)
            load.flows_ok += 1
            if load.flows_ok % PLANT_EVERY == 0:
                await seed_plant(db_url, run.erp_url, SITE)
                load.plant_seeds += 1
        except (OSError, SeedError) as exc:
            load.flows_failed += 1
            load.last_error = str(exc)
            await asyncio.sleep(1)


async def _sample(run: Running, seconds: float, every_s: float, peaks: dict[str, float]) -> None:
    """Every ``every_s``: each service's resident size; ``peaks`` keeps each one's largest."""
    began = time.monotonic()
    with tqdm(total=round(seconds), desc="bench memory: demo load", unit="s", file=sys.stderr, leave=False) as bar:
        while (elapsed := time.monotonic() - began) < seconds:
            _all_alive(run)
            now = {name: rss_mib(pid) for name, pid in run.pids.items()}
            for name, mib in now.items():
                peaks[name] = max(peaks.get(name, 0.0), mib)
            bar.set_postfix_str(f"{sum(now.values()):.0f} MiB in all")
            bar.update(min(round(seconds), int(elapsed)) - bar.n)
            await asyncio.sleep(min(every_s, max(0.0, seconds - elapsed)))


async def _counters(run: Running) -> dict[str, float]:
    """What the services counted: points published, points stored, analytics job runs."""
    edge = await Agent(run.pids["edge"], run.ports["edge"]).metrics()
    ingest = await Agent(run.pids["ingest"], run.ports["ingest"]).metrics()
    async with httpx.AsyncClient(timeout=10) as client:
        jobs = (await client.get(f"http://127.0.0.1:{run.ports['analytics']}/healthz")).json()["jobs"]
    return {
        "edge_points_published": edge.get("factory_edge_points_published_total", 0.0),
        "ingest_points_received": ingest.get("factory_ingest_points_received_total", 0.0),
        **{f"analytics_{name}_runs": float(job["runs"]) for name, job in sorted(jobs.items())},
        "analytics_failed_runs": float(sum(job["failures"] for job in jobs.values())),
    }


@contextlib.asynccontextmanager
async def _scratch_database(base: str) -> AsyncIterator[str]:
    url = _scratch(base)
    await create_database(url)
    try:
        async with await connect(url) as conn:
            await migrate(conn)
        yield url
    finally:
        await drop_database(url)


async def run_bench(options: MemoryOptions, database_url: str,
                    progress: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """``database_url``: any database on the server to use; the scratch one goes beside it."""
    started, load_avg = time.monotonic(), os.getloadavg()[0]
    budget = budgets(options.deploy, {s.name: (s.compose, s.systemd) for s in SERVICES})  # a bad file fails first
    progress("bench memory: the floors (a bare interpreter with each command imported)")
    floors = {s.name: await floor_mib(s.module) for s in SERVICES if s.module is not None}
    timing = DemoTiming(healthy_s=options.learn_s)
    peaks: dict[str, float] = {}
    load, run = Load(), Running()
    async with _scratch_database(database_url) as db_url, contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="factory-bench-memory-")))
        env = await _start(stack, db_url, work, run, progress)
        progress("bench memory: the ERP's plant data and the demo's maintenance model")
        seed = await seed_plant(db_url, run.erp_url, SITE)
        await prepare_model(db_url, timing.model_units)
        await _start_analytics(stack, env, seed, work=work, run=run, timing=timing)
        stop = asyncio.Event()
        driver = asyncio.create_task(_drive(db_url, run, load, stop), name="bench-memory-erp-flows")
        try:
            await _sample(run, options.seconds, options.sample_s, peaks)
        finally:
            stop.set()
            await driver
        load.counters = await _counters(run)
        _all_alive(run)
        hwm = {name: hwm_mib(pid) for name, pid in run.pids.items()}  # before any of them stops
    return _result(options, budget, floors, peaks=peaks, hwm=hwm, load=load) | {
        "machine": machine(load_avg),
        "wall_seconds": round(time.monotonic() - started, 1),
        "scratch_database": conninfo_to_dict(db_url)["dbname"],  # dropped
    }


def _ratio(peak: float, of: float | None) -> float | None:
    return round(peak / of, 3) if of else None


def _result(options: MemoryOptions, budget: dict[str, Budget], floors: dict[str, float], *, peaks: dict[str, float],
            hwm: dict[str, float], load: Load) -> dict[str, Any]:  # fmt: skip
    services: dict[str, Any] = {}
    for s in SERVICES:
        peak, b, floor = max(hwm[s.name], peaks[s.name]), budget[s.name], floors.get(s.name)
        services[s.name] = {
            "peak_mib": round(peak, 1), "sampled_peak_rss_mib": round(peaks[s.name], 1),
            "vmhwm_mib": round(hwm[s.name], 1), "floor_mib": floor and round(floor, 1),
            "peak_vs_floor": floor and _ratio(peak, floor),
            "compose_service": b.compose_service, "compose_limit_mib": b.compose_mib,
            "peak_vs_compose_limit": _ratio(peak, b.compose_mib),
            "systemd_unit": b.systemd_unit, "systemd_limit_mib": b.systemd_mib,
            "peak_vs_systemd_limit": _ratio(peak, b.systemd_mib),
        }  # fmt: skip
    total = sum(v["peak_mib"] for v in services.values())
    composed = [v for v in services.values() if v["compose_limit_mib"] is not None]
    compose_total = sum(v["compose_limit_mib"] for v in composed)
    return {
        "bench": "memory",
        "seconds": options.seconds,
        "services": services,
        "total": {
            "peak_mib": round(total, 1),
            "compose_services_peak_mib": round(sum(v["peak_mib"] for v in composed), 1),
            "compose_services_limit_mib": compose_total,
            "compose_services_peak_vs_limit": _ratio(sum(v["peak_mib"] for v in composed), compose_total),
        },
        "load": {
            "erp_flows_ok": load.flows_ok,
            "erp_flows_failed": load.flows_failed,
            "erp_plant_seeds": load.plant_seeds + 1,  # the one analytics is configured from, and the repeats
            "last_error": load.last_error,
            **load.counters,
        },
        "budgets": {"compose": str(options.deploy / "docker-compose.yml"), "systemd": str(options.deploy / "systemd")},
    }


def table(result: dict[str, Any]) -> str:
    """The result as a table for people."""

    def cell(value: float | None, spec: str) -> str:
        return "—" if value is None else format(value, spec)

    lines = [f"{'service':<10} {'peak MiB':>9} {'floor':>7} {'×floor':>7} {'compose':>8} {'peak/c':>7}"
             f" {'systemd':>8} {'peak/s':>7}"]  # fmt: skip
    for name, s in result["services"].items():
        lines.append(
            f"{name:<10} {s['peak_mib']:>9.1f} {cell(s['floor_mib'], '.1f'):>7} {cell(s['peak_vs_floor'], '.2f'):>7}"
            f" {cell(s['compose_limit_mib'], '.0f'):>8} {cell(s['peak_vs_compose_limit'], '.3f'):>7}"
            f" {cell(s['systemd_limit_mib'], '.0f'):>8} {cell(s['peak_vs_systemd_limit'], '.3f'):>7}"
        )
    total, load = result["total"], result["load"]
    lines.append(f"{'all':<10} {total['peak_mib']:>9.1f}   (compose services {total['compose_services_peak_mib']:.1f}"
                 f" of {total['compose_services_limit_mib']:.0f} MiB)")  # fmt: skip
    lines.append(f"load over {result['seconds']:g} s: {load['edge_points_published']:.0f} points published,"
                 f" {load['ingest_points_received']:.0f} stored; {load['erp_flows_ok']} ERP order flows"
                 f" ({load['erp_flows_failed']} failed), {load['erp_plant_seeds']} plant seeds")  # fmt: skip
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result)
