"""The MQTT wire contract, version 1: topic names and the telemetry batch codec.

Both the edge agent (encoder) and ingest (decoder) use this module, so it imports
nothing beyond the standard library: it must run on a Raspberry Pi. The JSON Schema
in ``factory/schemas/telemetry-batch.v1.json`` is the published form of the same
rules; tests hold the two together.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict as _asdict
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from importlib import resources
from itertools import accumulate
from typing import Any, Final, Literal, TypeGuard, TypeVar

import orjson

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_CATALOG_BYTES",
    "MAX_POINTS_BYTES",
    "BatchTooLargeError",
    "Columns",
    "Point",
    "Quality",
    "Status",
    "TagInfo",
    "TelemetryBatch",
    "TopicKind",
    "TopicName",
    "Value",
    "WireError",
    "batch_payload",
    "decode_ack",
    "decode_batch",
    "decode_catalog",
    "decode_columns",
    "decode_status",
    "encode_ack",
    "encode_batch",
    "encode_catalog",
    "encode_points",
    "encode_status",
    "parse_topic",
    "schema",
    "subscription",
    "topic",
]

VERSION: Final = 1
MAX_BATCH_BYTES: Final = 256 * 1024
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TAG_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_TS_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_SEQ: Final = 2**63 - 1
MAX_DOUBLE: Final = sys.float_info.max  # a number ingest cannot store as double precision is refused
POINT_KEYS: Final = frozenset({"t", "ts", "v", "q"})
BATCH_KEYS: Final = frozenset({"v", "seq", "hist", "points"})

Value = float | int | bool | None


class WireError(ValueError):
    """A payload or topic that breaks the contract; the message is the reason."""


class BatchTooLargeError(WireError):
    """The encoded batch exceeds MAX_BATCH_BYTES; send fewer points at once."""


class Quality(IntEnum):
    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    TAGS = "tags"
    CMD = "cmd"
    CMD_REPLY = "cmd/reply"
    ACK = "ack"  # ingest -> device: the batches it has stored


@dataclass(frozen=True, slots=True)
class Point:
    tag: str
    ts: int
    value: Value
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    seq: int
    points: tuple[Point, ...]
    hist: bool = False


@dataclass(frozen=True, slots=True)
class TopicName:
    site: str
    device: str
    kind: TopicKind


def topic(site: str, device: str, kind: TopicKind) -> str:
    """The topic for one device; rejects names the contract does not allow."""
    for label, name in (("site", site), ("device", device)):
        if not NAME_RE.fullmatch(name):
            raise WireError(f"{label} {name!r} must match {NAME_RE.pattern}")
    return f"factory/v1/{site}/{device}/{kind.value}"


def subscription(kind: TopicKind) -> str:
    """Wildcard filter for one kind of device topic across all sites and devices."""
    return f"factory/v1/+/+/{kind.value}"


def parse_topic(name: str) -> TopicName:
    parts = name.split("/")
    if len(parts) < 5 or parts[0] != "factory" or parts[1] != "v1":
        raise WireError(f"topic {name!r} is not factory/v1/{{site}}/{{device}}/...")
    site, device, rest = parts[2], parts[3], "/".join(parts[4:])
    try:
        kind = TopicKind(rest)
    except ValueError:
        raise WireError(f"topic {name!r}: unknown kind {rest!r}") from None
    if not NAME_RE.fullmatch(site) or not NAME_RE.fullmatch(device):
        raise WireError(f"topic {name!r}: site and device must match {NAME_RE.pattern}")
    return TopicName(site, device, kind)


def encode_points(
    tags: Sequence[str], stamps: Sequence[int], values: Sequence[Value], quality: Sequence[int]
) -> tuple[bytes, list[int]]:
    """Points (as columns) in their wire form: JSON objects joined by commas, and where each ends.

    The edge buffer stores this and a batch is a header around it (``batch_payload``), so a
    point is encoded once, in bulk: the values through the C JSON encoder, the rest from
    per-tag prefixes. Tag names are checked once (they repeat in every batch).
    """
    if not values:
        return b"", []
    try:  # scalars never contain a comma, so the encoded list splits back into its items
        texts = json.dumps(values if isinstance(values, list) else list(values), allow_nan=False,
                           separators=(",", ":"))[1:-1].split(",")  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise WireError(f"cannot encode points: {exc}") from exc
    prefixes = _prefixes
    try:
        parts = [
            (prefixes.get(t) or _prefix(t)) + f'{s},"v":{v}' + _TAILS[q]
            for t, s, v, q in zip(tags, stamps, texts, quality, strict=True)
        ]
    except IndexError as exc:
        raise WireError(f"quality must be 0, 1 or 2: {exc}") from exc
    ends = [end - 1 for end in accumulate(len(p) + 1 for p in parts)]  # a comma follows each object
    return ",".join(parts).encode(), ends


_TAILS: Final = (',"q":0}', ',"q":1}', ',"q":2}')
_prefixes: dict[str, str] = {}  # tag name -> '{"t":"name","ts":'


def _prefix(tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise WireError(f"tag name {tag!r} must match {TAG_RE.pattern}")
    prefix = f'{{"t":"{tag}","ts":'
    if len(_prefixes) < 100_000:
        _prefixes[tag] = prefix
    return prefix


def batch_payload(seq: int, hist: bool, points: bytes) -> bytes:
    """A telemetry batch around points already encoded by ``encode_points`` (joined by commas)."""
    data = b'{"v":%d,"seq":%d,"hist":%s,"points":[%s]}' % (VERSION, seq, b"true" if hist else b"false", points)
    if len(data) > MAX_BATCH_BYTES:
        raise BatchTooLargeError(f"batch is {len(data)} bytes, the limit is {MAX_BATCH_BYTES}")
    return data


# Room for the points themselves in a batch of the largest header.
MAX_POINTS_BYTES: Final = MAX_BATCH_BYTES - len(b'{"v":1,"seq":%d,"hist":false,"points":[]}' % MAX_SEQ)


def encode_batch(batch: TelemetryBatch) -> bytes:
    """Encode a batch; raises WireError for anything the decoder would refuse."""
    ps = batch.points
    body, _ = encode_points([p.tag for p in ps], [p.ts for p in ps], [p.value for p in ps],
                            [p.quality for p in ps])  # fmt: skip
    return batch_payload(batch.seq, batch.hist, body)


def _reject_constant(name: str) -> Any:
    raise WireError(f"non-finite number {name} is not valid JSON")


def _is_int(value: object) -> TypeGuard[int | float]:
    """JSON Schema's integer: a number with no fractional part, never a boolean."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


@dataclass(frozen=True, slots=True)
class Columns:
    """A decoded batch as parallel lists: what ingest writes, without an object per point.

    ``values`` holds what the wire held (number, boolean or None).
    """

    seq: int
    hist: bool
    tags: list[str]
    ts: list[int]
    values: list[Value]
    quality: list[int]


def decode_batch(data: bytes) -> TelemetryBatch:
    """Decode and validate a telemetry batch; WireError says precisely what is wrong."""
    c = decode_columns(data)
    points = tuple(Point(t, s, v, Quality(q)) for t, s, v, q in zip(c.tags, c.ts, c.values, c.quality, strict=True))
    return TelemetryBatch(seq=c.seq, hist=c.hist, points=points)


def _parse_json(data: bytes) -> Any:
    """orjson on the hot path; when it refuses, the standard library parses again, so the
    error names the problem the same way (and the few documents only it accepts, such as
    integers beyond 64 bits, reach the field checks)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


def _load_body(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_BATCH_BYTES:
        raise WireError(f"batch is {len(data)} bytes, the limit is {MAX_BATCH_BYTES}")
    try:
        body = _parse_json(data)
    except UnicodeDecodeError as exc:
        raise WireError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise WireError(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise WireError("payload is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise WireError(f"payload is not usable JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise WireError("batch must be a JSON object")
    if extra := set(body) - BATCH_KEYS:
        raise WireError(f"unknown batch field(s): {', '.join(sorted(extra))}")
    if "v" not in body:
        raise WireError("missing field v (wire format version)")
    if not _is_int(body["v"]) or body["v"] != VERSION:
        raise WireError(f"unsupported version v={body['v']!r}, expected {VERSION}")
    return body


_known_tags: set[str] = set()  # names that already matched TAG_RE: they repeat in every batch


def decode_columns(data: bytes) -> Columns:
    """``decode_batch`` without a Point per point: the common shape takes a fast path, and
    anything else goes through the point-by-point check, which also names the problem."""
    body = _load_body(data)
    seq = body.get("seq")
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise WireError(f"seq must be an integer from 0 to {MAX_SEQ}, got {seq!r}")
    hist = body.get("hist", False)
    if not isinstance(hist, bool):
        raise WireError(f"hist must be a boolean, got {hist!r}")
    points = body.get("points")
    if not isinstance(points, list) or not points:
        raise WireError("points must be a non-empty array")
    if (columns := _columns_fast(points)) is not None:
        return Columns(int(seq), hist, *columns)
    tags: list[str] = []
    stamps: list[int] = []
    values: list[Value] = []
    quality: list[int] = []
    for index, raw in enumerate(points):
        point = _decode_point(index, raw)
        tags.append(point.tag)
        stamps.append(point.ts)
        values.append(point.value)
        quality.append(int(point.quality))
    return Columns(int(seq), hist, tags, stamps, values, quality)


_PLAIN_VALUES: Final = frozenset({float, int, bool, type(None)})
_QUALITIES: Final = frozenset({0, 1, 2})


def _columns_fast(points: list[Any]) -> tuple[list[str], list[int], list[Value], list[int]] | None:
    """The columns of points in the common shape, checked a column at a time (the loops
    run in C); None if anything is unusual, and the point-by-point check decides."""
    if set(map(type, points)) != {dict} or not set().union(*points) <= POINT_KEYS:
        return None
    try:
        tags = [p["t"] for p in points]
        stamps = [p["ts"] for p in points]
        values = [p["v"] for p in points]
    except KeyError:
        return None
    quality = [p.get("q", 0) for p in points]
    kinds = set(map(type, values))
    usable = (
        set(map(type, tags)) == {str} and set(map(type, stamps)) == {int} and set(map(type, quality)) <= {int}
        and min(stamps) >= 0 and max(stamps) <= MAX_TS_MS and set(quality) <= _QUALITIES
        and kinds <= _PLAIN_VALUES
        # the standard library's parser (orjson's fallback) reads 1e400 as infinity
        and (float not in kinds or all(map(math.isfinite, values if kinds == {float} else _of(float, values))))
        and (int not in kinds or all(-MAX_DOUBLE <= v <= MAX_DOUBLE for v in _of(int, values)))
        and _valid_tags(set(tags))
    )  # fmt: skip
    return (tags, stamps, values, quality) if usable else None


def _valid_tags(names: set[str]) -> bool:
    """All names match TAG_RE; the ones seen before are known to."""
    unseen = names - _known_tags
    if not all(TAG_RE.fullmatch(t) for t in unseen):
        return False
    if len(_known_tags) < 100_000:
        _known_tags.update(unseen)
    return True


def _of(kind: type, values: list[Value]) -> list[Any]:
    return [v for v in values if type(v) is kind]


def _decode_point(index: int, raw: object) -> Point:
    where = f"points[{index}]"
    if not isinstance(raw, dict):
        raise WireError(f"{where} must be an object")
    if extra := set(raw) - POINT_KEYS:
        raise WireError(f"{where}: unknown field(s): {', '.join(sorted(extra))}")
    tag = raw.get("t")
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise WireError(f"{where}.t must match {TAG_RE.pattern}, got {tag!r}")
    ts = raw.get("ts")
    if not _is_int(ts) or not 0 <= ts <= MAX_TS_MS:
        raise WireError(f"{where}.ts must be integer epoch milliseconds, got {ts!r}")
    if "v" not in raw:
        raise WireError(f"{where}.v is missing")
    value = raw["v"]
    if value is not None and not isinstance(value, int | float):
        raise WireError(f"{where}.v must be a number, boolean or null, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise WireError(f"{where}.v is not finite")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_DOUBLE <= value <= MAX_DOUBLE:
        raise WireError(f"{where}.v is out of range for a double")
    quality = raw.get("q", 0)
    if not _is_int(quality) or quality not in (0, 1, 2):
        raise WireError(f"{where}.q must be 0, 1 or 2, got {quality!r}")
    return Point(tag=tag, ts=int(ts), value=value, quality=Quality(int(quality)))


def schema() -> dict[str, Any]:
    """The published JSON Schema of the telemetry batch."""
    text = resources.files("factory").joinpath("schemas/telemetry-batch.v1.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One entry of a device's retained tag catalog."""

    name: str
    source: str
    type: str
    asset: str | None = None
    unit: str | None = None
    description: str | None = None


MAX_CATALOG_BYTES: Final = MAX_BATCH_BYTES
MAX_INFLATED_BYTES: Final = 32 * 2**20  # a compressed catalog may hold at most this much JSON


def encode_catalog(tags: list[TagInfo]) -> bytes:
    """The catalog as one message of at most ``MAX_CATALOG_BYTES``: plain JSON, or, when that
    is too big (thousands of tags with descriptions), ``{"v": 1, "deflate": BASE64}`` of the
    same JSON. Raises ``BatchTooLargeError`` when even that does not fit."""
    entries = [{k: v for k, v in _asdict(t).items() if v is not None} for t in tags]
    plain = json.dumps({"v": VERSION, "tags": entries}, separators=(",", ":")).encode()
    if len(plain) <= MAX_CATALOG_BYTES:
        return plain
    packed = b'{"v":%d,"deflate":"%s"}' % (VERSION, base64.b64encode(zlib.compress(plain, 9)))
    if len(packed) > MAX_CATALOG_BYTES:
        raise BatchTooLargeError(
            f"the tag catalog of {len(tags)} tags is {len(plain):,} bytes ({len(packed):,} compressed),"
            f" over the {MAX_CATALOG_BYTES:,}-byte message limit: fewer tags or shorter descriptions per device"
        )
    return packed


def _inflate(packed: object) -> bytes:
    if not isinstance(packed, str):
        raise WireError('tag catalog "deflate" must be a base64 string')
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.b64decode(packed, validate=True), MAX_INFLATED_BYTES)
    except (ValueError, zlib.error) as exc:
        raise WireError(f"tag catalog does not inflate: {exc}") from exc
    if inflater.unconsumed_tail:
        raise WireError(f"tag catalog inflates past {MAX_INFLATED_BYTES:,} bytes")
    return data


def decode_catalog(data: bytes) -> list[TagInfo]:
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        if isinstance(body, dict) and "deflate" in body and body.get("v") == VERSION:
            body = json.loads(_inflate(body["deflate"]).decode("utf-8"), parse_constant=_reject_constant)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON syntax, huge numbers
        raise WireError(f"tag catalog is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict) or body.get("v") != VERSION or not isinstance(body.get("tags"), list):
        raise WireError('tag catalog must be {"v": 1, "tags": [...]}')
    out = []
    for i, raw in enumerate(body["tags"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not TAG_RE.fullmatch(raw["name"]):
            raise WireError(f"tags[{i}].name must match {TAG_RE.pattern}")
        fields = {k: raw.get(k) for k in ("source", "type", "asset", "unit", "description")}
        if not all(isinstance(v, str | None) for v in fields.values()):
            raise WireError(f"tags[{i}]: source, type, asset, unit and description must be strings")
        for key, value in fields.items():
            _storable(value, f"tags[{i}].{key}")
        out.append(
            TagInfo(
                name=raw["name"],
                source=fields["source"] or "",
                type=fields["type"] or "number",
                asset=fields["asset"],
                unit=fields["unit"],
                description=fields["description"],
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Status:
    """Birth/death message of a device: retained, and the last will when offline."""

    state: Literal["online", "offline"]
    ts: int
    agent: str


def encode_status(status: Status) -> bytes:
    return json.dumps(_asdict(status), separators=(",", ":")).encode()


_Text = TypeVar("_Text", str, str | None)

MAX_ACK_SEQS: Final = 10_000


def encode_ack(seqs: Sequence[int]) -> bytes:
    """Ingest's word to a device that these batches are stored (committed, or dead-lettered)."""
    return b'{"v":%d,"seqs":[%s]}' % (VERSION, b",".join(b"%d" % s for s in seqs))


def decode_ack(data: bytes) -> list[int]:
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"ack is not UTF-8 JSON: {exc}") from exc
    seqs = body.get("seqs") if isinstance(body, dict) else None
    if not isinstance(seqs, list) or len(seqs) > MAX_ACK_SEQS:
        raise WireError(f'ack must be an object with "seqs": a list of at most {MAX_ACK_SEQS} batch numbers')
    if not all(_is_int(s) and 0 <= s <= MAX_SEQ for s in seqs):
        raise WireError(f"ack seqs must be integers from 0 to {MAX_SEQ}")
    return [int(s) for s in seqs]


def decode_status(data: bytes) -> Status:
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON syntax, huge numbers
        raise WireError(f"status is not UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict) or body.get("state") not in ("online", "offline"):
        raise WireError('status must be an object with "state": "online" or "offline"')
    ts = body.get("ts")
    if not _is_int(ts) or not 0 <= ts <= MAX_TS_MS:
        raise WireError(f"status ts must be integer epoch milliseconds, got {ts!r}")
    return Status(state=body["state"], ts=int(ts), agent=_storable(str(body.get("agent", "")), "status agent"))


def _storable(text: _Text, what: str) -> _Text:
    """Text PostgreSQL can store: JSON allows the NUL character and unpaired surrogates
    (\\u0000, \\ud800), text columns do not, and the database would refuse the whole flush."""
    if text is not None:
        if "\x00" in text:
            raise WireError(f"{what} must not contain NUL characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise WireError(f"{what} must be valid Unicode (it holds an unpaired surrogate)") from exc
    return text
