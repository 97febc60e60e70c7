"""Products, customers and warehouses: pagination, problem documents, idempotency, ETags, and
the commands as SQL functions (erp_api/sql/0013_master_data_commands.sql): documents that match
the public models, replays, refusals that leave nothing behind, concurrent changes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from typing import Any

import psycopg
import pytest
from erp_support import customer, money, ok, product, running, same_as_model, unique, warehouse
from psycopg_pool import AsyncConnectionPool

from erp_api.retention import purge_forever, purge_once
from erp_api.schemas.catalog import CustomerPublic, ProductPublic, WarehousePublic

pytestmark = pytest.mark.integration


async def test_product_roundtrip_with_exact_money_and_bom(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        part = await product(client, price="0.1000", cost="0.0500")
        assert part["price"] == {"amount": "0.1000", "currency": "EUR"}
        made = await product(client, price="19.99", bom=[{"component_id": part["id"], "quantity": "2.5"}])
        got = await client.get(f"/api/v1/products/{made['id']}")
        assert got.status_code == 200
        assert got.headers["etag"] == '"1"'
        body = got.json()
        assert body["bom"] == [{"component_id": part["id"], "quantity": "2.500"}]
        assert body["price"] == {"amount": "19.9900", "currency": "EUR"}
        assert body["tax_rate"] == "0.1900"


async def test_problem_documents_name_the_field_and_reason(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        bad = await client.post("/api/v1/products", json={"sku": "ok-1", "name": "x", "uom": "ea",
                                                          "price": money("-1"), "tax_rate": "0.2"})  # fmt: skip
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        problem = bad.json()
        assert problem["status"] == 422
        assert problem["type"].endswith("validation")
        assert problem["errors"][0]["field"] == "body.price.amount"
        assert "greater than or equal to 0" in problem["errors"][0]["reason"]
        usd = await client.post("/api/v1/products", json={"sku": unique("S"), "name": "x", "uom": "ea",
                                                          "price": {"amount": "1", "currency": "USD"}, "tax_rate": "0"})  # fmt: skip
        assert usd.status_code == 422
        assert usd.json()["errors"][0]["field"] == "body.price.currency"
        first = await product(client)
        dup = await client.post("/api/v1/products", json={"sku": first["sku"], "name": "again", "uom": "ea",
                                                          "price": money("1"), "tax_rate": "0"})  # fmt: skip
        assert dup.status_code == 409
        assert dup.json()["errors"] == [{"field": "sku", "reason": "a product with this SKU already exists"}]
        missing = await client.post("/api/v1/products", json={"sku": unique("S"), "name": "x", "uom": "ea",
                                                              "price": money("1"), "tax_rate": "0",
                                                              "bom": [{"component_id": 2**62, "quantity": "1"}]})  # fmt: skip
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["field"] == "bom"
        absent = await client.get(f"/api/v1/products/{2**62}")
        assert absent.status_code == 404
        assert absent.json()["title"] == "Not found"
        nowhere = await client.get("/api/v1/no-such-thing")
        assert nowhere.status_code == 404
        assert nowhere.headers["content-type"] == "application/problem+json"


async def test_cursor_pagination_filtering_and_sorting(database_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    async with running(database_url) as api, api.client("planner") as client:
        for i in range(7):
            body = {"sku": f"PG-{tag}-{i}", "name": f"Pager {tag} {6 - i}", "uom": "kg",
                    "price": money("1"), "tax_rate": "0"}  # fmt: skip
            await ok(await client.post("/api/v1/products", json=body), 201)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"q": f"pager {tag}", "limit": 3, "sort": "-name"}
            if cursor:
                params["cursor"] = cursor
            page = await ok(await client.get("/api/v1/products", params=params))
            seen += [p["name"] for p in page["items"]]
            assert page["limit"] == 3
            assert len(page["items"]) <= 3
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"Pager {tag} {i}" for i in range(6, -1, -1)]
        default = await ok(await client.get("/api/v1/products"))
        assert default["limit"] == 50
        too_big = await client.get("/api/v1/products", params={"limit": 201})
        assert too_big.status_code == 422
        assert too_big.json()["errors"][0]["field"] == "query.limit"
        other_sort = await client.get("/api/v1/products", params={"cursor": cursor or page_cursor(), "sort": "sku"})
        assert other_sort.status_code == 422
        assert other_sort.json()["errors"][0]["field"] == "query.cursor"
        junk = await client.get("/api/v1/products", params={"cursor": "!!not-a-cursor"})
        assert junk.status_code == 422
        by_sku = await ok(await client.get("/api/v1/products", params={"sku": f"PG-{tag}-3"}))
        assert [p["sku"] for p in by_sku["items"]] == [f"PG-{tag}-3"]


def page_cursor() -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": "-name", "v": "x", "i": 1}).encode()).decode()


async def test_idempotency_key_replays_and_refuses_a_different_body(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        key = {"Idempotency-Key": unique("create-wh")}
        body = {"code": unique("WH"), "name": "Spare parts"}
        first = await client.post("/api/v1/warehouses", json=body, headers=key)
        again = await client.post("/api/v1/warehouses", json=body, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        other = await client.post("/api/v1/warehouses", json={**body, "name": "Other"}, headers=key)
        assert other.status_code == 409
        assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
        # keys belong to their caller: another user may use the same key for their own request
        async with api.client("admin") as admin:
            mine = await admin.post("/api/v1/warehouses", json={**body, "code": unique("WH")}, headers=key)
            assert mine.status_code == 201
            assert mine.json()["id"] != first.json()["id"]


async def test_concurrent_replays_create_exactly_one(database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    async with running(database_url) as api, api.client("planner") as client:
        key = {"Idempotency-Key": unique("burst")}
        body = {"name": unique("Customer"), "payment_terms_days": 14}
        answers = await asyncio.gather(*(client.post("/api/v1/customers", json=body, headers=key) for _ in range(8)))
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        cur = await db.execute("SELECT count(*) FROM erp.customer WHERE name = %s", (body["name"],))
        assert (await cur.fetchone())[0] == 1


async def test_a_refused_request_can_be_retried_under_the_same_key(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        taken = await warehouse(client)
        key = {"Idempotency-Key": unique("retry")}
        refused = await client.post("/api/v1/warehouses", json={"code": taken["code"], "name": "x"}, headers=key)
        assert refused.status_code == 409
        fixed = await client.post("/api/v1/warehouses", json={"code": taken["code"], "name": "x"}, headers=key)
        assert fixed.status_code == 409
        assert "idempotent-replayed" not in fixed.headers


async def test_etag_and_if_match_on_updates(database_url: str) -> None:
    async with running(database_url) as api, api.client("accountant") as client:
        c = await customer(client)
        url = f"/api/v1/customers/{c['id']}"
        missing = await client.patch(url, json={"payment_terms_days": 60})
        assert missing.status_code == 428
        updated = await client.patch(url, json={"payment_terms_days": 60}, headers={"If-Match": '"1"'})
        assert updated.status_code == 200
        assert updated.headers["etag"] == '"2"'
        assert updated.json()["payment_terms_days"] == 60
        stale = await client.patch(url, json={"payment_terms_days": 90}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        nulled = await client.patch(url, json={"name": None}, headers={"If-Match": '"2"'})
        assert nulled.status_code == 422
        assert nulled.json()["errors"][0]["field"] == "body.name"
        cleared = await client.patch(url, json={"email": None}, headers={"If-Match": '"2"'})
        assert cleared.status_code == 200
        assert cleared.json()["email"] is None
        assert (await client.get(url)).headers["etag"] == '"3"'


async def test_product_update_replaces_the_bom(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        a, b = await product(client), await product(client)
        made = await product(client, bom=[{"component_id": a["id"], "quantity": "1"}])
        url = f"/api/v1/products/{made['id']}"
        changed = await client.patch(url, headers={"If-Match": '"1"'},
                                     json={"bom": [{"component_id": b["id"], "quantity": "3"}], "price": money("2.5")})  # fmt: skip
        assert changed.status_code == 200, changed.text
        assert changed.json()["bom"] == [{"component_id": b["id"], "quantity": "3.000"}]
        assert changed.json()["price"]["amount"] == "2.5000"
        itself = await client.patch(
            url, headers={"If-Match": '"2"'}, json={"bom": [{"component_id": made["id"], "quantity": "1"}]}
        )
        assert itself.status_code == 422
        assert itself.json()["errors"][0]["field"] == "bom"


async def test_old_idempotency_records_and_published_events_are_purged(database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    old, fresh = unique("old"), unique("fresh")
    await db.execute("INSERT INTO erp.idempotency_key (principal, key, request_hash, created_at)"
                     " VALUES ('p', %s, '\\x00', now() - interval '8 days'), ('p', %s, '\\x00', now())", (old, fresh))  # fmt: skip
    cur = await db.execute(
        "INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload, created_at, published_at) VALUES"
        " ('test', 1, 'test.old', '{}', now() - interval '9 days', now() - interval '8 days'),"  # published long ago
        " ('test', 2, 'test.unpublished', '{}', now() - interval '30 days', NULL),"  # never published: kept
        " ('test', 3, 'test.recent', '{}', now() - interval '2 days', now() - interval '2 days')"
        " RETURNING id"
    )
    gone, unpublished, recent = [row[0] for row in await cur.fetchall()]
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        async with pool.connection() as conn:
            deleted = await purge_once(conn, outbox_days=7)
        assert deleted["idempotency records"] >= 1
        assert deleted["published outbox events"] >= 1
        task = asyncio.create_task(purge_forever(pool, outbox_days=1, every_s=3600))  # and the loop runs it at start
        for _ in range(100):
            cur = await db.execute("SELECT count(*) FROM erp.outbox WHERE id = %s", (recent,))
            if (await cur.fetchone())[0] == 0:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    cur = await db.execute("SELECT array_agg(key) FROM erp.idempotency_key WHERE key IN (%s, %s)", (old, fresh))
    assert (await cur.fetchone())[0] == [fresh]
    cur = await db.execute(
        "SELECT array_agg(id ORDER BY id) FROM erp.outbox WHERE id = ANY(%s)", ([gone, unpublished, recent],)
    )
    assert (await cur.fetchone())[0] == [unpublished]


async def test_text_the_database_cannot_store_is_a_422_not_a_500(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        nul = await client.post("/api/v1/customers", json={"name": "a\u0000b"})
        assert nul.status_code == 422
        assert nul.json()["errors"][0]["field"] == "body.name"
        query = await client.get("/api/v1/products", params={"q": "a\u0000"})
        assert query.status_code == 422
        assert (await client.delete("/api/v1/auth/api-keys/a%00b")).status_code == 422
        for value in (True, "a\u0000", "not-a-time"):
            raw = json.dumps({"s": "created_at", "v": value, "i": 1}).encode()
            cursor = base64.urlsafe_b64encode(raw).decode()
            got = await client.get("/api/v1/products", params={"sort": "created_at", "cursor": cursor})
            assert got.status_code == 422, (value, got.text)
            assert got.headers["content-type"] == "application/problem+json"


async def test_default_id_order_pages_through_everything(database_url: str) -> None:
    async with running(database_url) as api, api.client("planner") as client:
        made = [await warehouse(client) for _ in range(5)]
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = await ok(await client.get("/api/v1/warehouses", params=params))
            seen += [w["id"] for w in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen))
        assert {w["id"] for w in made} <= set(seen)


# The master data commands as SQL functions (erp_api/sql/0013_master_data_commands.sql).


async def _events(db: psycopg.AsyncConnection, aggregate: str, row_id: int) -> list[tuple[str, Any]]:
    cur = await db.execute(
        "SELECT kind, payload FROM erp.outbox WHERE aggregate_type = %s AND aggregate_id = %s ORDER BY id",
        (aggregate, row_id),
    )
    return list(await cur.fetchall())


async def test_master_data_documents_render_as_the_public_models(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        part = await product(client, price="0.0001", cost="0")
        made = await ok(await client.post("/api/v1/products", json={
            "sku": unique("DOC"), "name": 'Sugar "fine" \\ 50 kg\tbag ü €', "uom": "kg",
            "price": money("12345678.9999"),
            "tax_rate": "0.0700", "reorder_point": "12.5", "ideal_rate": "240",
            "bom": [{"component_id": part["id"], "quantity": "0.001"}]}), 201)  # fmt: skip
        assert made["cost"] == money("0.0000")
        assert made["ideal_rate"] == "240.000"
        assert part["ideal_rate"] is None
        changed = await ok(await client.patch(f"/api/v1/products/{made['id']}", headers={"If-Match": '"1"'},
                                              json={"active": False, "bom": []}))  # fmt: skip
        plain = await ok(await client.post("/api/v1/customers", json={"name": unique("Plain")}), 201)
        full = await ok(await client.post("/api/v1/customers", json={
            "name": unique("Süßwaren \"Nord\""), "email": "ap@example.com", "tax_id": "DE123",
            "address": "Line 1\nLine 2\r\n\u0001", "payment_terms_days": 0}), 201)  # fmt: skip
        renamed = await ok(await client.patch(f"/api/v1/customers/{full['id']}", headers={"If-Match": '"1"'},
                                              json={"address": None, "tax_id": "DE456"}))  # fmt: skip
        assert (renamed["address"], renamed["tax_id"], renamed["email"]) == (None, "DE456", "ap@example.com")
        store = await ok(await client.post("/api/v1/warehouses", json={"code": unique("W.1"), "name": "Bays <1>"}), 201)
        moved = await ok(await client.patch(f"/api/v1/warehouses/{store['id']}", headers={"If-Match": '"1"'},
                                            json={"name": "Bays & docks"}))  # fmt: skip
        for model, url, docs in (
            (ProductPublic, "/api/v1/products", [part, made, changed]),
            (CustomerPublic, "/api/v1/customers", [plain, full, renamed]),
            (WarehousePublic, "/api/v1/warehouses", [store, moved]),
        ):
            for doc in docs:
                same_as_model(model, doc)
            latest = docs[-1]
            assert await ok(await client.get(f"{url}/{latest['id']}")) == latest
            page = await ok(await client.get(url, params={"sort": "-id", "limit": 200}))
            listed = {item["id"]: item for item in page["items"]}
            for item in page["items"]:
                same_as_model(model, item)
            assert listed[latest["id"]] == latest
    # The events carry the same documents the replies did.
    assert await _events(db, "product", made["id"]) == [("product.created", made), ("product.updated", changed)]
    assert await _events(db, "customer", full["id"]) == [("customer.created", full), ("customer.updated", renamed)]
    assert await _events(db, "warehouse", store["id"]) == [("warehouse.created", store), ("warehouse.updated", moved)]


@pytest.mark.parametrize(
    ("url", "body", "other"),
    [
        ("/api/v1/products", {"name": "Replayed", "uom": "ea", "price": money("3"), "tax_rate": "0.19"},
         {"name": "Another"}),
        ("/api/v1/customers", {"payment_terms_days": 10}, {"payment_terms_days": 11}),
        ("/api/v1/warehouses", {"name": "Replayed"}, {"name": "Another"}),
    ],
)  # fmt: skip
async def test_each_create_replays_its_recorded_reply(
    database_url: str, db: psycopg.AsyncConnection, url: str, body: dict[str, Any], other: dict[str, Any]
) -> None:
    names = {"/api/v1/products": "sku", "/api/v1/customers": "name", "/api/v1/warehouses": "code"}
    body = {**body, names[url]: unique("RP")}
    async with running(database_url) as api, api.client("admin") as client:
        key = {"Idempotency-Key": unique("create")}
        first = await client.post(url, json=body, headers=key)
        again = await client.post(url, json=body, headers=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        for header in ("etag", "location", "content-type"):
            assert again.headers[header] == first.headers[header]
        assert first.headers["location"] == f"{url}/{first.json()['id']}"
        refused = await client.post(url, json={**body, **other}, headers=key)
        assert refused.status_code == 409
        assert refused.json()["errors"][0]["field"] == "header.Idempotency-Key"
    aggregate = url.rsplit("/", 1)[1].removesuffix("s")
    assert [kind for kind, _ in await _events(db, aggregate, first.json()["id"])] == [f"{aggregate}.created"]


async def test_a_refused_command_leaves_nothing_behind(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        part = await product(client)
        sku, key = unique("GONE"), {"Idempotency-Key": unique("refused")}
        body = {"sku": sku, "name": "x", "uom": "ea", "price": money("1"), "tax_rate": "0",
                "bom": [{"component_id": part["id"], "quantity": "1"},
                        {"component_id": 2**62, "quantity": "1"}]}  # fmt: skip
        missing = await client.post("/api/v1/products", json=body, headers=key)
        assert missing.status_code == 422
        assert missing.json()["errors"] == [{"field": "bom", "reason": "a component product does not exist"}]
        usd = await client.post("/api/v1/products", json={**body, "cost": {"amount": "1", "currency": "USD"}})
        assert usd.status_code == 422
        assert usd.json()["errors"] == [{"field": "body.cost.currency", "reason": "this ledger keeps EUR; got USD"}]
        cur = await db.execute("SELECT count(*) FROM erp.product WHERE sku = %s", (sku,))
        assert (await cur.fetchone())[0] == 0
        cur = await db.execute("SELECT count(*) FROM erp.idempotency_key WHERE key = %s", (key["Idempotency-Key"],))
        assert (await cur.fetchone())[0] == 0
        # The key was not used up: the corrected request runs under it.
        fixed = await client.post("/api/v1/products", json={**body, "bom": body["bom"][:1]}, headers=key)
        assert fixed.status_code == 201
        assert "idempotent-replayed" not in fixed.headers

        url = f"/api/v1/products/{part['id']}"
        for change, field in (
            ({"price": money("9"), "bom": [{"component_id": part["id"], "quantity": "1"}]}, "bom"),
            ({"bom": [], "price": {"amount": "9", "currency": "USD"}}, "body.price.currency"),
            ({"name": "kept", "ideal_rate": None}, "body.ideal_rate"),
        ):
            refused = await client.patch(url, json=change, headers={"If-Match": '"1"'})
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["field"] == field
        assert await ok(await client.get(url)) == part
        assert [kind for kind, _ in await _events(db, "product", part["id"])] == ["product.created"]


async def test_update_refusals_in_the_order_they_always_came(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        p, c, w = await product(client), await customer(client), await warehouse(client)
        usd = {"price": {"amount": "1", "currency": "USD"}}
        absent = await client.patch(f"/api/v1/products/{2**62}", json=usd, headers={"If-Match": '"1"'})
        assert absent.status_code == 404
        assert absent.json()["detail"] == f"no product with id {2**62}"
        stale = await client.patch(f"/api/v1/products/{p['id']}", json=usd, headers={"If-Match": '"2"'})
        assert stale.status_code == 412
        huge = '"99999999999999999999"'
        for url in (f"/api/v1/products/{p['id']}", f"/api/v1/customers/{c['id']}", f"/api/v1/warehouses/{w['id']}"):
            beyond = await client.patch(url, json={"name": unique("N")}, headers={"If-Match": huge})
            assert beyond.status_code == 412, beyond.text
            assert (
                beyond.json()["detail"] == "no resource here ever reaches version 99999999999999999999; read it again"
            )
            empty = await client.patch(url, json={}, headers={"If-Match": '"1"'})
            assert empty.status_code == 422
            assert empty.json()["errors"][0]["field"] == "body"
            assert (await client.patch(url, json={"name": "x"})).status_code == 428
        for url, what in ((f"/api/v1/customers/{2**62}", "customer"), (f"/api/v1/warehouses/{2**62}", "warehouse")):
            gone = await client.patch(url, json={"name": "x"}, headers={"If-Match": '"1"'})
            assert gone.status_code == 404
            assert gone.json()["detail"] == f"no {what} with id {2**62}"
        other = await customer(client)
        taken = await client.patch(f"/api/v1/customers/{c['id']}", json={"name": other["name"]},
                                   headers={"If-Match": '"1"'})  # fmt: skip
        assert taken.status_code == 409
        assert taken.json()["errors"] == [{"field": "name", "reason": "a customer with this name already exists"}]


async def test_concurrent_updates_under_one_etag_change_once(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        p = await product(client)
        url = f"/api/v1/products/{p['id']}"
        answers = await asyncio.gather(*(
            client.patch(url, json={"price": money(str(i))}, headers={"If-Match": '"1"'}) for i in range(1, 7)
        ))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [200] + [412] * 5
        winner = next(a.json() for a in answers if a.status_code == 200)
        assert winner["version"] == 2
        assert await ok(await client.get(url)) == winner
    assert [kind for kind, _ in await _events(db, "product", p["id"])] == ["product.created", "product.updated"]


async def test_concurrent_creates_of_one_sku_make_one_product(database_url: str, db: psycopg.AsyncConnection) -> None:
    sku = unique("RACE")
    body = {"sku": sku, "name": "raced", "uom": "ea", "price": money("1"), "tax_rate": "0"}
    async with running(database_url) as api, api.client("admin") as client:
        answers = await asyncio.gather(*(client.post("/api/v1/products", json=body) for _ in range(6)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5
    for lost in (a for a in answers if a.status_code == 409):
        assert lost.json()["errors"] == [{"field": "sku", "reason": "a product with this SKU already exists"}]
    made = next(a.json() for a in answers if a.status_code == 201)
    cur = await db.execute("SELECT count(*) FROM erp.product WHERE sku = %s", (sku,))
    assert (await cur.fetchone())[0] == 1
    assert [kind for kind, _ in await _events(db, "product", made["id"])] == ["product.created"]


async def test_a_product_change_does_not_wait_for_rows_that_refer_to_it(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    """A foreign-key check (an order line, a stock row, a BOM line being written) holds a KEY
    SHARE lock on the product until its transaction ends; a PATCH must not queue behind it."""
    async with running(database_url) as api, api.client("admin") as client:
        p = await product(client)
        async with db.transaction():
            await db.execute("SELECT 1 FROM erp.product WHERE id = %s FOR KEY SHARE", (p["id"],))
            changed = await asyncio.wait_for(
                client.patch(f"/api/v1/products/{p['id']}", json={"price": money("7")}, headers={"If-Match": '"1"'}),
                timeout=10,
            )
            assert changed.status_code == 200, changed.text
