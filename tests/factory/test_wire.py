"""The telemetry wire contract: codec round trip, agreement with the published JSON Schema."""

from __future__ import annotations

import base64
import json
import math
import os
import zlib

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import batches, near_batches, near_points, points

from factory.wire import (  # the two paths of one decoder, held together
    MAX_BATCH_BYTES,
    BatchTooLargeError,
    Point,
    Status,
    TagInfo,
    TelemetryBatch,
    TopicKind,
    WireError,
    _columns_fast,
    _decode_point,
    decode_ack,
    decode_batch,
    decode_catalog,
    decode_status,
    encode_ack,
    encode_batch,
    encode_catalog,
    encode_status,
    parse_topic,
    schema,
    topic,
)

VALIDATOR = jsonschema.Draft202012Validator(schema())


@given(batches)
def test_round_trip_is_exact_and_schema_valid(batch: TelemetryBatch) -> None:
    data = encode_batch(batch)
    VALIDATOR.validate(json.loads(data))
    assert decode_batch(data) == batch


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(near_batches)
def test_decoder_accepts_exactly_what_the_schema_accepts(body: dict[str, object]) -> None:
    """The hand-written decoder and the published schema agree on every almost-valid document."""
    data = json.dumps(body).encode()
    schema_ok = VALIDATOR.is_valid(body)
    try:
        decode_batch(data)
        decoder_ok = True
    except WireError:
        decoder_ok = False
    assert decoder_ok == schema_ok, VALIDATOR.iter_errors(body)


def _as_json(point: Point) -> dict[str, object]:
    return {"t": point.tag, "ts": point.ts, "v": point.value, "q": int(point.quality)}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(near_points, points.map(_as_json)), min_size=1, max_size=4))
def test_the_column_fast_path_agrees_with_the_point_by_point_check(raw: list[object]) -> None:
    """Whatever the fast path accepts, the point-by-point check accepts with the same columns;
    and every valid point list takes the fast path."""
    items = json.loads(json.dumps(raw))
    try:
        slow = [_decode_point(i, p) for i, p in enumerate(items)]
    except WireError:
        assert _columns_fast(items) is None
        return
    columns = ([p.tag for p in slow], [p.ts for p in slow], [p.value for p in slow], [p.quality for p in slow])
    fast = _columns_fast(items)
    assert fast == columns or (fast is None and any(isinstance(p.get("ts"), float) for p in items))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_batch(data)  # random bytes are never a valid batch


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"v":2,"seq":1,"points":[{"t":"a","ts":1,"v":1}]}', "unsupported version"),
        (b'{"seq":1,"points":[{"t":"a","ts":1,"v":1}]}', "missing field v"),
        (b'{"v":1,"seq":-1,"points":[{"t":"a","ts":1,"v":1}]}', "seq must be"),
        (b'{"v":1,"seq":1,"points":[]}', "non-empty"),
        (b'{"v":1,"seq":1,"points":[{"t":"a b","ts":1,"v":1}]}', "points[0].t"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1.5,"v":1}]}', "points[0].ts"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":"x"}]}', "points[0].v must be"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":NaN}]}', "non-finite"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":1e999}]}', "not finite"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":1' + b"0" * 400 + b"}]}", "out of range for a double"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":1' + b"0" * 5000 + b"}]}", "not usable JSON"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":1,"q":7}]}', "points[0].q"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1}]}', "points[0].v is missing"),
        (b'{"v":1,"seq":1,"points":[{"t":"a","ts":1,"v":1}],"z":0}', "unknown batch field"),
    ],
)
def test_invalid_batches_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_batch(payload)


def test_oversize_batches_are_refused_on_both_sides() -> None:
    big = TelemetryBatch(seq=1, points=tuple(Point(f"tag.{i:06d}" + "x" * 100, i, 1.5) for i in range(2000)))
    with pytest.raises(BatchTooLargeError):
        encode_batch(big)
    with pytest.raises(WireError, match="limit"):
        decode_batch(b" " * (MAX_BATCH_BYTES + 1))


def test_non_finite_values_are_not_encoded() -> None:
    with pytest.raises(WireError):
        encode_batch(TelemetryBatch(seq=1, points=(Point("a", 1, math.inf),)))


def test_topics() -> None:
    name = topic("mill-a", "boiler-house-pi", TopicKind.TELEMETRY)
    assert name == "factory/v1/mill-a/boiler-house-pi/telemetry"
    parsed = parse_topic(name)
    assert (parsed.site, parsed.device, parsed.kind) == ("mill-a", "boiler-house-pi", TopicKind.TELEMETRY)
    assert parse_topic("factory/v1/a/b/cmd/reply").kind is TopicKind.CMD_REPLY
    for bad in ("factory/v2/a/b/telemetry", "factory/v1/A/b/telemetry", "factory/v1/a/b/other", "x"):
        with pytest.raises(WireError):
            parse_topic(bad)
    with pytest.raises(WireError, match="site"):
        topic("Mill A", "x", TopicKind.STATUS)


def test_catalog_and_status_round_trip() -> None:
    tags_in = [TagInfo("boiler1.drum_pressure", "boiler1", "int16", "boiler1", "bar", "Drum pressure")]
    assert decode_catalog(encode_catalog(tags_in)) == tags_in
    status = Status(state="online", ts=1_763_683_200_123, agent="0.1.0")
    assert decode_status(encode_status(status)) == status
    with pytest.raises(WireError):
        decode_status(b'{"state":"sleeping","ts":1}')
    with pytest.raises(WireError):
        decode_catalog(b'{"v":1,"tags":[{"name":"bad name"}]}')


def test_a_catalog_too_big_for_a_message_is_compressed_and_still_decodes() -> None:
    tags = [TagInfo(f"press.r{i}", "modbus", "number", "press", "bar", f"register {i} of the press, after the filter")
            for i in range(5000)]  # fmt: skip
    packed = encode_catalog(tags)
    assert len(packed) <= MAX_BATCH_BYTES
    assert json.loads(packed).keys() == {"v", "deflate"}
    assert decode_catalog(packed) == tags


def test_a_catalog_that_cannot_fit_even_compressed_is_refused_by_name() -> None:
    noise = [
        TagInfo(f"t{i}", "modbus", "number", "a", None, base64.b64encode(os.urandom(300)).decode()) for i in range(2000)
    ]
    with pytest.raises(BatchTooLargeError, match="2000 tags"):
        encode_catalog(noise)


def test_a_compressed_catalog_may_not_inflate_without_bound() -> None:
    bomb = base64.b64encode(zlib.compress(b" " * (40 * 2**20), 9)).decode()  # 40 MiB of spaces, 40 KB packed
    with pytest.raises(WireError, match="inflates past"):
        decode_catalog(json.dumps({"v": 1, "deflate": bomb}).encode())
    with pytest.raises(WireError, match="does not inflate"):
        decode_catalog(b'{"v": 1, "deflate": "bm90IHpsaWI="}')


def test_ack_round_trip_and_refusals() -> None:
    assert decode_ack(encode_ack([1, 2, 2**63 - 1])) == [1, 2, 2**63 - 1]
    for bad in (b"[]", b'{"seqs": [-1]}', b'{"seqs": ["1"]}', b"{", b'{"seqs": 5}'):
        with pytest.raises(WireError):
            decode_ack(bad)
