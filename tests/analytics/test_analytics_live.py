"""The live anomaly job against the real database: telemetry in, scores, episodes and events out."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import numpy as np
import psycopg
import pytest

from analytics.checks import CheckConfig
from analytics.events import EventRelay
from analytics.live import AnomalyJob, LiveConfig
from edge_agent.agent import ChangeFilter
from edge_agent.config import OpcuaTag
from edge_agent.reading import Reading
from factory import events as domain_events
from factory.mqtt import connect, parse_mqtt_url
from factory.wire import TagInfo
from ingest.store import Samples, TelemetryStore

pytestmark = pytest.mark.integration

T0 = 1_900_000_000.0  # 2030-03-17, a day of its own for these samples
Conn = psycopg.AsyncConnection[tuple[object, ...]]


async def write_telemetry(db: Conn, site: str, tags: dict[str, tuple[str, np.ndarray]]) -> dict[str, int]:
    """One sample per second from T0 for each tag (NaN: no sample), through ingest's own store."""
    async with db.transaction():
        store = TelemetryStore(db)
        device = await store.device_id(site, "pi1")
        await store.register_tags(device, [TagInfo(name, "test", kind) for name, (kind, _) in tags.items()])
        ids = await store.tag_ids(device, tags)
        samples = Samples()
        for name, (_, values) in tags.items():
            at = np.flatnonzero(~np.isnan(values))
            samples.extend(
                [ids[name]] * at.size, [int((T0 + i) * 1000) for i in at], values[at].tolist(), [0] * at.size
            )
        await store.write_samples(samples)
    return ids


def pump(seconds: int, rng: np.random.Generator, *, fault: bool = True) -> dict[str, tuple[str, np.ndarray]]:
    flow = 50 + rng.normal(0, 0.5, seconds)
    if fault:
        flow[360:420] -= 2.5  # the fault: five noise sigmas down for a minute
    return {
        "pump1.flow": ("number", flow),
        "pump1.pressure": ("number", 3 + 0.02 * (flow - 50) + rng.normal(0, 0.03, seconds)),
        "pump1.temp": ("number", 60 + 0.01 * np.arange(seconds) + rng.normal(0, 0.05, seconds)),
        "pump1.vib": ("number", 2 + rng.normal(0, 0.1, seconds)),
        "pump1.state": ("number", np.ones(seconds)),  # excluded by name
        "pump1.total": ("number", np.arange(seconds) // 7),  # a counter: excluded
        "pump1.running": ("bool", np.ones(seconds)),  # a boolean: excluded
    }


async def rows(db: Conn, query: str, *params: object) -> list[tuple[object, ...]]:
    cur = await db.execute(query, params)
    return await cur.fetchall()


async def test_trains_then_scores_a_fault_as_one_episode(db: Conn, site: str) -> None:
    ids = await write_telemetry(db, site, pump(480, np.random.default_rng(7)))
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300), clock=lambda: clock[0])

    first = await job.run(db)
    assert (first.assets, first.trained, first.points) == (1, 1, 0)
    (tag_ids,) = (await rows(db, "SELECT tag_ids FROM analytics.detector_state WHERE site = %s", site))[0]
    assert tag_ids == [ids[n] for n in ("pump1.flow", "pump1.pressure", "pump1.temp", "pump1.vib")]

    clock[0] = T0 + 482.0
    second = await job.run(db)
    assert (second.trained, second.points, second.opened, second.closed) == (0, 180, 1, 1)
    scored = await rows(
        db, """SELECT extract(epoch FROM time) - %s, is_anomaly, details FROM analytics.anomaly
               WHERE site = %s AND detector = 'multivariate' ORDER BY time""", T0, site)  # fmt: skip
    assert [float(t) for t, _, _ in scored] == [float(t) for t in range(301, 481)]
    flagged = [float(t) for t, bad, _ in scored if bad]
    assert 357 <= min(flagged) <= 363  # the episode's rows begin where its change began ...
    assert 420 <= max(flagged) <= 460
    assert len(flagged) >= 60

    episodes = await rows(
        db, """SELECT id, extract(epoch FROM started_at) - %s, extract(epoch FROM ended_at) - %s, peak_score
               FROM analytics.anomaly_episode WHERE site = %s""", T0, T0, site)  # fmt: skip
    assert len(episodes) == 1
    episode, started, ended, peak = episodes[0]
    assert min(flagged) < started <= 400  # ... the alarm was raised when it opened
    assert ended == max(flagged) + 1
    for t, bad, details in scored:
        if bad and float(t) >= started:  # type: ignore[arg-type]
            split = details["contributions"]  # type: ignore[index]
            assert max(split, key=split.get) == "pump1.flow"
    assert float(peak) > 1
    events = await rows(db, "SELECT payload FROM analytics.outbox WHERE payload->>'site' = %s ORDER BY id", site)
    assert [(e["state"], e["episode"], e["detector"]) for (e,) in events] == [  # type: ignore[index]
        ("start", episode, "multivariate"), ("end", episode, "multivariate")]  # fmt: skip
    assert events[0][0]["top"][0][0] == "pump1.flow"  # type: ignore[index]
    began = datetime.fromisoformat(events[0][0]["change_started_at"]).timestamp() - T0  # type: ignore[index]
    assert began == min(flagged) < started  # the fault began at 360: estimated when the episode opened
    (stored,) = (await rows(db, "SELECT details->>'change_started_at' FROM analytics.anomaly_episode "
                                "WHERE id = %s", episode))[0]  # fmt: skip
    assert stored == events[0][0]["change_started_at"]  # type: ignore[index]

    again = await job.run(db)  # nothing new to score: nothing written twice
    assert (again.points, again.opened, again.closed) == (0, 0, 0)


async def test_an_episode_opening_in_a_later_run_flags_the_rows_of_its_change_an_earlier_run_wrote(
    db: Conn, site: str,
) -> None:  # fmt: skip
    """The fault begins at 360 s; a run up to 365 s writes its first rows unflagged, the next
    opens the episode and flags them too, as one run over both would have."""
    await write_telemetry(db, site, pump(480, np.random.default_rng(7)))
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300), clock=lambda: clock[0])
    await job.run(db)
    clock[0] = T0 + 366.0
    assert (await job.run(db)).opened == 0
    before = await rows(db, "SELECT count(*) FROM analytics.anomaly WHERE site = %s AND is_anomaly", site)
    assert before == [(0,)]
    clock[0] = T0 + 482.0
    assert (await job.run(db)).opened == 1
    flagged = [float(t) for (t,) in await rows(
        db, """SELECT extract(epoch FROM time) - %s FROM analytics.anomaly
               WHERE site = %s AND detector = 'multivariate' AND is_anomaly ORDER BY time""", T0, site)]  # fmt: skip
    (began,) = (await rows(db, "SELECT details->>'change_started_at' FROM analytics.anomaly_episode "
                               "WHERE site = %s", site))[0]  # fmt: skip
    assert 357 <= flagged[0] < 366
    assert flagged[0] == datetime.fromisoformat(str(began)).timestamp() - T0
    assert flagged == [float(t) for t in range(int(flagged[0]), int(flagged[-1]) + 1)]  # no hole where runs met


def fan(seconds: int, rng: np.random.Generator) -> dict[str, tuple[str, np.ndarray]]:
    speed = 1500 + rng.normal(0, 2.0, seconds)
    speed[330:] = speed[330]  # stuck from 330 s on
    current = 20 + rng.normal(0, 0.2, seconds)
    current[320] += 2.0  # a spike: ten noise sigmas up for one sample
    current[400:405] = 60.0  # out of range for five seconds
    return {"fan1.speed": ("number", speed), "fan1.current": ("number", current)}


async def test_per_tag_checks_find_a_spike_a_stuck_sensor_and_a_range_breach(db: Conn, site: str) -> None:
    ids = await write_telemetry(db, site, fan(480, np.random.default_rng(3)))
    clock = [T0 + 302.0]
    config = LiveConfig(
        site=site, healthy_window_s=300, checks=CheckConfig(spike_sigmas=6, stuck_after_s=60, range_margin=3)
    )
    job = AnomalyJob(config, clock=lambda: clock[0])
    while clock[0] <= T0 + 482:  # a run every 20 s, as the scheduler would (every few seconds)
        await job.run(db)
        clock[0] += 20

    found = await rows(
        db, """SELECT detector, tag_id, extract(epoch FROM time) - %s FROM analytics.anomaly
               WHERE site = %s AND detector <> 'multivariate' ORDER BY time""", T0, site)  # fmt: skip
    by_check: dict[str, list[tuple[int, float]]] = {}
    for check, tag_id, at in found:
        by_check.setdefault(str(check), []).append((int(tag_id), float(at)))  # type: ignore[call-overload, arg-type]
    assert by_check["spike"] == [(ids["fan1.current"], 320.0)]
    assert by_check["range"] == [(ids["fan1.current"], float(t)) for t in range(400, 405)]
    stuck = by_check["stuck"]
    assert {tag for tag, _ in stuck} == {ids["fan1.speed"]}
    assert 390 <= min(t for _, t in stuck) <= 420

    episodes = await rows(
        db, """SELECT detector, extract(epoch FROM started_at) - %s, ended_at IS NULL FROM analytics.anomaly_episode
               WHERE site = %s AND detector <> 'multivariate' ORDER BY started_at""", T0, site)  # fmt: skip
    assert [(d, float(s), still) for d, s, still in episodes] == [  # type: ignore[arg-type]
        ("spike", 320.0, False), ("stuck", min(t for _, t in stuck), True), ("range", 400.0, False)]  # fmt: skip
    events = await rows(
        db, """SELECT payload->>'state', payload->>'detector' FROM analytics.outbox
               WHERE payload->>'site' = %s AND payload->>'detector' <> 'multivariate' ORDER BY id""", site)  # fmt: skip
    assert events.count(("start", "spike")) == events.count(("end", "spike")) == 1
    assert events.count(("start", "range")) == events.count(("end", "range")) == 1
    assert events.count(("start", "stuck")) == 1
    assert ("end", "stuck") not in events


def reported(tags: dict[str, tuple[str, np.ndarray]]) -> dict[str, tuple[str, np.ndarray]]:
    """What an edge agent with its default filter passes on from a 1 s poll: a value when it
    changes, and once a minute when it does not (NaN: nothing sent that second)."""
    edge = ChangeFilter([OpcuaTag(name=name, node=f"ns=2;s={name}") for name in tags])
    names = list(tags)
    out = {name: (kind, np.full(values.size, np.nan)) for name, (kind, values) in tags.items()}
    for i in range(next(iter(tags.values()))[1].size):
        sent = edge(Reading.at(names, int((T0 + i) * 1000), [float(tags[n][1][i]) for n in names]))
        for name, value in zip(sent.tags if sent else (), sent.values if sent else (), strict=True):
            out[name][1][i] = value
    return out


STUCK_AT = 400  # press1.current repeats its value from here on


def press(seconds: int, rng: np.random.Generator) -> dict[str, tuple[str, np.ndarray]]:
    current = 30 + rng.normal(0, 0.3, seconds)
    current[STUCK_AT:] = current[STUCK_AT]
    running = np.ones(seconds)
    running[480:540] = 0  # a planned stop of a minute: the speed reads 0 throughout
    speed = np.where(running == 1, 900 + rng.normal(0, 1.0, seconds), 0.0)
    level = np.array([5.0, 5.2, 5.1, 5.3])[np.arange(seconds) // 25 % 4]  # healthy, moves every 25 s
    return {"press1.current": ("number", current), "press1.power": ("number", 0.4 * current + rng.normal(0, 0.1, seconds)),
            "press1.speed": ("number", speed), "press1.level": ("number", level), "press1.state": ("number", running)}  # fmt: skip


async def test_a_sensor_reported_by_exception_is_stuck_within_its_setting_and_a_run(db: Conn, site: str) -> None:
    """The stuck sensor sends nothing but a heartbeat a minute (the edge agent's filter), so the
    check cannot wait for new samples; a stopped machine and a slow healthy tag stay unflagged."""
    ids = await write_telemetry(db, site, reported(press(600, np.random.default_rng(5))))
    stuck_after, every = 20.0, 5.0
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300, checks=CheckConfig(stuck_after_s=stuck_after)),
                     clock=lambda: clock[0])  # fmt: skip
    while clock[0] <= T0 + 602:  # the job's cycle as the scheduler runs it
        await job.run(db)
        clock[0] += every

    found = await rows(
        db, """SELECT tag_id, extract(epoch FROM time) - %s FROM analytics.anomaly
               WHERE site = %s AND detector = 'stuck' ORDER BY time""", T0, site)  # fmt: skip
    flagged = [(int(tag), float(at)) for tag, at in found]  # type: ignore[call-overload, arg-type]
    assert {tag for tag, _ in flagged} == {ids["press1.current"]}  # not the stopped speed, not the slow level
    assert STUCK_AT + stuck_after < flagged[0][1] <= STUCK_AT + stuck_after + every
    assert not [at for _, at in flagged if 480 <= at <= 540 + stuck_after]  # stopped: counted again from the restart
    (checks,) = (await rows(db, "SELECT checks FROM analytics.detector_state WHERE site = %s", site))[0]
    assert checks["tags"][str(ids["press1.level"])]["limits"]["stuck_after_s"] == 250.0  # type: ignore[index]


async def test_events_reach_the_broker_once_per_episode_edge(db: Conn, site: str, mqtt_url: str) -> None:
    await write_telemetry(db, site, pump(480, np.random.default_rng(11)))
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300), clock=lambda: clock[0])
    await job.run(db)
    clock[0] = T0 + 482.0
    await job.run(db)

    received: list[dict[str, object]] = []
    async with connect(parse_mqtt_url(mqtt_url), "") as client:
        await client.subscribe("factory/v1/events/anomaly", qos=1)
        relay = EventRelay(mqtt_url)
        try:
            await relay.relay(db)
        finally:
            await relay.close()
        async with asyncio.timeout(10):
            async for message in client.messages:
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                if body["data"]["site"] == site:
                    received.append(body)
                if [m["data"]["state"] for m in received] == ["start", "end"]:  # type: ignore[index]
                    break
    assert received[0]["kind"] == "anomaly"
    assert {m["source"] for m in received} == {await domain_events.source(db, "analytics")}
    assert received[0]["id"] < received[1]["id"]
    assert received[0]["data"]["episode"] == received[1]["data"]["episode"]  # type: ignore[index]
    pending = await rows(
        db, "SELECT count(*) FROM analytics.outbox WHERE payload->>'site' = %s AND published_at IS NULL", site
    )
    assert pending == [(0,)]


async def test_one_broken_asset_does_not_stop_the_others(db: Conn, site: str) -> None:
    data = pump(480, np.random.default_rng(5))
    twin = {name.replace("pump1", "pump2"): series for name, series in data.items()}
    await write_telemetry(db, site, data | twin)
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300), clock=lambda: clock[0])
    assert (await job.run(db)).trained == 2
    await db.execute(
        "UPDATE analytics.detector_state SET model = '{\"version\": 99}' WHERE site = %s AND asset = 'pump1'", (site,)
    )
    clock[0] = T0 + 482.0
    summary = await job.run(db)
    assert summary.points == 180  # pump2 scored
    assert len(summary.failed) == 1
    assert summary.failed[0].startswith(f"{site}/pump1: NotFittedError: stored model version 99")
    scored = await rows(db, "SELECT DISTINCT asset FROM analytics.anomaly WHERE site = %s", site)
    assert scored == [("pump2",)]


async def test_a_planned_stop_is_neither_scored_nor_flagged(db: Conn, site: str) -> None:
    data = pump(480, np.random.default_rng(13), fault=False)  # a healthy pump ...
    state = np.ones(480)
    state[330:400] = 0  # ... that stops for 70 s, everything dropping to zero meanwhile
    for name in ("pump1.flow", "pump1.pressure", "pump1.vib"):
        data[name][1][330:400] = 0.0
    data["pump1.state"] = ("number", state)
    await write_telemetry(db, site, data)
    clock = [T0 + 302.0]
    job = AnomalyJob(LiveConfig(site=site, healthy_window_s=300), clock=lambda: clock[0])
    await job.run(db)
    while clock[0] < T0 + 482:
        clock[0] += 20
        await job.run(db)

    scored = await rows(
        db, """SELECT extract(epoch FROM time) - %s, is_anomaly FROM analytics.anomaly
               WHERE site = %s AND detector = 'multivariate' ORDER BY time""", T0, site)  # fmt: skip
    times = [float(t) for t, _ in scored]
    assert times == [float(t) for t in [*range(301, 330), *range(400, 481)]]  # nothing while stopped
    assert [t for t, bad in scored if bad] == []
    flagged = await rows(db, "SELECT count(*) FROM analytics.anomaly WHERE site = %s AND is_anomaly", site)
    assert flagged == [(0,)]
    assert await rows(db, "SELECT count(*) FROM analytics.anomaly_episode WHERE site = %s", site) == [(0,)]
