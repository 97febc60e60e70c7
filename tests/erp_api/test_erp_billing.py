"""Billing: invoices with gapless numbers, payments, credit notes, the journal, trial balance
and receivables aging; and a state machine that checks the ledger after random operations."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

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
