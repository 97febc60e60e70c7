"""Every source kind: a sample config that loads, and an implementation the registry opens."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

from edge_agent.config import SourceConfig, load_config
from edge_agent.source import Source, open_source

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "edge_agent" / "samples").glob("*.yaml"))
KINDS = {typing.get_args(model.model_fields["kind"].annotation)[0] for model in typing.get_args(SourceConfig)}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_each_sample_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.sources
    for source in config.sources:
        assert source.tags


def test_every_kind_has_a_sample() -> None:
    sampled = {source.kind for path in SAMPLES for source in load_config(path).sources}
    assert sampled == KINDS == {"modbus", "opcua"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_registry_opens_each_kind_as_a_source(path: Path) -> None:
    for config in load_config(path).sources:
        source = open_source(config)
        assert source.source is config
        assert not source.ready  # nothing is connected before run()
        for name in ("run", "write", "probe"):
            member = getattr(source, name)
            assert inspect.iscoroutinefunction(member), name
            wanted = inspect.signature(getattr(Source, name)).parameters.keys() - {"self"}
            assert inspect.signature(member).parameters.keys() == wanted, name
