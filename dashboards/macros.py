"""Grafana's PostgreSQL macros and template variables, expanded as Grafana does.

Only what our dashboards use; anything else left in a query after expansion is an
error, so a new macro cannot slip into a dashboard untested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

__all__ = ["MacroError", "TimeRange", "expand", "interval_seconds"]

UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
INTERVAL_RE: Final = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
MACRO_RE: Final = re.compile(r"\$__(timeFilter|timeGroupAlias|timeGroup|timeFrom|timeTo)\(([^()]*)\)")
VAR_RE: Final = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


class MacroError(ValueError):
    """A query uses a macro, interval or variable we cannot expand."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    interval: str = "1m"
    variables: dict[str, str] = field(default_factory=dict)

    def literal(self, moment: datetime) -> str:
        """RFC 3339 with fractions, as Grafana writes it: a range ending now includes now."""
        return "'" + moment.astimezone(UTC).isoformat().replace("+00:00", "Z") + "'"


def interval_seconds(text: str) -> float:
    match = INTERVAL_RE.match(text.strip().strip("'"))
    if not match:
        raise MacroError(f"interval {text!r} is not like 5m, 1h or 1d")
    return int(match.group(1)) * UNITS[match.group(2)]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _macro(name: str, args: list[str], rng: TimeRange) -> str:
    if name == "timeFrom":
        return rng.literal(rng.start)
    if name == "timeTo":
        return rng.literal(rng.end)
    if not args or not args[0]:
        raise MacroError(f"$__{name} needs a column")
    column = args[0]
    if name == "timeFilter":
        return f"{column} BETWEEN {rng.literal(rng.start)} AND {rng.literal(rng.end)}"
    if len(args) < 2:
        raise MacroError(f"$__{name}({column}) needs an interval")
    step = interval_seconds(args[1])
    group = f"floor(extract(epoch from {column})/{step:g})*{step:g}"
    return f'{group} AS "time"' if name == "timeGroupAlias" else group


def expand(sql: str, rng: TimeRange) -> str:
    """The SQL Grafana would send for this range and these variable values."""
    sql = sql.replace("$__interval_ms", str(int(interval_seconds(rng.interval) * 1000)))
    sql = sql.replace("$__interval", rng.interval)

    def macro(match: re.Match[str]) -> str:
        return _macro(match.group(1), [a.strip() for a in match.group(2).split(",")], rng)

    sql = MACRO_RE.sub(macro, sql)

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in rng.variables:
            raise MacroError(f"unknown variable or macro ${name}")
        value = rng.variables[name]
        fmt = match.group(2)
        if fmt in (None, "raw"):
            return value
        if fmt == "sqlstring":
            return _sql_string(value)
        raise MacroError(f"variable format {fmt!r} is not supported")

    return VAR_RE.sub(variable, sql)
