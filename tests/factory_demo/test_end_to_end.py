"""Simulator → edge agent → Mosquitto → ingest → PostgreSQL, with exact values at the end.

Signals of the simulated mill are pinned to known values; the database must then hold
exactly what the register layout implies (word order, scale, offset, float32 rounding).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from helpers import publish, running_ingest

from edge_agent import EdgeAgent, load_config
from simulator import EDGE_TAGS, SimulatedPlant, render_edge_config

pytestmark = pytest.mark.integration

HELD = {
    "boiler1.drum_pressure": 12.7,  # unit 1, holding int16, scale 0.01
    "boiler1.steam_flow": 41.3,  # unit 1, holding float32, ABCD
    "boiler1.drum_level": 12.5,  # unit 1, holding uint16, scale 0.1, offset -200
    "boiler1.steam_total": 4_000_123,  # unit 1, input uint32, CDAB
    "boiler1.burner_on": True,  # unit 1, coil 3
    "mill1.motor_current": 812.25,  # unit 2, holding float32, CDAB
    "mill1.motor_power": -1234.5,  # unit 2, input int32, CDAB, scale 0.1
    "mill1.cane_crushed": 987_654,  # unit 2, input uint32, ABCD
    "mill2.fault": True,  # unit 2, discrete input 1
    "centrifugal1.vibration_rms": 4.75,  # OPC UA Double
    "centrifugal1.batch_count": 321,  # OPC UA UInt32
    "centrifugal2.spinning": False,  # OPC UA Boolean
}


async def test_pinned_plant_values_arrive_exactly(
    database_url: str, mqtt_url: str, site: str, db, tmp_path: Path
) -> None:
    async with SimulatedPlant(modbus_port=0, opcua_port=0) as plant:
        for name, value in HELD.items():
            plant.model.hold(name, value)
        await plant.refresh()
        path = tmp_path / "edge.yaml"
        path.write_text(
            render_edge_config(
                site=site, device="pi1", mqtt_url=mqtt_url, modbus_host="127.0.0.1", modbus_port=plant.modbus_port,
                opcua_endpoint=plant.opcua_endpoint, buffer_path=str(tmp_path / "buffer.db"),
            )
        )  # fmt: skip
        agent = EdgeAgent(load_config(path), tmp_path)
        async with running_ingest(database_url, mqtt_url, site) as ingest:
            task = asyncio.create_task(agent.run())
            try:
                async with asyncio.timeout(30):
                    while not set(HELD) <= set(await stored_tags(db, site)):
                        ingest.flushed.clear()
                        await ingest.flushed.wait()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    await publish(mqtt_url, [(f"factory/v1/{site}/pi1/{kind}", b"") for kind in ("status", "tags")], retain=True)
    cur = await db.execute(
        """SELECT t.name, array_agg(DISTINCT s.value), min(s.quality), max(s.quality), t.source, t.unit
           FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
           JOIN telemetry.device d ON d.id = t.device_id
           WHERE d.site = %s AND t.name = ANY(%s) GROUP BY t.name, t.source, t.unit""",
        (site, list(HELD)),
    )
    rows = {r[0]: r[1:] for r in await cur.fetchall()}
    for name, held in HELD.items():
        expected = EDGE_TAGS[name].expected(held)
        values, qmin, qmax, source, unit = rows[name]
        assert values == [float(expected)], f"{name}: stored {values}, expected {expected}"
        assert (qmin, qmax) == (0, 0), name
        assert source == EDGE_TAGS[name].source, name
        assert (unit or "") == EDGE_TAGS[name].unit, name
    assert rows["boiler1.drum_pressure"][0] == [12.7]
    assert rows["mill1.motor_power"][0] == [-1234.5]
    assert rows["boiler1.steam_total"][0] == [4_000_123.0]


async def stored_tags(db, site: str) -> list[str]:  # type: ignore[no-untyped-def]
    cur = await db.execute(
        """SELECT DISTINCT t.name FROM telemetry.sample s JOIN telemetry.tag t ON t.id = s.tag_id
           JOIN telemetry.device d ON d.id = t.device_id WHERE d.site = %s""",
        (site,),
    )
    return [str(r[0]) for r in await cur.fetchall()]
