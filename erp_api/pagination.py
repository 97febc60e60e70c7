"""Cursor (keyset) pagination: stable under inserts, one index range scan per page.

A cursor is opaque to clients: base64url of the sort it belongs to and the last row's
``(sort value, id)``. The next page is ``WHERE (col, id) > (value, id)`` in that order,
so pages never skip or repeat rows when others write meanwhile (unlike OFFSET).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Generic, TypeVar

from psycopg import sql
from pydantic import BaseModel, Field

from erp_api.errors import UnprocessableError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Keyset", "Page", "PageRequest", "keyset", "next_cursor", "page_json"]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    limit: int


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    cursor: str | None
    sort: str  # a key of the resource's sortable columns, "-" prefixed for descending


@dataclass(frozen=True, slots=True)
class Keyset:
    """SQL fragments for one page: a condition (or TRUE), ORDER BY and LIMIT, and their params."""

    where: sql.Composable
    order_by: sql.Composable
    params: list[Any]
    limit: int
    sort_key: str


def keyset(page: PageRequest, columns: Mapping[str, str]) -> Keyset:
    """Plan a page over ``columns`` (sort key -> trusted SQL column, e.g. ``p.name``)."""
    descending = page.sort.startswith("-")
    key = page.sort.removeprefix("-")
    if key not in columns:
        choices = ", ".join(sorted(columns))
        raise UnprocessableError.on_field("query.sort", f"sort by one of {choices} (prefix - to reverse)")
    column = sql.SQL(columns[key])
    ident = sql.SQL(columns["id"])
    direction = sql.SQL("DESC" if descending else "ASC")
    order_by = (
        sql.SQL("{} {}, {} {}").format(column, direction, ident, direction)
        if key != "id"
        else (sql.SQL("{} {}").format(ident, direction))
    )
    where: sql.Composable = sql.SQL("TRUE")
    params: list[Any] = []
    if page.cursor is not None:
        value, last_id = _decode(page.cursor, page.sort)
        op = sql.SQL("<" if descending else ">")
        if key == "id":
            where, params = sql.SQL("{} {} %s").format(ident, op), [last_id]
        else:
            where = sql.SQL("({}, {}) {} (%s, %s)").format(column, ident, op)
            params = [value, last_id]
    return Keyset(where=where, order_by=order_by, params=params, limit=page.limit + 1, sort_key=key)


def next_cursor(rows: Sequence[Mapping[str, Any]], page: PageRequest, plan: Keyset) -> str | None:
    """The cursor after the page (rows were fetched with one extra to tell if more exist)."""
    if len(rows) <= page.limit:
        return None
    last = rows[page.limit - 1]
    payload = {"s": page.sort, "v": _plain(last[plan.sort_key]), "i": last["id"]}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def page_json(items: list[str], cursor: str | None, limit: int) -> bytes:
    """A ``Page`` of documents the database rendered as JSON, without parsing them again."""
    tail = json.dumps({"next_cursor": cursor, "limit": limit})[1:]
    return ('{"items":[' + ",".join(items) + "]," + tail).encode()


def _plain(value: object) -> str:
    """Sort values travel as text; PostgreSQL casts them back to the column's type."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate, which no database encoding can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _decode(cursor: str, sort: str) -> tuple[object, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        value, last_id, for_sort = payload["v"], payload["i"], payload["s"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise UnprocessableError.on_field("query.cursor", "not a cursor this API issued") from exc
    # Every sort value this API issues is a string (ids travel separately); anything else
    # is a tampered cursor and must not reach SQL as a mistyped parameter.
    valid = (
        isinstance(value, str)
        and "\x00" not in value
        and _encodable(value)
        and isinstance(last_id, int)
        and not isinstance(last_id, bool)
        and 0 < last_id < 2**63
    )
    if for_sort != sort:
        raise UnprocessableError.on_field("query.cursor", "belongs to another sort order; start from the first page")
    if not valid:
        raise UnprocessableError.on_field("query.cursor", "not a cursor this API issued")
    return value, last_id
