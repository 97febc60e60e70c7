"""The model registry: versions in ``maintenance.model``, promotion history, safe loading.

Artifacts are pickles (scikit-learn models have no other faithful format), and unpickling
runs code, so loading is guarded twice: the bytes must match the SHA-256 stored when the
model was registered, and the unpickler resolves only the classes a model is made of
(this package, scikit-learn's gradient boosting, numpy arrays and random state). Only the
platform's own registry is trusted: whoever can write ``maintenance.model`` can write both
bytes and checksum, so that table must be writable by the platform's role alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy
import psycopg
import sklearn

from factory import __version__
from maintenance_models.errors import ArtifactError, RegistryError
from maintenance_models.model import RulModel

__all__ = [
    "KIND_RE",
    "ModelInfo",
    "RegisteredModel",
    "code_version",
    "dump_artifact",
    "list_models",
    "live_version",
    "load_artifact",
    "load_model",
    "promote",
    "register",
    "rollback",
]

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

KIND_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # the CHECK on maintenance.model.kind

# Classes are resolved from these modules only; functions only from the explicit list
# (numpy's array and random-state reconstructors). Dotted names are refused outright: they
# would let a pickle walk from an allowed module to anything it imports.
_CLASS_MODULES: Final = (
    "maintenance_models.",
    "sklearn.ensemble._hist_gradient_boosting.",
    "sklearn._loss.",
    "sklearn.preprocessing._label",
    "numpy",
    "numpy.random.",
)
_FUNCTIONS: Final = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    }
)


def _class_module(module: str) -> bool:
    return any(module == p.rstrip(".") or (p.endswith(".") and module.startswith(p)) for p in _CLASS_MODULES)


class _ModelUnpickler(pickle.Unpickler):
    """Resolves only what a trained ``RulModel`` is made of; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if "." not in name:
            if (module, name) in _FUNCTIONS:
                return super().find_class(module, name)
            if _class_module(module):
                found = super().find_class(module, name)
                if isinstance(found, type) and _class_module(found.__module__):
                    return found
        raise ArtifactError(f"model artifact refers to {module}.{name}, which a model never holds")


def code_version() -> str:
    """Versions that decide whether an artifact can be loaded as it was trained."""
    return f"factory-platform {__version__}; scikit-learn {sklearn.__version__}; numpy {numpy.__version__}"


def dump_artifact(model: RulModel) -> tuple[bytes, str]:
    """The artifact bytes and their SHA-256 (hex)."""
    blob = pickle.dumps(model, protocol=5)
    return blob, hashlib.sha256(blob).hexdigest()


def load_artifact(blob: bytes, sha256: str) -> RulModel:
    """Verify the checksum, then unpickle with the restricted unpickler."""
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise ArtifactError(f"model artifact checksum mismatch: stored {sha256}, computed {actual}")
    try:
        model = _ModelUnpickler(io.BytesIO(blob)).load()
    except ArtifactError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        raise ArtifactError(f"model artifact cannot be loaded: {exc}") from exc
    if not isinstance(model, RulModel):
        raise ArtifactError(f"model artifact holds a {type(model).__name__}, not a RulModel")
    return model


@dataclass(frozen=True)
class ModelInfo:
    version: int
    kind: str
    trained_at: datetime
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    live: bool
    code_version: str


@dataclass(frozen=True)
class RegisteredModel:
    info: ModelInfo
    model: RulModel

    @property
    def version(self) -> int:
        return self.info.version


async def register(
    conn: Conn, model: RulModel, *, kind: str, training_data: dict[str, Any], metrics: dict[str, Any]
) -> int:
    """Store a trained model as a new version of ``kind``; its version number."""
    if not KIND_RE.match(kind):
        raise RegistryError(f"model kind {kind!r}: use lower-case letters, digits, '.', '_' or '-'")
    blob, digest = dump_artifact(model)
    async with conn.transaction():
        cur = await conn.execute(
            """INSERT INTO maintenance.model
                   (kind, training_data, config, metrics, artifact, artifact_sha256, code_version)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING version""",
            (
                kind,
                json.dumps(training_data),
                model.config.model_dump_json(),
                json.dumps(metrics),
                blob,
                digest,
                code_version(),
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    version = int(row[0])
    log.info("registered %s model version %d (%d bytes, sha256 %s)", kind, version, len(blob), digest[:12])
    return version


async def _lock_kind(conn: Conn, kind: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"maintenance.promotion:{kind}",))


async def live_version(conn: Conn, kind: str) -> int | None:
    cur = await conn.execute("SELECT version FROM maintenance.live_model WHERE kind = %s", (kind,))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def promote(conn: Conn, version: int) -> str:
    """Make ``version`` the live model of its kind; the kind. Promoting the live one is a no-op."""
    async with conn.transaction():
        cur = await conn.execute("SELECT kind FROM maintenance.model WHERE version = %s", (version,))
        row = await cur.fetchone()
        if row is None:
            raise RegistryError(f"no model version {version}")
        kind = str(row[0])
        await _lock_kind(conn, kind)
        if await live_version(conn, kind) != version:
            await conn.execute("INSERT INTO maintenance.promotion (kind, version) VALUES (%s, %s)", (kind, version))
            log.info("promoted %s model version %d", kind, version)
    return kind


async def rollback(conn: Conn, kind: str) -> int:
    """Retire the live model of ``kind``; the version that is live again (the one promoted before)."""
    async with conn.transaction():
        await _lock_kind(conn, kind)
        cur = await conn.execute(
            """SELECT id, version FROM maintenance.promotion
               WHERE kind = %s AND rolled_back_at IS NULL ORDER BY id DESC LIMIT 2""",
            (kind,),
        )
        rows = await cur.fetchall()
        if len(rows) < 2:
            what = "no live model" if not rows else f"only version {rows[0][1]} was ever promoted"
            raise RegistryError(f"{kind}: nothing to roll back to ({what})")
        await conn.execute("UPDATE maintenance.promotion SET rolled_back_at = now() WHERE id = %s", (rows[0][0],))
    log.info("rolled back %s from version %s to %s", kind, rows[0][1], rows[1][1])
    return int(rows[1][1])


_INFO_COLUMNS: Final = """m.version, m.kind, m.trained_at, m.training_data, m.metrics,
    l.version IS NOT NULL, m.code_version"""
_FROM: Final = "maintenance.model m LEFT JOIN maintenance.live_model l ON l.version = m.version"


def _info(row: tuple[Any, ...]) -> ModelInfo:
    return ModelInfo(int(row[0]), str(row[1]), row[2], dict(row[3]), dict(row[4]), bool(row[5]), str(row[6]))


async def list_models(conn: Conn, kind: str | None = None) -> list[ModelInfo]:
    cur = await conn.execute(
        f"SELECT {_INFO_COLUMNS} FROM {_FROM} WHERE %(kind)s::text IS NULL OR m.kind = %(kind)s ORDER BY m.version",
        {"kind": kind},
    )
    return [_info(row) for row in await cur.fetchall()]


async def load_model(conn: Conn, *, version: int | None = None, kind: str | None = None) -> RegisteredModel:
    """A version by number, or the live model of ``kind``."""
    if version is None:
        if kind is None:
            raise ValueError("name a version or a kind")
        version = await live_version(conn, kind)
        if version is None:
            raise RegistryError(f"{kind}: no model has been promoted")
    cur = await conn.execute(
        f"SELECT {_INFO_COLUMNS}, m.artifact, m.artifact_sha256 FROM {_FROM} WHERE m.version = %s", (version,)
    )
    row = await cur.fetchone()
    if row is None:
        raise RegistryError(f"no model version {version}")
    info = _info(row)
    if info.code_version != code_version():
        log.warning("model version %d was trained with %s; this is %s", version, info.code_version, code_version())
    return RegisteredModel(info, load_artifact(bytes(row[7]), str(row[8])))
