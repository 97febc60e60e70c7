"""The scheduled maintenance job against the real database and the real ERP API: scoring
opens one maintenance work order per at-risk asset, with its spare parts reserved, however
often it runs; closing the order re-arms it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from erp_support import ok, product, receive, running, stock, unique, warehouse

from analytics.jobs import Services
from analytics.jobs import maintenance as score
from analytics.live import LiveConfig
from analytics.scheduler import JobContext
from erp_api.backorders import fill_once
from factory.settings import Settings
from ingest.store import Samples, TelemetryStore
from maintenance_models.errors import WorkOrderError
from maintenance_models.jobs import MaintenanceJobConfig
from maintenance_models.registry import promote, register
from maintenance_models.scoring import PLANT_CONFIG, ScoringConfig, train_plant_model
from maintenance_models.work_orders import SparePart

pytestmark = pytest.mark.integration

Conn = psycopg.AsyncConnection[Any]
SENSORS = ("vibration_rms", "bearing_temp")
HOUR = timedelta(hours=1)
QUICK = PLANT_CONFIG.model_copy(update={"ensemble": 1, "max_iter": 60, "classifier_max_iter": 40, "learning_rate": 0.1})


def _bearing(life: int, hours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    wear = (hours / life) ** 3
    return np.column_stack([1.4 + 4.0 * wear + rng.normal(0, 0.05, len(hours)),
                            52.0 + 25.0 * wear + rng.normal(0, 0.3, len(hours))])  # fmt: skip


@pytest.fixture(scope="module")
def plant_model() -> Any:
    rng = np.random.default_rng(2)
    histories = [_bearing(life, np.arange(1, life + 1), rng) for life in rng.integers(150, 400, size=24)]
    return train_plant_model(histories, SENSORS, QUICK)


async def _telemetry(db: Conn, site: str, asset: str, values: np.ndarray) -> None:
    """One sample per tag every 15 minutes over the complete hours before now, the last row last."""
    store = TelemetryStore(db)
    samples = Samples()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    async with db.transaction():
        ids = await store.tag_ids(await store.device_id(site, "pi"), [f"{asset}.{s}" for s in SENSORS])
        for back, row in enumerate(values[::-1]):
            for quarter in range(4):
                at = end - (back + 1) * HOUR + quarter * timedelta(minutes=15)
                for column, sensor in enumerate(SENSORS):
                    samples.extend([ids[f"{asset}.{sensor}"]], [int(at.timestamp() * 1000)], [float(row[column])], [0])
        await store.write_samples(samples)


async def _plant(db: Conn, site: str, plant_model: Any) -> tuple[str, str]:
    """A worn asset and a healthy one, and the live model of kind ``bearing-<site>``."""
    rng = np.random.default_rng(9)
    worn, healthy = f"{site}worn", f"{site}healthy"
    await _telemetry(db, site, worn, _bearing(300, np.arange(261, 301), rng))
    await _telemetry(db, site, healthy, _bearing(300, np.arange(1, 41), rng))
    await promote(db, await register(db, plant_model, kind=f"bearing-{site}", training_data={}, metrics={}))
    return worn, healthy


async def _service_key(admin: Any) -> str:
    created = await admin.post("/api/v1/auth/api-keys", json={"name": unique("scorer").lower(), "role": "service"})
    return str((await ok(created, 201))["key"])


async def _orders(admin: Any, asset: str) -> list[dict[str, Any]]:
    page = await ok(await admin.get("/api/v1/work-orders", params={"asset": asset, "kind": "maintenance"}))
    return list(page["items"])


def _config(site: str, base_url: str, key: str, wh: str, parts: dict[str, list[SparePart]]) -> MaintenanceJobConfig:
    scoring = ScoringConfig(kind=f"bearing-{site}", assets=f"{site}%", lookback_cycles=24, min_cycles=6)
    return MaintenanceJobConfig(scoring=scoring, erp_url=base_url, api_key=key, warehouse=wh, spare_parts=parts)


async def test_one_open_order_per_asset_however_often_it_runs_and_closing_rearms(
    database_url: str, db: Conn, site: str, plant_model: Any
) -> None:
    worn, healthy = await _plant(db, site, plant_model)
    async with running(database_url) as api, api.client("admin") as admin:
        w = await warehouse(admin)
        bearing, seal = await product(admin, cost="40.00"), await product(admin, cost="3.00")
        await receive(admin, bearing["id"], w["id"], "4")
        await receive(admin, seal["id"], w["id"], "10")
        parts = {worn: [SparePart(sku=bearing["sku"], quantity=2), SparePart(sku=seal["sku"], quantity=4)]}
        ctx = JobContext(db, database_url, Services(maintenance=_config(site, api.base_url, await _service_key(admin),
                                                                   w["code"], parts)))  # fmt: skip

        runs = [await score(ctx) for _ in range(3)]

        assert [r["at_risk"] for r in runs] == [[worn]] * 3
        assert runs[0]["scored"] == 2
        orders = await _orders(admin, worn)
        assert len(orders) == 1
        first = orders[0]
        assert (runs[0]["opened"], runs[1]["opened"], runs[2]["opened"]) == ([first["number"]], [], [])
        assert runs[1]["already_open"] == runs[2]["already_open"] == [first["number"]]
        assert (first["status"], first["site"], first["asset"]) == ("open", site, worn)
        assert first["created_by"].startswith("key:")
        assert first["reason"].startswith(f"predicted failure [bearing-{site}]: failure probability ")
        assert [(p["sku"], p["quantity"]) for p in first["spare_parts"]] == [(bearing["sku"], "2.000"),
                                                                             (seal["sku"], "4.000")]  # fmt: skip
        assert (await stock(admin, bearing["id"], w["id"]))["reserved"] == "2.000"  # once, not three times
        assert (await stock(admin, seal["id"], w["id"]))["reserved"] == "4.000"
        assert await _orders(admin, healthy) == []
        cur = await db.execute(
            "SELECT asset FROM maintenance.asset_health WHERE asset LIKE %s ORDER BY 1", (f"{site}%",)
        )
        assert [r[0] for r in await cur.fetchall()] == [healthy, worn]

        await ok(await admin.post(f"/api/v1/work-orders/{first['id']}/cancel"))  # cancelled: parts released
        assert (await stock(admin, bearing["id"], w["id"]))["reserved"] == "0.000"
        rerun = await score(ctx)
        second = next(o for o in await _orders(admin, worn) if o["status"] == "open")
        assert rerun["opened"] == [second["number"]]
        assert second["id"] != first["id"]
        assert (await stock(admin, bearing["id"], w["id"]))["reserved"] == "2.000"

        await ok(await admin.post(f"/api/v1/work-orders/{second['id']}/start"))
        assert (await score(ctx))["already_open"] == [second["number"]]  # in progress counts as open
        await ok(await admin.post(f"/api/v1/work-orders/{second['id']}/complete"))  # done: parts consumed
        third = (await score(ctx))["opened"]
        statuses = sorted(o["status"] for o in await _orders(admin, worn))
        assert statuses == ["cancelled", "done", "open"]
        assert len(third) == 1
        s = await stock(admin, bearing["id"], w["id"])
        assert (s["on_hand"], s["reserved"]) == ("2.000", "2.000")


async def test_a_short_part_is_back_ordered_requisitioned_and_reserved_on_receipt(
    database_url: str, db: Conn, site: str, plant_model: Any
) -> None:
    """The riskiest case: failure coming, one bearing of two on the shelf. The order is opened
    all the same, the missing bearing becomes a draft purchase order to its preferred supplier
    (once, however often the job runs), and its receipt makes the order ready."""
    worn, _ = await _plant(db, site, plant_model)
    async with running(database_url) as api, api.client("admin") as admin:
        w = await warehouse(admin)
        bearing = await product(admin, cost="40.00")
        await receive(admin, bearing["id"], w["id"], "1")
        vendor = await ok(await admin.post("/api/v1/suppliers", json={"code": unique("SKF"), "name": "Bearings Ltd", "currency": "EUR"}),
                          201)  # fmt: skip
        item = {"supplier_id": vendor["id"], "product_id": bearing["id"], "price": {"amount": "41.00", "currency": "EUR"},
                "lead_time_days": 3, "preferred": True}  # fmt: skip
        await ok(await admin.post("/api/v1/supplier-items", json=item), 201)
        parts = {worn: [SparePart(sku=bearing["sku"], quantity=2)]}
        ctx = JobContext(db, database_url, Services(maintenance=_config(site, api.base_url, await _service_key(admin),
                                                                   w["code"], parts)))  # fmt: skip
        first = await score(ctx)
        [number] = first["opened"]
        assert first["backordered"] == {number: {bearing["sku"]: "1.000"}}
        [po_number] = first["requisitions"][number]
        again = await score(ctx)  # no second order, no second purchase order; it still waits
        assert (again["opened"], again["already_open"], again["requisitions"]) == ([], [number], first["requisitions"])
        drafts = await ok(await admin.get("/api/v1/purchase-orders", params={"supplier_id": vendor["id"]}))
        [po] = drafts["items"]
        assert (po["number"], po["status"], [(ln["product_id"], ln["quantity"]) for ln in po["lines"]]) == (
            po_number, "draft", [(bearing["id"], "1.000")])  # fmt: skip
        [order] = await _orders(admin, worn)
        assert (order["parts_ready"], order["spare_parts"][0]["reserved"]) == (False, "1.000")

        await ok(await admin.post(f"/api/v1/purchase-orders/{po['id']}/approve"))  # the planner
        await ok(await admin.post(f"/api/v1/purchase-orders/{po['id']}/receive", json={"line_no": 1, "quantity": "1"}))
        await fill_once(db)  # what the ERP's API processes do every few seconds
        [order] = await _orders(admin, worn)
        assert order["parts_ready"] is True
        assert (await stock(admin, bearing["id"], w["id"]))["reserved"] == "2.000"
        assert "backordered" not in await score(ctx)

        missing = {worn: [SparePart(sku=unique("NOSUCH"), quantity=1)]}
        unknown = _config(site, api.base_url, "fk_unused", w["code"], missing).model_copy(update={"cause": "other"})
        with pytest.raises(WorkOrderError, match="401"):  # a wrong key is refused before anything is sent
            await score(JobContext(db, database_url, Services(maintenance=unknown)))


async def test_configuration_from_file_and_environment(
    tmp_path: Path, db: Conn, database_url: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FACTORY_MAINTENANCE_CONFIG", "FACTORY_ERP_URL", "FACTORY_ERP_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert await score(JobContext(db, database_url, Services())) == {
        "skipped": "not configured (set FACTORY_MAINTENANCE_CONFIG)"
    }
    path = tmp_path / "maintenance.yaml"
    path.write_text(
        f"scoring: {{kind: {site}-bearing, assets: 'centrifugal%'}}\nfailure_prob: 0.7\nwarehouse: WH-2\n"
        "spare_parts:\n  centrifugal1: [{sku: BRG-6205, quantity: '2'}]\n"
    )
    monkeypatch.setenv("FACTORY_MAINTENANCE_CONFIG", str(path))
    monkeypatch.setenv("FACTORY_ERP_URL", "http://erp:8000")
    monkeypatch.setenv("FACTORY_ERP_API_KEY", "fk_from_env")
    services = Services.from_settings(Settings(), LiveConfig())  # what `factory analytics run` does
    config = services.maintenance
    assert config is not None
    assert (config.failure_prob, config.warehouse, config.erp_url) == (0.7, "WH-2", "http://erp:8000")
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == "fk_from_env"
    assert config.spare_parts["centrifugal1"][0].quantity == 2
    assert config.reason_cause() == f"predicted failure [{site}-bearing]"
    # no model of the kind promoted yet: the run is skipped, not failed
    assert "no model has been promoted" in (await score(JobContext(db, database_url, services)))["skipped"]
