"""Database roles: Grafana reads everything and writes nothing; each service writes only its schema."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.integration


async def can(db, role: str, sql: str) -> bool:  # type: ignore[no-untyped-def]
    """Run ``sql`` as ``role`` in a transaction that is always rolled back."""
    try:
        async with db.transaction(force_rollback=True):
            await db.execute(f"SET LOCAL ROLE {role}")
            await db.execute(sql)
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


async def test_grafana_reads_but_never_writes(db) -> None:
    assert await can(db, "factory_grafana", "SELECT count(*) FROM telemetry.sample")
    assert await can(db, "factory_grafana", "SELECT count(*) FROM erp.product")
    assert await can(db, "factory_grafana", "SELECT count(*) FROM analytics.anomaly")
    assert not await can(db, "factory_grafana", "DELETE FROM telemetry.dead_letter")
    assert not await can(db, "factory_grafana", "SELECT count(*) FROM provisioning.device")  # secrets stay out


async def test_each_service_writes_only_its_own_schema(db) -> None:
    dead_letter = "INSERT INTO telemetry.dead_letter (topic, payload, reason) VALUES ('t', '', 'r')"
    assert await can(db, "factory_ingest", dead_letter)
    assert not await can(db, "factory_erp", dead_letter)
    assert not await can(db, "factory_ingest", "DELETE FROM erp.product")
    assert await can(db, "factory_analytics", "DELETE FROM analytics.anomaly")
    assert not await can(db, "factory_analytics", "DELETE FROM telemetry.sample")
