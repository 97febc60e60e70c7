"""Schemathesis over the whole OpenAPI document against the real server and database: no
request it can generate may cause a server error, every response must match the document
(status codes, content types, headers, bodies), and invalid requests must be refused.

One default check is left out: "schema-valid data must be accepted". Business rules refuse
some schema-valid requests on purpose: an amount in a currency other than the ledger's,
a product id that does not exist, a cursor this API never issued (422), an order that is
not in the right state (409)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from erp_support import SECRET, server_process, tokens
from hypothesis import HealthCheck, settings

from erp_api import create_app

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(create_app("postgresql://unused", jwt_secret=SECRET).openapi())


@pytest.fixture(scope="module")
def erp_base(database_url: str) -> Iterator[str]:
    with server_process(database_url) as base:
        yield base


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_document(case: schemathesis.Case, erp_base: str) -> None:
    token = tokens().issue("fuzz-admin", "admin").access_token
    case.call_and_validate(
        base_url=erp_base,
        headers={"Authorization": f"Bearer {token}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
