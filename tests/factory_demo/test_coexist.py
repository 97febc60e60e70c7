"""Several instances on one host and one broker: unique client ids, free ports, one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import test_demo
from helpers import publish, scrape
from psycopg import sql

from factory.runtime import Listen, StartupError, claim_instance, listen

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")} | extra


def test_instances_take_the_lowest_free_number_and_get_it_back() -> None:
    service = f"test-{uuid.uuid4().hex[:8]}"
    first, second = claim_instance(service), claim_instance(service)
    assert (first.number, second.number) == (0, 1)
    assert first.client_id != second.client_id
    assert first.client_id.startswith(f"{service}-")
    assert first.client_id.endswith("-0")
    first.release()  # a restarted worker gets its number, and so its client id and session, back
    again = claim_instance(service)
    assert again.number == 0
    assert again.client_id == first.client_id
    again.release()
    second.release()


def test_an_instance_number_is_freed_when_its_process_dies() -> None:
    service = f"test-{uuid.uuid4().hex[:8]}"
    code = f"from factory.runtime import claim_instance; i = claim_instance({service!r}); print(i.number, flush=True); input()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "0"
    assert claim_instance(service).number == 1  # held by the child
    child.kill()
    child.wait(10)
    mine = claim_instance(service)
    assert mine.number == 0  # a kill -9 released it
    mine.release()


def test_a_busy_port_is_refused_or_moved() -> None:
    with listen(Listen("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"127\.0\.0\.1:{port}.*--http"):
            listen(Listen("127.0.0.1", port, option="--http"))
        with listen(Listen("127.0.0.1", port, fallback=True)) as moved:
            assert moved.getsockname()[1] not in (0, port)


def test_erp_serve_on_a_busy_port_exits_2_with_one_line(database_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "factory_cli", "erp", "serve", "--no-relay", "--port", str(port)],
            env=_env(FACTORY_DATABASE_URL=database_url, FACTORY_JWT_SECRET=uuid.uuid4().hex * 2), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0], lines
    assert "--port" in lines[0], lines


def _http_port(stderr_lines: list[str]) -> int:
    """Where a worker serves /metrics: the default port, or the free one it logged instead."""
    for line in stderr_lines:
        if match := re.search(r"listening on 127\.0\.0\.1:(\d+) instead", line):
            return int(match.group(1))
    return 9101


@pytest.mark.slow
def test_two_ingest_workers_with_default_options_share_one_group(database_url: str, mqtt_url: str, site: str) -> None:
    """Default client ids and health ports: neither worker kicks the other off, and every point
    of a known stream is stored once."""
    env = _env(FACTORY_DATABASE_URL=database_url, FACTORY_MQTT_URL=mqtt_url, FACTORY_LOG_LEVEL="INFO")
    args = [sys.executable, "-m", "factory_cli", "ingest", "run", "--shared-group", f"g{site}", "--site", site,
            "--session-expiry", "60", "--no-upkeep"]  # fmt: skip
    workers = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs: list[list[str]] = [[], []]
    try:
        for worker, log in zip(workers, logs, strict=True):
            assert worker.stderr is not None
            for line in worker.stderr:  # until it has subscribed
                log.append(line)
                if "ingest.service: ingest:" in line:
                    break
            assert worker.poll() is None, "".join(log)
        ids = [re.findall(r"MQTT client id (\S+)", "".join(log)) for log in logs]
        assert len(ids[0]) == len(ids[1]) == 1, logs
        assert ids[0] != ids[1], logs
        devices, batches, per_batch = 3, 30, 100
        for n in range(batches):  # a known stream over 30 s
            messages = [
                (f"factory/v1/{site}/pi{d}/telemetry",
                 json.dumps({"v": 1, "seq": n, "points": [{"t": f"a.t{i}", "ts": NOW_MS + n * 1000, "v": i}
                                                           for i in range(per_batch)]}).encode())
                for d in range(devices)
            ]  # fmt: skip
            asyncio.run(publish(mqtt_url, messages))
            time.sleep(1)
        expected = devices * batches * per_batch
        deadline = time.monotonic() + 30
        stored = 0
        while time.monotonic() < deadline:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    """SELECT count(*) FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
                       JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s""",
                    (site,),
                ).fetchone()
            stored = int(row[0]) if row else 0
            if stored >= expected:
                break
            time.sleep(0.5)
        assert stored == expected
        for worker, log in zip(workers, logs, strict=True):
            assert worker.poll() is None, "".join(log)  # still running after 30 s
        figures = [scrape(_http_port(log)) for log in logs]
    finally:
        for worker in workers:
            worker.terminate()
        for worker, log in zip(workers, logs, strict=True):
            _, rest = worker.communicate(timeout=30)
            log.append(rest)
    for worker, log in zip(workers, logs, strict=True):
        text = "".join(log)
        assert worker.returncode in (0, -15), text
        assert "Traceback" not in text, text
        assert "connection lost" not in text, text
    assert [f["factory_ingest_reconnects_total"] for f in figures] == [0.0, 0.0]
    received = [f["factory_ingest_points_received_total"] for f in figures]
    assert sum(received) == expected, received  # each point reached one worker once
    assert all(r > 0 for r in received), received  # and both took part


@pytest.fixture
def two_databases(pg_admin_url: str) -> Iterator[list[str]]:
    """Two databases on one server, which the demos create and migrate; dropped afterwards."""
    params = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    names = [f"factory_demo_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    yield [psycopg.conninfo.make_conninfo("", **(params | {"dbname": name})) for name in names]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_demos_at_once_on_one_broker_and_database_server(
    two_databases: list[str], mqtt_url: str, tmp_path: Path
) -> None:
    """Default ports and identities: the second demo takes the next site, client ids and a
    free ERP port by itself; both finish with rows from every source."""
    demos = [
        subprocess.Popen(
            [sys.executable, "-m", "factory_cli", "demo", "--seconds", "30", "--workdir", str(tmp_path / f"demo{n}"),
             "--json"],
            env=_env(FACTORY_DATABASE_URL=url, FACTORY_MQTT_URL=mqtt_url),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n, url in enumerate(two_databases)
    ]  # fmt: skip
    results = [demo.communicate(timeout=240) for demo in demos]
    summaries = []
    for demo, (out, err) in zip(demos, results, strict=True):
        assert demo.returncode == 0, err
        assert "Traceback" not in err, err
        summaries.append(json.loads(out))
    assert {s["site"] for s in summaries} == {"mill-a", "mill-a-2"}
    assert len({s["erp_url"] for s in summaries}) == 2
    for summary, (_, err) in zip(summaries, results, strict=True):
        test_demo.check_summary(summary, err)
