"""`factory provision grafana` against a recorded fake of Grafana's HTTP API.

Grafana cannot be installed here, so the client calls go to ``tests/grafana_fake.py``: a
real HTTP server in the test process that answers as Grafana 11 does and keeps state, so
idempotency is exercised for real (the second run must send no write at all).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from grafana_client import GrafanaApi
from grafana_fake import fake_grafana

from dashboards import DASHBOARDS
from factory_cli.command import main
from factory_servers import free_port
from provisioning.grafana import differs

TOKEN = "glsa_test_token"
ENV = {"FACTORY_GRAFANA_DB_PASSWORD": "grafana-db-secret"}
BOARDS = len(DASHBOARDS)


def run(url: str, *args: str, token: str = TOKEN, env: dict[str, str] | None = None) -> Result:
    argv = ["provision", "grafana", "--url", url, "--token", token, "--timeout", "5", *args]
    return CliRunner().invoke(main, argv, env=ENV if env is None else env)


def report(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_first_run_creates_second_run_changes_nothing() -> None:
    with fake_grafana(TOKEN) as (url, grafana):
        first = report(run(url, "--json"))
        assert (first["created"], first["updated"], first["unchanged"]) == (2 + BOARDS, 0, 0)
        assert first["grafana_version"] == "11.3.0"

        (source,) = grafana.datasources.values()
        assert (source["uid"], source["type"], source["user"]) == (
            "factory-pg",
            "grafana-postgresql-datasource",
            "grafana",
        )
        assert source["url"] == "timescaledb:5432"
        assert source["jsonData"]["database"] == "factory"
        assert grafana.secrets["factory-pg"] == {"password": "grafana-db-secret"}
        assert grafana.folders["factory"]["title"] == "Factory"
        assert {uid for uid, d in grafana.dashboards.items() if d["folderUid"] == "factory"} == {
            b.uid for b in DASHBOARDS
        }
        found = GrafanaApi.from_url(url, credential=TOKEN).search.search_dashboards()
        assert sorted(d["title"] for d in found) == sorted(b.title for b in DASHBOARDS)

        writes = len(grafana.writes())
        second = report(run(url, "--json"))
        assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 2 + BOARDS)
        assert len(grafana.writes()) == writes  # nothing was written the second time
        assert {d["dashboard"]["version"] for d in grafana.dashboards.values()} == {1}


def test_drift_is_put_back_and_only_there() -> None:
    """Someone edits a panel and the datasource's host by hand: the next run repairs those two."""
    with fake_grafana(TOKEN) as (url, grafana):
        report(run(url, "--json"))
        grafana.dashboards["factory-erp"]["dashboard"]["panels"][0]["title"] = "edited by hand"
        grafana.datasources["factory-pg"]["url"] = "elsewhere:5432"
        grafana.folders["factory"]["title"] = "Renamed"

        result = report(
            run(url, "--json"),
        )
        changed = {(c["kind"], c["uid"]) for c in result["changes"] if c["action"] == "updated"}
        assert changed == {("datasource", "factory-pg"), ("folder", "factory"), ("dashboard", "factory-erp")}
        assert result["unchanged"] == BOARDS - 1
        assert grafana.dashboards["factory-erp"]["dashboard"]["panels"][0]["title"] == "Orders per day"
        assert grafana.datasources["factory-pg"]["url"] == "timescaledb:5432"
        assert grafana.folders["factory"]["title"] == "Factory"
        assert grafana.secrets["factory-pg"] == {"password": "grafana-db-secret"}


def test_human_output_names_every_object() -> None:
    with fake_grafana(TOKEN) as (url, _):
        result = run(url)
        assert result.exit_code == 0, result.output
        assert "created   datasource factory-pg (Factory PostgreSQL)" in result.output
        assert "created   dashboard factory-overview (Plant overview)" in result.output
        assert f"Grafana 11.3.0 at {url}: {2 + BOARDS} created, 0 updated, 0 unchanged" in result.output


def test_password_kept_when_not_given_again() -> None:
    with fake_grafana(TOKEN) as (url, grafana):
        report(run(url, "--json"))
        grafana.datasources["factory-pg"]["jsonData"]["database"] = "other"
        result = report(run(url, "--json", env={}))
        assert result["updated"] == 1
        assert grafana.secrets["factory-pg"] == {"password": "grafana-db-secret"}


@pytest.mark.parametrize(
    ("token", "env", "message"),
    [
        ("wrong-token", ENV, "refused the token (401 Unauthorized) on datasource factory-pg: check --token"),
        (TOKEN, {}, "needs the grafana role's password: set FACTORY_GRAFANA_DB_PASSWORD"),
        ("glsa_viewer", ENV, "rejected creating datasource factory-pg: the token lacks permission (403 Forbidden)"),
    ],
)
def test_refusals_exit_2_with_the_reason(token: str, env: dict[str, str], message: str) -> None:
    with fake_grafana(TOKEN) as (url, grafana):
        result = run(url, token=token, env=env)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output
        assert (grafana.datasources, grafana.folders, grafana.dashboards) == ({}, {}, {})  # stopped at the first


def test_unreachable_grafana_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run(url)
    assert result.exit_code == 2, result.output
    assert f"cannot reach Grafana at {url}: ConnectionError" in result.output
    assert "Traceback" not in result.output
    bad = run("grafana:3000")
    assert bad.exit_code == 2
    assert "expected http://HOST:PORT" in bad.output


def test_same_name_under_another_uid_is_reported() -> None:
    """A datasource made by hand with our name: Grafana answers 409, and we say so."""
    with fake_grafana(TOKEN) as (url, grafana):
        grafana.datasources["manual"] = {"uid": "manual", "name": "Factory PostgreSQL", "type": "x", "id": 99}
        result = run(url)
        assert result.exit_code == 2
        assert "rejected creating datasource factory-pg: 409 data source with the same name already exists" in (
            result.output
        )


def test_differs_ignores_what_grafana_adds() -> None:
    wanted = {"a": 1, "panels": [{"x": 1}], "j": {"k": "v"}}
    assert not differs(wanted, {"a": 1, "id": 7, "panels": [{"x": 1, "pluginVersion": "11"}], "j": {"k": "v", "z": 0}})
    assert differs(wanted, {"a": 2, "panels": [{"x": 1}], "j": {"k": "v"}})
    assert differs(wanted, {"a": 1, "panels": [{"x": 1}, {"x": 2}], "j": {"k": "v"}})
    assert differs(wanted, {"a": 1, "panels": [{"x": 1}]})
