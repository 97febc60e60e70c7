"""Billing: invoices with gapless numbers, payments, credit notes, the journal, trial balance
and receivables aging; and a state machine that checks the ledger after random operations.
Crediting is an SQL function (erp_api/sql/0011_sales_commands.sql): its note matches the
public model, replays under its key, leaves nothing behind when refused (not even a
number), and concurrent credits of one invoice never credit more than it has."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from erp_support import (
    customer,
    money,
    ok,
    order,
    product,
    receive,
    running,
    same_as_model,
    server_process,
    sync_client,
    unique,  # fmt: skip
    warehouse,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from erp_api.schemas.billing import InvoicePublic

pytestmark = pytest.mark.integration


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def _confirmed_order(client, lines: list[tuple[str, str, str]], terms: int = 30):  # type: ignore[no-untyped-def]
    """An order for fresh products (price, tax rate, quantity) with stock, confirmed."""
    c, w = await customer(client, terms), await warehouse(client)
    ids = []
    for price, rate, qty in lines:
        p = await product(client, price=price, tax_rate=rate, cost="1.00")
        await receive(client, p["id"], w["id"], qty)
        ids.append((p["id"], qty))
    o = await order(client, c["id"], w["id"], ids)
    return await ok(await client.post(f"/api/v1/orders/{o['id']}/confirm")), c


async def test_invoice_pay_and_credit(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        o, _ = await _confirmed_order(client, [("10.00", "0.19", "3"), ("2.50", "0.07", "4")])
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        assert re.fullmatch(rf"INV-{dt.datetime.now(dt.UTC).year}-\d{{6}}", invoice["number"])
        # 30.00 + 5.70 tax; 10.00 + 0.70 tax
        assert (invoice["net"]["amount"], invoice["tax"]["amount"], invoice["gross"]["amount"]) == (
            "40.00",
            "6.40",
            "46.40",
        )
        assert invoice["status"] == "open"
        assert invoice["outstanding"]["amount"] == "46.40"
        assert (await ok(await client.get(f"/api/v1/orders/{o['id']}")))["status"] == "invoiced"
        twice = await client.post("/api/v1/invoices", json={"order_id": o["id"]})
        assert twice.status_code == 409
        url = f"/api/v1/invoices/{invoice['id']}"
        part = await ok(await client.post(f"{url}/payments", json={"amount": money("20.00")}), 201)
        assert part["status"] == "partially_paid"
        assert part["outstanding"]["amount"] == "26.40"
        over = await client.post(f"{url}/payments", json={"amount": money("26.41")})
        assert over.status_code == 409
        assert over.json()["errors"][0]["field"] == "body.amount.amount"
        note = await ok(
            await client.post(
                f"{url}/credit-notes", json={"reason": "damaged", "lines": [{"line_no": 2, "quantity": "1"}]}
            ),
            201,
        )
        assert note["kind"] == "credit_note"
        assert note["number"].startswith("CN-")
        assert note["credited_invoice_id"] == invoice["id"]
        assert (note["net"]["amount"], note["tax"]["amount"]) == ("2.50", "0.18")
        rest = await ok(await client.get(url))
        assert rest["credited"]["amount"] == "2.68"
        assert rest["outstanding"]["amount"] == "23.72"
        too_much = await client.post(f"{url}/credit-notes", json={"reason": "all"})
        assert too_much.status_code == 409  # 43.72 left to credit but only 23.72 outstanding: no refunds
        paid = await ok(await client.post(f"{url}/payments", json={"amount": money("23.72"), "method": "card"}), 201)
        assert paid["status"] == "paid"
        assert paid["outstanding"]["amount"] == "0.00"
        assert len(paid["payments"]) == 2
        entries = await ok(
            await client.get(
                "/api/v1/ledger/entries", params={"reference_type": "invoice", "reference_id": invoice["id"]}
            )
        )
        assert [e["kind"] for e in entries["items"]] == ["invoice", "payment", "credit_note", "payment"]
        for entry in entries["items"]:
            assert sum(Decimal(x["debit"]["amount"]) for x in entry["lines"]) == sum(
                Decimal(x["credit"]["amount"]) for x in entry["lines"]
            )
        trial = await ok(await client.get("/api/v1/ledger/trial-balance"))
        assert trial["balanced"] is True
        assert trial["total_debit"] == trial["total_credit"]
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
        await db.execute("DELETE FROM erp.journal_line")


async def test_an_unbalanced_entry_cannot_be_committed(db: psycopg.AsyncConnection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):  # noqa: PT012 - raised at commit
        async with db.transaction():
            cur = await db.execute("INSERT INTO erp.journal_entry (kind, memo) VALUES ('test', 'x') RETURNING id")
            entry = (await cur.fetchone())[0]
            await db.execute(
                "INSERT INTO erp.journal_line (entry_id, account_code, debit) VALUES (%s, '1000', 5)", (entry,)
            )
            await db.execute(
                "INSERT INTO erp.journal_line (entry_id, account_code, credit) VALUES (%s, '4000', 4)", (entry,)
            )


async def test_invoice_numbers_are_gapless_under_concurrency(database_url: str) -> None:
    async with running(database_url, pool_max_size=12) as api, api.client("accountant") as client:
        async with api.client("planner") as planner:
            confirmed = [(await _confirmed_order(planner, [("5.00", "0.10", "1")]))[0] for _ in range(10)]
            draft = await order(planner, confirmed[0]["customer_id"], confirmed[0]["warehouse_id"],
                                [(confirmed[0]["lines"][0]["product_id"], "1")])  # fmt: skip
        calls = [client.post("/api/v1/invoices", json={"order_id": o["id"]}) for o in confirmed]
        calls.insert(5, client.post("/api/v1/invoices", json={"order_id": draft["id"]}))  # refused: not confirmed
        answers = await asyncio.gather(*calls)
        assert sorted(a.status_code for a in answers) == [201] * 10 + [409]
        numbers = sorted(int(a.json()["number"].rsplit("-", 1)[1]) for a in answers if a.status_code == 201)
        assert numbers == list(range(numbers[0], numbers[0] + 10))
        async with api.client("admin") as admin:
            after = (await _confirmed_order(admin, [("1.00", "0", "1")]))[0]
            nxt = await ok(await admin.post("/api/v1/invoices", json={"order_id": after["id"]}), 201)
        assert int(nxt["number"].rsplit("-", 1)[1]) == numbers[-1] + 1


async def test_receivables_aging_buckets(database_url: str) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        o, c = await _confirmed_order(client, [("100.00", "0", "1")], terms=10)
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        await ok(await client.post(f"/api/v1/invoices/{invoice['id']}/payments", json={"amount": money("40")}), 201)
        due = dt.date.fromisoformat(invoice["due_date"])
        for days, bucket in (
            (0, "current"),
            (15, "days_1_30"),
            (45, "days_31_60"),
            (75, "days_61_90"),
            (200, "over_90"),
        ):
            aging = await ok(
                await client.get(
                    "/api/v1/ledger/receivables-aging", params={"as_of": str(due + dt.timedelta(days=days))}
                )
            )
            row = next(r for r in aging["customers"] if r["customer_id"] == c["id"])
            assert row[bucket]["amount"] == "60.00", (days, row)
            assert row["total"]["amount"] == "60.00", (days, row)
        async with api.client("planner") as planner:
            assert (await planner.get("/api/v1/ledger/receivables-aging")).status_code == 403


async def _credit_effects(db: psycopg.AsyncConnection, invoice_id: int) -> tuple[Any, ...]:
    """An invoice's version and credited amount, its notes, their journal entries and events,
    and the last credit note number taken this year."""
    cur = await db.execute(
        "SELECT i.version, i.credited,"
        " (SELECT count(*) FROM erp.invoice n WHERE n.credited_invoice_id = i.id),"
        " (SELECT count(*) FROM erp.journal_entry e WHERE e.kind = 'credit_note' AND e.reference_id = i.id),"
        " (SELECT count(*) FROM erp.outbox o WHERE o.kind = 'invoice.credited' AND o.aggregate_id = i.id),"
        " (SELECT last FROM erp.document_sequence WHERE series = 'CN' AND year = i.year)"
        " FROM erp.invoice i WHERE i.id = %s",
        (invoice_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_credit_notes_render_as_the_public_model(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("admin") as client:
        o, _ = await _confirmed_order(client, [("0.3333", "0.19", "3"), ("19.99", "0", "1.5")])
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        url = f"/api/v1/invoices/{invoice['id']}"
        notes = []
        # Line 1 in thirds: 0.33 + 0.06 twice, then exactly what is left (0.34 + 0.07), no residue.
        for quantity in ("1", "1", "1"):
            answer = await client.post(f"{url}/credit-notes", json={"reason": "returned",
                                       "lines": [{"line_no": 1, "quantity": quantity}]})  # fmt: skip
            notes.append(await ok(answer, 201))
            assert answer.headers["location"] == f"/api/v1/invoices/{notes[-1]['id']}"
            assert answer.headers["etag"] == '"1"'
        assert [(n["net"]["amount"], n["tax"]["amount"]) for n in notes] == [
            ("0.33", "0.06"),
            ("0.33", "0.06"),
            ("0.34", "0.07"),
        ]
        rest = await ok(await client.post(f"{url}/credit-notes", json={"reason": "all the rest"}), 201)
        assert [(ln["line_no"], ln["quantity"], ln["net"]["amount"]) for ln in rest["lines"]] == [(2, "1.500", "29.99")]
        numbers = [int(n["number"].rsplit("-", 1)[1]) for n in [*notes, rest]]
        assert numbers == list(range(numbers[0], numbers[0] + 4))
        for note in [*notes, rest]:
            same_as_model(InvoicePublic, note)
            assert (note["kind"], note["status"], note["credited_invoice_id"]) == (
                "credit_note",
                "issued",
                invoice["id"],
            )
            assert note == await ok(await client.get(f"/api/v1/invoices/{note['id']}"))
        credited = await ok(await client.get(url))
        same_as_model(InvoicePublic, credited)
        assert (credited["status"], credited["credited"]["amount"], credited["outstanding"]["amount"]) == (
            "credited",
            invoice["gross"]["amount"],
            "0.00",
        )
        assert credited["version"] == invoice["version"] + 4
        nothing = await client.post(f"{url}/credit-notes", json={"reason": "again"})
        assert (nothing.status_code, nothing.json()["detail"]) == (
            409,
            f"nothing left to credit on {invoice['number']}",
        )
        of_a_note = await client.post(f"/api/v1/invoices/{rest['id']}/credit-notes", json={"reason": "x"})
        assert (of_a_note.status_code, of_a_note.json()["detail"]) == (409, "only invoices can be credited")
        trial = await ok(await client.get("/api/v1/ledger/trial-balance"))
        assert trial["balanced"] is True
    # The event is the invoice's, and carries the note as the reply did.
    cur = await db.execute(
        "SELECT payload FROM erp.outbox WHERE aggregate_type = 'invoice' AND aggregate_id = %s"
        " AND kind = 'invoice.credited' ORDER BY id",
        (invoice["id"],),
    )
    assert [r[0] for r in await cur.fetchall()] == [*notes, rest]
    cur = await db.execute(
        "SELECT e.memo, l.account_code, l.debit, l.credit FROM erp.journal_entry e"
        " JOIN erp.journal_line l ON l.entry_id = e.id WHERE e.kind = 'credit_note' AND e.reference_id = %s"
        " ORDER BY e.id, l.account_code",
        (invoice["id"],),
    )
    memo = f"credit note {rest['number']} for {invoice['number']}"
    assert (await cur.fetchall())[-2:] == [(memo, "1100", 0, Decimal("29.99")), (memo, "4000", Decimal("29.99"), 0)]


async def test_credit_notes_replay_and_refusals_leave_nothing(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url) as api, api.client("accountant") as client:
        async with api.client("admin") as admin:
            o, _ = await _confirmed_order(admin, [("10.00", "0.19", "3"), ("2.50", "0.07", "4")])
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        url = f"/api/v1/invoices/{invoice['id']}/credit-notes"
        key = {"Idempotency-Key": f"credit-{invoice['id']}"}
        body = {"reason": "damaged", "lines": [{"line_no": 2, "quantity": "1"}]}
        first = await client.post(url, json=body, headers=key)
        replay = await client.post(url, json=body, headers=key)
        assert (first.status_code, replay.status_code, replay.headers["idempotent-replayed"]) == (201, 201, "true")
        assert (replay.json(), replay.headers["location"], replay.headers["etag"]) == (
            first.json(),
            first.headers["location"],
            first.headers["etag"],
        )
        other = await client.post(url, json={**body, "reason": "other"}, headers=key)
        assert (other.status_code, other.json()["errors"][0]["field"]) == (409, "header.Idempotency-Key")
        after_one = await _credit_effects(db, invoice["id"])
        assert after_one[1:5] == (Decimal("2.68"), 1, 1, 1)
        await ok(await client.post(f"/api/v1/invoices/{invoice['id']}/payments", json={"amount": money("40.00")}), 201)
        after_pay = await _credit_effects(db, invoice["id"])
        refusals = [
            ({"reason": "r", "lines": [{"line_no": 9, "quantity": "1"}, {"line_no": 2, "quantity": "3.001"}]}, None,
             422, "body.lines: line 2: only 3.000 left to credit"),
            ({"reason": "r", "lines": [{"line_no": 9, "quantity": "1"}, {"line_no": 1, "quantity": "1"}]}, None,
             422, f"body.lines: no line 9 on invoice {invoice['number']}"),
            ({"reason": "r"}, None,
             409, "body.lines: credit of 43.72 exceeds the outstanding 3.72 (refunds are not supported)"),
            ({"reason": "r"}, {"If-Match": '"1"'},
             412, f"the resource is at version {after_pay[0]}, not 1; read it again"),
            ({"reason": "r"}, {"If-Match": '"99999999999"'},
             412, "no resource here ever reaches version 99999999999; read it again"),
        ]  # fmt: skip
        for n, (refused, if_match, status, detail) in enumerate(refusals):
            headers = {"Idempotency-Key": f"refused-{invoice['id']}-{n}", **(if_match or {})}
            answer = await client.post(url, json=refused, headers=headers)
            assert (answer.status_code, answer.json()["detail"]) == (status, detail)
        missing = await client.post("/api/v1/invoices/999999999/credit-notes", json={"reason": "r"})
        assert (missing.status_code, missing.json()["detail"]) == (404, "no invoice with id 999999999")
        # Nothing changed, no number was used up, and the refused keys are free for a retry.
        assert await _credit_effects(db, invoice["id"]) == after_pay
        cur = await db.execute(
            "SELECT count(*) FROM erp.idempotency_key WHERE key LIKE %s", (f"refused-{invoice['id']}-%",)
        )
        assert await cur.fetchone() == (0,)
        last = await ok(await client.post(url, json={"reason": "r", "lines": [{"line_no": 1, "quantity": "0.1"}]}), 201)
        assert int(last["number"].rsplit("-", 1)[1]) == after_pay[5] + 1


async def test_concurrent_credits_of_one_invoice_credit_it_once(database_url: str, db: psycopg.AsyncConnection) -> None:
    async with running(database_url, pool_max_size=10) as api, api.client("admin") as client:
        o, _ = await _confirmed_order(client, [("10.00", "0.19", "3")])
        invoice = await ok(await client.post("/api/v1/invoices", json={"order_id": o["id"]}), 201)
        url = f"/api/v1/invoices/{invoice['id']}/credit-notes"
        answers = await asyncio.gather(*(client.post(url, json={"reason": f"all {i}"}) for i in range(6)))
        assert sorted(a.status_code for a in answers) == [201] + [409] * 5
        assert {a.json()["detail"] for a in answers if a.status_code == 409} == {
            f"nothing left to credit on {invoice['number']}"
        }
        (note,) = [a.json() for a in answers if a.status_code == 201]
        assert note["gross"] == invoice["gross"]
    version, credited, notes, entries, events, last = await _credit_effects(db, invoice["id"])
    assert (version, str(credited), notes, entries, events) == (2, invoice["gross"]["amount"], 1, 1, 1)
    assert last == int(note["number"].rsplit("-", 1)[1])


class LedgerMachine(RuleBasedStateMachine):
    """Random receipts, adjustments, orders, shipments, cancellations, invoices, payments and
    credit notes through the API; after each step the journal must balance, each account must
    have moved exactly as the model says, and stock must match the model."""

    base_url = ""

    @initialize()
    def setup(self) -> None:
        self.http = sync_client(self.base_url)
        self.w = self.http.post("/api/v1/warehouses", json={"code": unique("WH"), "name": "sm"}).json()["id"]
        self.c = self.http.post("/api/v1/customers", json={"name": unique("sm")}).json()["id"]
        self.products = []
        for price, rate, cost in (("3.3333", "0.19", "1.1111"), ("0.05", "0.07", "0.0333"), ("125.00", "0", "80.5")):
            body = {
                "sku": unique("SM"),
                "name": "sm",
                "uom": "ea",
                "price": money(price),
                "cost": money(cost),
                "tax_rate": rate,
            }
            self.products.append(self.http.post("/api/v1/products", json=body).json())
        self.stock = {p["id"]: [Decimal(0), Decimal(0)] for p in self.products}
        self.orders: list[dict] = []
        self.invoices: list[dict] = []
        self.start = self._balances()
        self.expected: dict[str, Decimal] = defaultdict(Decimal)
        for i in range(len(self.products)):  # some stock to start with, so orders confirm early
            self.receive(i, 8)

    def teardown(self) -> None:
        if hasattr(self, "http"):
            self.http.close()

    def _balances(self) -> dict[str, Decimal]:
        trial = self.http.get("/api/v1/ledger/trial-balance").json()
        assert trial["balanced"], trial
        return {a["code"]: Decimal(a["debit"]["amount"]) - Decimal(a["credit"]["amount"]) for a in trial["accounts"]}

    def _post(self, account_amounts: list[tuple[str, Decimal]]) -> None:
        for account, amount in account_amounts:
            self.expected[account] += cents(amount)

    @rule(i=st.integers(0, 2), qty=st.integers(1, 20))
    def receive(self, i: int, qty: int) -> None:
        p = self.products[i]
        r = self.http.post(
            "/api/v1/inventory/receipts", json={"product_id": p["id"], "warehouse_id": self.w, "quantity": str(qty)}
        )
        assert r.status_code == 201, r.text
        self.stock[p["id"]][0] += qty
        value = Decimal(p["cost"]["amount"]) * qty
        self._post([("1200", value), ("2000", -value)])

    @rule(i=st.integers(0, 2), delta=st.integers(-6, 6).filter(bool))
    def adjust(self, i: int, delta: int) -> None:
        p = self.products[i]
        on_hand, reserved = self.stock[p["id"]]
        r = self.http.post("/api/v1/inventory/adjustments",
                           json={"product_id": p["id"], "warehouse_id": self.w, "delta": str(delta), "reason": "sm"})  # fmt: skip
        if on_hand + delta < reserved:
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 201, r.text
        self.stock[p["id"]][0] += delta
        value = Decimal(p["cost"]["amount"]) * delta
        self._post([("1200", value), ("5100", -value)])

    @rule(picks=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4)), min_size=1, max_size=3))
    def order_and_confirm(self, picks: list[tuple[int, int]]) -> None:
        lines = [(self.products[i]["id"], q) for i, q in picks]
        body = {
            "customer_id": self.c,
            "warehouse_id": self.w,
            "lines": [{"product_id": p, "quantity": str(q)} for p, q in lines],
        }
        o = self.http.post("/api/v1/orders", json=body).json()
        need: dict[int, int] = defaultdict(int)
        for p, q in lines:
            need[p] += q
        fits = all(self.stock[p][0] - self.stock[p][1] >= q for p, q in need.items())
        r = self.http.post(f"/api/v1/orders/{o['id']}/confirm")
        assert r.status_code == (200 if fits else 409), r.text
        if fits:
            for p, q in need.items():
                self.stock[p][1] += q
            self.orders.append({"id": o["id"], "lines": lines, "state": "confirmed", "shipped": False})

    @precondition(lambda self: any(o["state"] != "cancelled" and not o["shipped"] for o in self.orders))
    @rule(k=st.integers(0, 100))
    def ship(self, k: int) -> None:
        candidates = [o for o in self.orders if o["state"] != "cancelled" and not o["shipped"]]
        o = candidates[k % len(candidates)]
        r = self.http.post(f"/api/v1/orders/{o['id']}/ship")
        assert r.status_code == 200, r.text
        o["shipped"] = True
        cost = Decimal(0)
        for p, q in o["lines"]:
            self.stock[p][0] -= q
            self.stock[p][1] -= q
            cost += Decimal(next(x for x in self.products if x["id"] == p)["cost"]["amount"]) * q
        self._post([("5000", cents(cost)), ("1200", -cents(cost))])

    @precondition(lambda self: any(o["state"] == "confirmed" and not o["shipped"] for o in self.orders))
    @rule(k=st.integers(0, 100))
    def cancel(self, k: int) -> None:
        candidates = [o for o in self.orders if o["state"] == "confirmed" and not o["shipped"]]
        o = candidates[k % len(candidates)]
        assert self.http.post(f"/api/v1/orders/{o['id']}/cancel").status_code == 200
        o["state"] = "cancelled"
        for p, q in o["lines"]:
            self.stock[p][1] -= q

    @precondition(lambda self: any(o["state"] == "confirmed" for o in self.orders))
    @rule(k=st.integers(0, 100))
    def invoice(self, k: int) -> None:
        candidates = [o for o in self.orders if o["state"] == "confirmed"]
        o = candidates[k % len(candidates)]
        r = self.http.post("/api/v1/invoices", json={"order_id": o["id"]})
        assert r.status_code == 201, r.text
        inv = r.json()
        o["state"] = "invoiced"
        net = sum(
            cents(Decimal(q) * Decimal(next(x for x in self.products if x["id"] == p)["price"]["amount"]))
            for p, q in o["lines"]
        )
        assert Decimal(inv["net"]["amount"]) == net
        gross, tax = Decimal(inv["gross"]["amount"]), Decimal(inv["tax"]["amount"])
        self._post([("1100", gross), ("4000", -net), ("2100", -tax)])
        self.invoices.append(inv)

    @precondition(lambda self: any(Decimal(i["outstanding"]["amount"]) > 0 for i in self.invoices))
    @rule(k=st.integers(0, 100), share=st.sampled_from(["0.01", "0.5", "1"]))
    def pay(self, k: int, share: str) -> None:
        open_ = [i for i in self.invoices if Decimal(i["outstanding"]["amount"]) > 0]
        inv = open_[k % len(open_)]
        amount = max(cents(Decimal(inv["outstanding"]["amount"]) * Decimal(share)), Decimal("0.01"))
        r = self.http.post(f"/api/v1/invoices/{inv['id']}/payments", json={"amount": money(amount)})
        assert r.status_code == 201, r.text
        inv.update(r.json())
        self._post([("1000", amount), ("1100", -amount)])

    @precondition(lambda self: any(Decimal(i["outstanding"]["amount"]) > 0 for i in self.invoices))
    @rule(k=st.integers(0, 100))
    def credit_one_unit(self, k: int) -> None:
        open_ = [i for i in self.invoices if Decimal(i["outstanding"]["amount"]) > 0]
        inv = open_[k % len(open_)]
        r = self.http.post(
            f"/api/v1/invoices/{inv['id']}/credit-notes",
            json={"reason": "sm", "lines": [{"line_no": 1, "quantity": "1"}]},
        )
        if r.status_code in (409, 422):  # more than outstanding, or nothing left on line 1
            return
        assert r.status_code == 201, r.text
        note = r.json()
        self._post([("4000", Decimal(note["net"]["amount"])), ("2100", Decimal(note["tax"]["amount"])),
                    ("1100", -Decimal(note["gross"]["amount"]))])  # fmt: skip
        inv.update(self.http.get(f"/api/v1/invoices/{inv['id']}").json())

    @invariant()
    def ledger_matches_the_model(self) -> None:
        now = self._balances()
        for account in set(now) | set(self.expected):
            moved = now.get(account, Decimal(0)) - self.start.get(account, Decimal(0))
            assert moved == self.expected.get(account, Decimal(0)), (account, moved, dict(self.expected))

    @invariant()
    def stock_matches_the_model(self) -> None:
        for pid, (on_hand, reserved) in self.stock.items():
            s = self.http.get(f"/api/v1/inventory/stock/{pid}/{self.w}").json()
            assert (Decimal(s["on_hand"]), Decimal(s["reserved"])) == (on_hand, reserved)
        for inv in self.invoices:
            assert Decimal(inv["outstanding"]["amount"]) == (Decimal(inv["gross"]["amount"]) - Decimal(inv["paid"]["amount"])
                                                            - Decimal(inv["credited"]["amount"]))  # fmt: skip


def test_ledger_balances_after_random_operations(database_url: str) -> None:
    with server_process(database_url) as base:
        LedgerMachine.base_url = base
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=12, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
            ),
        )
