"""Hypothesis strategies for wire payloads, shared by the codec and the ingest fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st

from factory.wire import Point, Quality, TelemetryBatch

tags = st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)
values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)
)
points = st.builds(
    Point, tag=tags, ts=st.integers(0, 253_402_300_799_999), value=values, quality=st.sampled_from(list(Quality))
)
batches = st.builds(
    TelemetryBatch, seq=st.integers(0, 2**63 - 1), points=st.lists(points, min_size=1, max_size=20).map(tuple),
    hist=st.booleans(),
)  # fmt: skip


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)  # fmt: skip
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
near_points = st.fixed_dictionaries(
    {"t": st.one_of(tags, json_scalars)},
    optional={"ts": st.one_of(st.integers(-5, 2**60), json_scalars), "v": json_values,
              "q": st.one_of(st.integers(-1, 3), json_scalars), "x": json_scalars},
)  # fmt: skip
near_batches = st.fixed_dictionaries(
    {},
    optional={"v": st.one_of(st.just(1), json_scalars), "seq": st.one_of(st.integers(-2, 2**64), json_scalars),
              "hist": json_scalars, "points": st.one_of(st.lists(near_points, max_size=3), json_values),
              "extra": json_scalars},
)  # fmt: skip
