"""A recorded fake of Grafana's HTTP API, for ``factory provision grafana``.

Grafana cannot be installed on the machines these tests run on, so this stands in for
it: a real HTTP server on a free 127.0.0.1 port that answers the endpoints grafana-client
calls (health, datasources by uid, folders, dashboards/db and dashboards by uid, search)
with bodies shaped as Grafana 11 answers them, and keeps state, so a second provisioning
run really sees what the first one stored. Like Grafana it checks the bearer token
(401 "Invalid API key"; a Viewer's token may read but gets 403 on writes), never returns
a datasource's secrets (only ``secureJsonFields``), keeps them when an update omits them,
refuses a second datasource with the same name (409) and a save into an unknown folder
(400).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class GrafanaState:
    token: str
    viewer_token: str = "glsa_viewer"  # a Viewer's token: may read, may not write
    version: str = "11.3.0"
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid"}
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]


def _datasource_view(ds: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    """What GET /api/datasources/uid/:uid returns: never the secrets, only which are set."""
    view = {k: v for k, v in ds.items() if k != "secureJsonData"}
    return view | {"secureJsonFields": dict.fromkeys(secrets, True), "readOnly": False, "version": 1}


class _Handler(BaseHTTPRequestHandler):
    state: GrafanaState  # set on the subclass made per server

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _route(self, method: str) -> None:
        state = self.state
        path = self.path.split("?", 1)[0]
        state.requests.append((method, path))
        if path == "/api/health":
            self._send(200, {"commit": "d8b8b7ba", "database": "ok", "version": state.version})
            return
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {state.viewer_token}" and method != "GET":
            self._send(403, {"accessErrorId": "ACE0000000001", "message": "You'll need additional permissions to"
                             " perform this action. Permissions needed: any of datasources:write", "title":
                             "Access denied"})  # fmt: skip
            return
        if auth not in (f"Bearer {state.token}", f"Bearer {state.viewer_token}"):
            self._send(401, {"extra": None, "message": "Invalid API key", "messageId": "api-key.invalid",
                             "statusCode": 401, "traceID": ""})  # fmt: skip
            return
        for pattern, handler in self.ROUTES:
            if (match := re.fullmatch(pattern, f"{method} {path}")) is not None:
                status, body = handler(self, state, *match.groups())
                self._send(status, body)
                return
        self._send(404, {"message": "Not found"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    # --- datasources -------------------------------------------------------------
    def get_datasource(self, state: GrafanaState, uid: str) -> tuple[int, Any]:
        if uid not in state.datasources:
            return 404, {"message": "Data source not found"}
        return 200, _datasource_view(state.datasources[uid], state.secrets.get(uid, {}))

    def create_datasource(self, state: GrafanaState) -> tuple[int, Any]:
        body = self._body()
        if any(ds["name"] == body["name"] for ds in state.datasources.values()):
            return 409, {"message": "data source with the same name already exists"}
        uid = body.get("uid") or f"ds{state.next_id}"
        state.secrets[uid] = dict(body.pop("secureJsonData", None) or {})
        state.datasources[uid] = body | {"id": state.new_id(), "uid": uid, "orgId": 1}
        view = _datasource_view(state.datasources[uid], state.secrets[uid])
        return 200, {"datasource": view, "id": view["id"], "message": "Datasource added", "name": body["name"]}

    def update_datasource(self, state: GrafanaState, uid: str) -> tuple[int, Any]:
        if uid not in state.datasources:
            return 404, {"message": "Data source not found"}
        body = self._body()
        state.secrets[uid] |= body.pop("secureJsonData", None) or {}  # omitted secrets are kept
        state.datasources[uid] = body | {"id": state.datasources[uid]["id"], "uid": uid, "orgId": 1}
        view = _datasource_view(state.datasources[uid], state.secrets[uid])
        return 200, {"datasource": view, "id": view["id"], "message": "Datasource updated", "name": body["name"]}

    # --- folders -----------------------------------------------------------------
    def get_folder(self, state: GrafanaState, uid: str) -> tuple[int, Any]:
        if uid not in state.folders:
            return 404, {"message": "folder not found", "status": "not-found"}
        return 200, state.folders[uid]

    def create_folder(self, state: GrafanaState) -> tuple[int, Any]:
        body = self._body()
        uid = body["uid"]
        if uid in state.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        state.folders[uid] = {"id": state.new_id(), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}/",
                              "hasAcl": False, "canSave": True, "canEdit": True, "canAdmin": True, "version": 1}  # fmt: skip
        return 200, state.folders[uid]

    def update_folder(self, state: GrafanaState, uid: str) -> tuple[int, Any]:
        if uid not in state.folders:
            return 404, {"message": "folder not found", "status": "not-found"}
        body = self._body()
        folder = state.folders[uid]
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return 412, {"message": "the folder has been changed by someone else", "status": "version-mismatch"}
        folder |= {"title": body["title"], "version": folder["version"] + 1}
        return 200, folder

    # --- dashboards --------------------------------------------------------------
    def get_dashboard(self, state: GrafanaState, uid: str) -> tuple[int, Any]:
        if uid not in state.dashboards:
            return 404, {"message": "Dashboard not found"}
        stored = state.dashboards[uid]
        folder = state.folders[stored["folderUid"]]
        meta = {"type": "db", "canSave": True, "canEdit": True, "slug": uid, "url": f"/d/{uid}/{uid}",
                "folderId": folder["id"], "folderUid": folder["uid"], "folderTitle": folder["title"],
                "provisioned": False, "version": stored["dashboard"]["version"]}  # fmt: skip
        return 200, {"dashboard": stored["dashboard"], "meta": meta}

    def save_dashboard(self, state: GrafanaState) -> tuple[int, Any]:
        body = self._body()
        dashboard, folder = dict(body["dashboard"]), body.get("folderUid")
        if folder not in state.folders:
            return 400, {"message": "folder not found", "status": "not-found"}
        uid = dashboard["uid"]
        held = state.dashboards.get(uid)
        if held and not body.get("overwrite") and dashboard.get("version") != held["dashboard"]["version"]:
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        dashboard["id"] = held["dashboard"]["id"] if held else state.new_id()
        dashboard["version"] = held["dashboard"]["version"] + 1 if held else 1
        state.dashboards[uid] = {"dashboard": dashboard, "folderUid": folder}
        return 200, {"id": dashboard["id"], "uid": uid, "url": f"/d/{uid}/{uid}", "status": "success",
                     "version": dashboard["version"], "slug": uid}  # fmt: skip

    def search(self, state: GrafanaState) -> tuple[int, Any]:
        return 200, [
            {"id": d["dashboard"]["id"], "uid": uid, "title": d["dashboard"]["title"], "type": "dash-db",
             "folderUid": d["folderUid"], "tags": d["dashboard"].get("tags", [])}
            for uid, d in state.dashboards.items()
        ]  # fmt: skip

    ROUTES = (
        (r"GET /api/datasources/uid/([^/]+)", get_datasource),
        (r"POST /api/datasources", create_datasource),
        (r"PUT /api/datasources/uid/([^/]+)", update_datasource),
        (r"GET /api/folders/([^/]+)", get_folder),
        (r"POST /api/folders", create_folder),
        (r"PUT /api/folders/([^/]+)", update_folder),
        (r"GET /api/dashboards/uid/([^/]+)", get_dashboard),
        (r"POST /api/dashboards/db", save_dashboard),
        (r"GET /api/search", search),
    )


@contextlib.contextmanager
def fake_grafana(token: str) -> Iterator[tuple[str, GrafanaState]]:
    """The fake's base URL and its state, for as long as the block runs."""
    state = GrafanaState(token=token)
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-grafana", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
