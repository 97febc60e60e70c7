"""Reading the documents the database renders (``erp.order_doc`` and the rest): one by its
id, or a page of them, sent as the database wrote them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from erp_api.db import Conn, fetch_all
from erp_api.errors import NotFoundError
from erp_api.pagination import PageRequest, keyset, next_cursor, page_json
from erp_api.responses import Doc

__all__ = ["Documents"]


@dataclass(frozen=True, slots=True)
class Documents:
    """Where one resource's documents come from. Every field is our own SQL, never a client's."""

    what: str  # the resource in "no order with id 7"
    source: str  # what follows FROM: "erp.sales_order o", joins included
    doc: str  # the rendering of a row: "erp.order_doc(o)"
    sorts: Mapping[str, str]  # sort key -> column; "id" is the row's id
    filters: Mapping[str, str] = field(default_factory=dict)  # name -> condition with one parameter
    version: str = ""  # the row's version column, for the ETag of one document

    async def get(self, conn: Conn, row_id: int) -> Doc:
        """The document with ``row_id``, or 404."""
        ident = self.sorts["id"]
        cur = await conn.execute(
            f"SELECT {ident}, {self.version}, {self.doc}::text FROM {self.source} WHERE {ident} = %s",
            (row_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"no {self.what} with id {row_id}")
        return Doc(*row)

    async def page(
        self, conn: Conn, page: PageRequest, filters: Mapping[str, Any] | None = None, also: Sequence[str] = ()
    ) -> bytes:
        """A page as JSON, filtered by ``filters`` (name -> value; None: any) and the
        conditions ``also`` (our own SQL, without parameters)."""
        plan = keyset(page, self.sorts)
        conditions: list[sql.Composable] = [plan.where, *(sql.SQL(c) for c in also)]
        params: list[Any] = list(plan.params)
        for name, value in (filters or {}).items():
            if value is not None:
                conditions.append(sql.SQL(self.filters[name]))
                params.append(value)
        columns = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.SQL(column), sql.Identifier(key)) for key, column in self.sorts.items()
        )
        query = sql.SQL("SELECT {}, {}::text AS doc FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
            columns, sql.SQL(self.doc), sql.SQL(self.source), sql.SQL(" AND ").join(conditions), plan.order_by
        )
        rows = await fetch_all(conn, query, [*params, plan.limit])
        return page_json([r["doc"] for r in rows[: page.limit]], next_cursor(rows, page, plan), page.limit)
