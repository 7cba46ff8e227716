"""`create_backend("auto")`: the preference order, the fallback warning, and availability asked lazily."""

from __future__ import annotations

import logging

import pytest

from mspn_cli.errors import UsageError
from mspn_cli.runtime import base


class _Started:
    def __init__(self, name: str):
        self.name = name


@pytest.fixture
def stand_ins(monkeypatch):
    """Three stand-in backends, fast to slow; records which availability checks and starts ran."""
    base._load_builtin_backends()
    asked, started, broken = [], [], set()

    def available(name):
        def check(device):
            asked.append(name)
            return name != "missing"
        return check

    def factory(name):
        def start(model, device="cpu", **options):
            started.append(name)
            if name in broken:
                raise RuntimeError(f"{name} rejected the graph\nC++ backtrace ...")
            return _Started(name)
        return start

    names = ["fast", "missing", "middle", "reference"]
    monkeypatch.setattr(base, "_PREFERENCE", list(names))
    monkeypatch.setattr(base, "_FACTORIES", {name: factory(name) for name in names})
    monkeypatch.setattr(base, "_AVAILABLE", {name: available(name) for name in names})
    return asked, started, broken


def test_the_first_backend_that_starts_is_used_and_later_ones_are_never_probed(stand_ins):
    asked, started, _ = stand_ins
    assert base.create_backend("auto", model=None).name == "fast"
    assert asked == ["fast"] and started == ["fast"]


def test_a_backend_that_cannot_start_falls_back_to_the_next_available_one_with_a_warning(stand_ins, caplog):
    asked, started, broken = stand_ins
    broken.add("fast")
    with caplog.at_level(logging.WARNING, logger="mspn_cli"):
        assert base.create_backend("auto", model=None).name == "middle"
    assert asked == ["fast", "missing", "middle"] and started == ["fast", "middle"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["backend 'fast' could not start (fast rejected the graph); falling back to 'middle'"]


def test_when_every_backend_fails_the_last_failure_is_raised(stand_ins):
    _, started, broken = stand_ins
    broken.update({"fast", "middle", "reference"})
    with pytest.raises(RuntimeError, match="reference rejected the graph"):
        base.create_backend("auto", model=None)
    assert started == ["fast", "middle", "reference"]


def test_no_available_backend_is_a_usage_error(stand_ins, monkeypatch):
    monkeypatch.setattr(base, "_AVAILABLE", {name: (lambda device: False) for name in base._PREFERENCE})
    with pytest.raises(UsageError, match="no inference backend is available on device 'cpu'"):
        base.create_backend("auto", model=None)
