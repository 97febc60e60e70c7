"""The change filter: deadband, heartbeat, quality changes and non-finite values, on readings."""

from __future__ import annotations

import math

from edge_agent.agent import ChangeFilter
from edge_agent.config import OpcuaTag
from edge_agent.reading import Reading
from factory.wire import Point, Quality


def tags() -> list[OpcuaTag]:
    return [
        OpcuaTag(name="a.flow", node="ns=2;s=f", deadband=0.5, max_age_ms=10_000),
        OpcuaTag(name="a.count", node="ns=2;s=c"),
        OpcuaTag(name="a.on", node="ns=2;s=o"),
    ]


def passed(f: ChangeFilter, ts: int, values: list[float | int | bool | None], q: Quality = Quality.GOOD) -> list[str]:
    """Which of flow, count and on pass."""
    out = f(Reading.at(["a.flow", "a.count", "a.on"], ts, values, q))
    return [] if out is None else list(out.tags)


def test_first_values_pass_then_only_changes() -> None:
    f = ChangeFilter(tags())
    assert passed(f, 0, [1.0, 7, False]) == ["a.flow", "a.count", "a.on"]
    assert passed(f, 100, [1.4, 7, False]) == []  # within the deadband, nothing else moved
    assert passed(f, 200, [1.6, 8, True]) == ["a.flow", "a.count", "a.on"]
    assert passed(f, 300, [1.2, 8, True]) == []  # 0.4 from the last value passed (1.6)
    assert passed(f, 400, [2.2, 8, True]) == ["a.flow"]


def test_heartbeat_and_quality_change_pass_unchanged_values() -> None:
    f = ChangeFilter(tags())
    passed(f, 0, [1.0, 7, False])
    assert passed(f, 9_999, [1.0, 7, False]) == []
    assert passed(f, 10_000, [1.0, 7, False]) == ["a.flow"]  # its max_age_ms; the others wait 60 s
    assert passed(f, 10_001, [None, None, None], Quality.BAD) == ["a.flow", "a.count", "a.on"]
    assert passed(f, 10_002, [None, None, None], Quality.BAD) == []


def test_non_finite_values_become_bad_nulls_and_the_rest_is_untouched() -> None:
    f = ChangeFilter(tags())
    out = f(Reading.at(["a.flow", "a.count"], 5, [math.nan, 3]))
    assert out is not None
    assert out.points() == [Point("a.flow", 5, None, Quality.BAD), Point("a.count", 5, 3)]


def test_unknown_tags_always_pass() -> None:
    f = ChangeFilter(tags())
    for ts in (1, 2):
        out = f(Reading.at(["b.other"], ts, [1]))
        assert out is not None
        assert list(out.tags) == ["b.other"]
