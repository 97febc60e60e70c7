"""Schemathesis over the whole OpenAPI document against the real server and database: no
request it can generate may cause a server error, every response must match the document
(status codes, content types, headers, bodies), invalid requests must be refused, and
schema-valid requests must be accepted: the document is exactly as strict as the validation.

A schema-valid request may still be refused by a business rule, with these statuses and no
others (``ACCEPTED``; never 422, which would mean the document lets through what the
validation refuses):

- 401, 403: credentials the caller does not have (the fuzzer signs in as admin; schemathesis
  also tries without).
- 404: a path id that does not exist (``/orders/{order_id}`` for an order nobody made).
- 409: the state does not allow it (confirm an order that is not a draft, not enough stock,
  an Idempotency-Key reused for another request or, on a setpoint, still in progress, a
  duplicate SKU).
- 412: If-Match names a version the resource is not at (stale, a weak ETag, or * when
  checked against nothing: any quoted number is well formed, few are current).
- 504 ``device-timeout``, and only that problem on ``POST /setpoints``: the server has a real
  broker, and no edge agent runs for the sites and devices the fuzzer makes up, so every
  schema-valid setpoint waits out the (short) setpoint timeout and gets the answer for a
  device that is offline. It is the one 5xx not counted as a server error (``_excused``): it
  is the device's silence, documented on the route, not a failure of the ERP. The route's
  other answers (200, 422 refusals by a device) are tested with a real agent in
  test_erp_setpoints.py.

Missing a required header: PATCH without If-Match is 428 (RFC 6585), the one answer besides
those schemathesis expects by default.

What a JSON Schema cannot say, and how the test keeps it out of "schema-valid" cases
(the server's answers to each are tested with their own tests):

- a cursor this API issued: cursors are opaque keyset positions; a generated string is not
  one (422 on ``query.cursor``; tampering: test_erp_hostile_input). Positive cases leave
  ``cursor`` out.
- the ledger currency: it is the database's (``erp.company``), which the document does not
  know when it is built; positive cases use it for every ``currency``.
- rows a body refers to, their state, and rules across fields: "no such product" (an id
  in a body that no row has), "no bill of materials", more than an invoice has left to pay
  or credit, which lines a purchase order has, "from and to warehouses must differ", "each
  component once". The server answers them with 422 naming the field; a positive case
  answered so is not counted as rejected, and only with exactly those reasons
  (``REFERENCE_REASONS``). (Answering the ones about rows with 404 and 409 instead means
  changing the SQL command functions.)
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from erp_support import SECRET, server_process, sync_client, tokens, unique
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput

from erp_api import create_app

pytestmark = pytest.mark.integration

LEDGER_CURRENCY = "EUR"  # erp.company.currency of a freshly migrated database
ACCEPTED = ["2xx", "401", "403", "404", "409", "412", "504"]
DEVICE_TIMEOUT = "urn:factory:erp:problem:device-timeout"
SETPOINT_TIMEOUT_S = 0.2  # how long each fuzzed setpoint waits for a device that never answers
REFERENCE_REASONS = tuple(re.compile(reason) for reason in (
    "no such (product|warehouse|customer|supplier|purchase order|active product|active supplier)",
    "a (product|component product|spare part product) does not exist",
    "the product has no bill of materials",
    "a product cannot be its own component",
    "Value error, from_warehouse_id and to_warehouse_id must differ",
    "Value error, each (component|spare part product|line_no) may appear once",
    "Value error, quantity and scrap cannot both be zero",
    # an invoice's state: what is left to pay or credit on it, and which lines it has
    "more than the invoice's outstanding amount",
    r"line \d+: only [0-9.]+ left to credit",
    r"no line \d+ on invoice [A-Z0-9-]+",
    # which lines a purchase order has
    r"no line \d+ on purchase order PO-[0-9]+",
))  # fmt: skip
EXAMPLES = int(os.environ.get("ERP_SCHEMA_EXAMPLES", "8"))  # per operation
STATEFUL_EXAMPLES = int(os.environ.get("ERP_SCHEMA_STATEFUL_EXAMPLES", "20"))

CONFIG = SchemathesisConfig.from_dict({
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ACCEPTED},
        "missing_required_header": {"expected-statuses": ["400", "401", "403", "406", "415", "422", "428"]},
    }
})  # fmt: skip
DOCUMENT = create_app("postgresql://unused", jwt_secret=SECRET).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def _off_pattern_headers(case: schemathesis.Case) -> None:
    """Schemathesis' coverage phase writes ``If-Match: 0`` for the pattern ``^(\\*|(W/)?"[0-9]+")$``
    and calls the case positive; an optional header whose value breaks the document's own
    pattern is left out instead (checked against the document, so it excuses no server rule)."""
    parameters = DOCUMENT["paths"][case.operation.path][case.method.lower()].get("parameters", [])
    for parameter in parameters:
        value = (case.headers or {}).get(parameter["name"])
        pattern = parameter["schema"].get("pattern")
        optional_header = parameter["in"] == "header" and not parameter["required"]
        if optional_header and pattern and value is not None and re.search(pattern, value) is None:
            del case.headers[parameter["name"]]


def _ledger_currency(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: LEDGER_CURRENCY if k == "currency" else _ledger_currency(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_ledger_currency(item) for item in node]
    return node


@schema.hook("map_case")
def _positive_cases_the_document_can_describe(
    _ctx: schemathesis.HookContext, case: schemathesis.Case
) -> schemathesis.Case:
    """No invented cursor, no foreign currency and no header off its pattern in positive cases
    (see the module docstring)."""
    if case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE:
        if isinstance(case.query, dict):
            case.query.pop("cursor", None)
        case.body = _ledger_currency(case.body)
        _off_pattern_headers(case)
    return case


def _refused_for_a_reference(response: Any) -> bool:
    """A 422 whose every reason is a row the body names, or a rule across fields."""
    if response.status_code != 422:
        return False
    errors = response.json().get("errors") or []
    return bool(errors) and all(any(r.fullmatch(e["reason"]) for r in REFERENCE_REASONS) for e in errors)


def _excused(response: Any) -> list[Any]:
    """The checks a response is excused from: the acceptance of a positive case refused for a
    reference (above), and the server-error check for an offline device's 504 (above)."""
    if _refused_for_a_reference(response):
        return [schemathesis.checks.positive_data_acceptance]
    offline = response.status_code == 504 and response.json().get("type") == DEVICE_TIMEOUT
    if offline and response.request.url.endswith("/api/v1/setpoints"):
        return [schemathesis.checks.not_a_server_error]
    return []


def _seed(base: str) -> None:
    """A warehouse, a customer, a product in stock and a draft order: lists that are not empty,
    so the links from a list to its items and their commands have something to follow."""
    with sync_client(base) as client:
        store = client.post("/api/v1/warehouses", json={"code": unique("WH"), "name": "Fuzz store"}).json()
        buyer = client.post("/api/v1/customers", json={"name": unique("Buyer")}).json()
        price = {"amount": "10.00", "currency": LEDGER_CURRENCY}
        made = client.post("/api/v1/products", json={"sku": unique("SKU"), "name": "Fuzz product", "uom": "ea",
                                                     "price": price, "tax_rate": "0.19"}).json()  # fmt: skip
        receipt = {"product_id": made["id"], "warehouse_id": store["id"], "quantity": "100"}
        assert client.post("/api/v1/inventory/receipts", json=receipt).status_code == 201
        order = {"customer_id": buyer["id"], "warehouse_id": store["id"],
                 "lines": [{"product_id": made["id"], "quantity": "2"}]}  # fmt: skip
        assert client.post("/api/v1/orders", json=order).status_code == 201


@pytest.fixture(scope="module")
def erp_base(database_url: str, mqtt_url: str) -> Iterator[str]:
    # a broker for setpoints; no outbox relay: the fuzzer's events are nobody's
    with server_process(database_url, mqtt_url=mqtt_url, relay=False, setpoint_timeout_s=SETPOINT_TIMEOUT_S) as base:
        yield base


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_document_is_exactly_as_strict_as_the_validation(case: schemathesis.Case, erp_base: str) -> None:
    token = tokens().issue("fuzz-admin", "admin").access_token
    headers = {"Authorization": f"Bearer {token}"}
    response = case.call(base_url=erp_base, headers=headers)
    case.validate_response(
        response,
        excluded_checks=_excused(response),
        headers=headers,
        transport_kwargs={"base_url": erp_base, "headers": headers},
    )


def test_stateful_follow_the_links(erp_base: str) -> None:
    """The same checks along the document's links (``erp_api.openapi._links``, and the ones
    schemathesis infers from list and item paths): create a resource, then read, change and
    move it through its states with the id and ETag of the reply. Bounded: ``STATEFUL_EXAMPLES``
    scenarios of at most 8 steps.

    The scenarios change the database, so a replay does not see the same responses: each
    failure is recorded when it happens and the test fails on them at the end, instead of
    letting hypothesis replay (it would report the different replay as a flaky strategy)."""
    token = tokens().issue("fuzz-admin", "admin").access_token
    headers = {"Authorization": f"Bearer {token}"}
    _seed(erp_base)
    failures: list[str] = []
    steps: list[str] = []

    class Scenario(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: StepInput) -> StepOutput:  # noqa: A002 (the name of the overridden method)
            steps.append(input.case.operation.label)
            return super().step(input)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": erp_base, "headers": headers}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response, excluded_checks=_excused(response), headers=headers, transport_kwargs=kwargs
                )
            except FailureGroup as exc:
                failures.append(f"{case.operation.label}: {exc}")

    with contextlib.suppress(FlakyStrategyDefinition):  # a bundle the database emptied meanwhile
        Scenario.run(
            settings=settings(
                max_examples=STATEFUL_EXAMPLES,
                stateful_step_count=8,
                phases=[Phase.generate],
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    assert not failures, "\n\n".join(failures[:5])
    assert len(steps) >= STATEFUL_EXAMPLES, steps
