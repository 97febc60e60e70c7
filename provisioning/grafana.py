"""Push the datasource, folders and dashboards to a running Grafana through its HTTP API.

Idempotent: each object is read first and written only when what Grafana holds differs
from what the dashboards code says, so a second run changes nothing. The objects are the
same ones ``factory dashboards export`` writes for file provisioning (same uids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, TypeVar

import requests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError

from dashboards.export import datasource, folder_uid
from dashboards.model import Dashboard
from provisioning.devices import ProvisioningError

__all__ = ["Change", "GrafanaError", "GrafanaTarget", "connect_grafana", "differs", "provision_grafana"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Action = Literal["created", "updated", "unchanged"]
NOT_FOUND: Final = 404
MESSAGE_CHARS: Final = 200
# Grafana adds these to a dashboard it stores; they say nothing about its content.
STORED_ONLY: Final = frozenset({"id", "version"})


class GrafanaError(ProvisioningError):
    """Grafana cannot be reached, refuses the token, or rejects an object; the message says which."""


@dataclass(frozen=True, slots=True)
class GrafanaTarget:
    """Where the datasource points: the database Grafana reads as the read-only role."""

    db_host: str = "timescaledb:5432"
    database: str = "factory"
    db_user: str = "grafana"
    db_password: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    kind: Literal["datasource", "folder", "dashboard"]
    uid: str
    title: str
    action: Action

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def connect_grafana(url: str, token: str, *, timeout_s: float = 10.0) -> GrafanaApi:
    """A client for ``url``; no request is made yet."""
    if not url.startswith(("http://", "https://")):
        raise GrafanaError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    return GrafanaApi.from_url(url, credential=token, timeout=timeout_s)


def _call(what: str, url: str, request: Callable[..., T], *args: Any) -> T:
    """One API call; the client's and the network's errors become a GrafanaError naming the call."""
    try:
        return request(*args)
    except GrafanaUnauthorizedError as exc:
        raise GrafanaError(f"Grafana at {url} refused the token (401 Unauthorized) on {what}: check --token") from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            reason = "the token lacks permission (403 Forbidden); it needs the Admin role"
        else:
            reason = f"{exc.status_code} {_message(exc)}"
        raise GrafanaError(f"Grafana at {url} rejected {what}: {reason}") from exc
    except GrafanaException as exc:
        raise GrafanaError(f"Grafana at {url} failed on {what}: {exc.message}") from exc
    except requests.exceptions.JSONDecodeError as exc:
        raise GrafanaError(f"{url} answered {what} with something other than JSON: is it Grafana?") from exc
    except requests.exceptions.RequestException as exc:
        raise GrafanaError(f"cannot reach Grafana at {url}: {type(exc).__name__}: {exc}") from exc


def _message(exc: GrafanaException) -> str:
    """Grafana's own message; anything else (an HTML error page of a proxy) shortened."""
    body = exc.response
    text = str(body.get("message", body)) if isinstance(body, dict) else " ".join(str(body).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def _held(what: str, url: str, request: Callable[[str], dict[str, Any]], uid: str) -> dict[str, Any] | None:
    """The object Grafana holds under ``uid``, or None when it has none."""
    try:
        return _call(what, url, request, uid)
    except GrafanaError as exc:
        cause = exc.__cause__
        if isinstance(cause, GrafanaClientError) and cause.status_code == NOT_FOUND:
            return None
        raise


def differs(wanted: Any, held: Any) -> bool:
    """True when ``held`` lacks something of ``wanted``; keys Grafana adds on its own are ignored."""
    if isinstance(wanted, dict):
        return not isinstance(held, dict) or any(k not in held or differs(v, held[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return not isinstance(held, list) or len(wanted) != len(held) or any(map(differs, wanted, held))
    return bool(wanted != held)


def _datasource(api: GrafanaApi, url: str, target: GrafanaTarget) -> Change:
    wanted = datasource(target.db_host, target.database, target.db_user)
    uid = wanted["uid"]
    held = _held(f"datasource {uid}", url, api.datasource.get_datasource_by_uid, uid)
    has_password = bool(held and held.get("secureJsonFields", {}).get("password"))
    if held is not None and has_password and not differs(wanted, held):
        return Change("datasource", uid, wanted["name"], "unchanged")
    if target.db_password is None:
        if held is None or not has_password:
            raise GrafanaError("the datasource needs the grafana role's password: set FACTORY_GRAFANA_DB_PASSWORD")
    else:  # when the password is not sent, Grafana keeps the one it has
        wanted["secureJsonData"] = {"password": target.db_password}
    if held is None:
        _call(f"creating datasource {uid}", url, api.datasource.create_datasource, wanted)
        return Change("datasource", uid, wanted["name"], "created")
    _call(f"updating datasource {uid}", url, api.datasource.update_datasource_by_uid, uid, wanted)
    return Change("datasource", uid, wanted["name"], "updated")


def _folder(api: GrafanaApi, url: str, title: str) -> Change:
    uid = folder_uid(title)
    held = _held(f"folder {uid}", url, api.folder.get_folder, uid)
    if held is None:
        _call(f"creating folder {uid}", url, api.folder.create_folder, title, uid)
        return Change("folder", uid, title, "created")
    if held.get("title") == title:
        return Change("folder", uid, title, "unchanged")
    _call(f"renaming folder {uid}", url, lambda: api.folder.update_folder(uid, title=title, overwrite=True))
    return Change("folder", uid, title, "updated")


def _dashboard(api: GrafanaApi, url: str, board: Dashboard) -> Change:
    wanted = {k: v for k, v in board.to_json().items() if k not in STORED_ONLY}
    folder = folder_uid(board.folder)
    held = _held(f"dashboard {board.uid}", url, api.dashboard.get_dashboard, board.uid)
    if held is not None:
        in_folder = held.get("meta", {}).get("folderUid") == folder
        if in_folder and not differs(wanted, held.get("dashboard")):
            return Change("dashboard", board.uid, board.title, "unchanged")
    body = {"dashboard": wanted, "folderUid": folder, "overwrite": True, "message": "factory provision grafana"}
    _call(f"saving dashboard {board.uid}", url, api.dashboard.update_dashboard, body)
    return Change("dashboard", board.uid, board.title, "created" if held is None else "updated")


def provision_grafana(
    api: GrafanaApi, url: str, boards: tuple[Dashboard, ...], target: GrafanaTarget
) -> tuple[str, list[Change]]:
    """Grafana's version and what was created, updated or left unchanged: datasource, folders, dashboards."""
    health = _call("the health check", url, api.health.check)
    version = str(health.get("version", "?")) if isinstance(health, dict) else "?"
    changes = [_datasource(api, url, target)]
    changes += [_folder(api, url, title) for title in sorted({b.folder for b in boards})]
    changes += [_dashboard(api, url, board) for board in boards]
    for change in changes:
        log.info("%s %s %s (%s)", change.action, change.kind, change.uid, change.title)
    return version, changes
