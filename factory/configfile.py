"""Load a YAML file a person wrote into a pydantic model, with errors naming file, line and key.

Shared by every part that reads hand-written YAML (the edge config today). Edge-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "Loc", "load_yaml_model"]

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
Checks = Callable[[Any], list[tuple[Loc, str]]]  # problems across fields, found in the raw data


class ConfigError(ValueError):
    """A config file that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))

    def report(self) -> str:
        """The problems as a person reads them: how many, then one indented line each."""
        return f"{len(self.problems)} problem(s) in {self.path}:\n" + "\n".join(f"  {p}" for p in self.problems)


class _Reader:
    """Plain data from the YAML node tree, with the line of every key and item, and the
    problems YAML itself lets through: repeated keys (the last would silently win) and
    anchors with aliases (refused: a recursive one never ends, nested ones grow
    exponentially, and a hand-written config does not need them)."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[int, Loc, str]] = []  # line, where, what
        self._seen: set[int] = set()

    def read(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if id(node) in self._seen or getattr(node, "anchor", None):
            line = node.start_mark.line + 1
            self.problems.append((line, loc, "YAML anchors and aliases (&name, *name) are not allowed here"))
            return None
        self._seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key: str | int = (
                    yaml.safe_load(yaml.serialize(key_node)) if isinstance(key_node, yaml.ScalarNode) else "?"
                )
                if key in out:
                    line = key_node.start_mark.line + 1
                    self.problems.append(
                        (line, (*loc, key), f"appears twice (first on line {self.lines[(*loc, key)]})")
                    )
                    continue
                self.lines[(*loc, key)] = key_node.start_mark.line + 1  # the key's line, not the value's
                out[key] = self.read(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*loc, i)) for i, item in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))


def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def _data_loc(data: Any, loc: Loc) -> Loc:
    """Map pydantic's error location onto the data, dropping the labels pydantic adds for
    discriminated unions (the ``kind`` value) so the path matches what the person wrote."""
    out: list[str | int] = []
    here: Any = data
    for part in loc:
        if _has(here, part):
            here = here[part]
        elif isinstance(here, dict) and here.get("kind") == part:
            continue
        else:
            out.append(part)
            break
        out.append(part)
    return tuple(out)


def _key_text(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def load_yaml_model(path: Path, model: type[M], checks: Checks | None = None) -> M:
    """Read ``path`` and validate it as ``model`` (and with ``checks``, which see the raw
    data: cross-field problems show up with their lines, beside every other problem, in one
    run); raise ConfigError listing every problem, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ConfigError(path, [f"{path}:{line}: invalid YAML: {exc}"]) from exc
    reader = _Reader()
    data = reader.read(node, ()) if node is not None else {}
    found = [*reader.problems]
    found += [(_line_of(loc, reader.lines), loc, msg) for loc, msg in (checks(data) if checks is not None else [])]
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        checked = bool(found)
        for err in exc.errors():
            loc = _data_loc(data, tuple(err["loc"]))
            if loc or not checked:  # a whole-model check repeats what the checks found, at no line
                found.append((_line_of(loc, reader.lines), loc, err["msg"]))
    else:
        if not found:
            return config
    raise _refusal(path, found)


def _refusal(path: Path, found: list[tuple[int, Loc, str]]) -> ConfigError:
    problems = sorted({(line, _key_text(loc), msg) for line, loc, msg in found})
    return ConfigError(path, [f"{path}:{line}: {key}: {msg}" for line, key, msg in problems])
