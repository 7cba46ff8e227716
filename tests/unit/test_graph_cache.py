"""The graph cache without MegEngine: sealing, damaged graphs, the digest index, unusable $MSPN_HOME."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

from mspn_cli.export.cache import GraphCache, graph_key_fields
from mspn_cli.export.specs import InputSpec
from mspn_cli.weights import checksum, store
from mspn_cli.weights.checksum import DigestIndex

SPEC = InputSpec.make((1, 3, 8, 8), {0: "N"})
FIELDS = graph_key_fields("onnx", SPEC, "0" * 64)


class Producer:
    def __init__(self, data: bytes = b"graph bytes v1"):
        self.data = data
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.data


@pytest.fixture(autouse=True)
def fresh_usable_roots(monkeypatch):
    """Each test decides afresh whether its $MSPN_HOME is usable (the answer is memoised)."""
    monkeypatch.setattr(store, "_USABLE_ROOTS", {})


def settle(path: Path) -> None:
    """Date the file back, as if written long ago, so its digest is trusted (see RACY_WINDOW_NS)."""
    old = time.time() - 100
    os.utime(path, (old, old))


def cached_graph(cache: GraphCache, producer: Producer):
    path, created = cache.get_or_create("tiny", FIELDS, ".onnx", producer)
    if created:
        cache.seal(path, verified=True)
    return path, created


# --------------------------------------------------------------------------- sealing and damage


def test_sealed_graph_is_reused_without_exporting(tmp_path):
    cache = GraphCache(tmp_path)
    producer = Producer()
    first, created = cached_graph(cache, producer)
    assert created and producer.calls == 1
    again, created = cached_graph(GraphCache(tmp_path), producer)
    assert again == first and not created and producer.calls == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "same_size_edit", "unsealed", "other_exporter", "seal_broken"])
def test_damaged_cached_graph_is_rebuilt_once_with_one_notice(tmp_path, caplog, damage):
    cache = GraphCache(tmp_path)
    producer = Producer(b"0123456789" * 50)
    path, _ = cached_graph(cache, producer)
    seal = GraphCache.seal_path(path)
    if damage == "truncated":
        path.write_bytes(producer.data[:100])
    elif damage == "garbage":
        path.write_bytes(b"not a graph")
    elif damage == "same_size_edit":
        with open(path, "r+b") as handle:
            handle.write(b"X")
        settle(path)  # even an old-looking mtime: the identity (mtime) changed, so it is re-hashed
    elif damage == "unsealed":
        seal.unlink()
    elif damage == "other_exporter":
        record = json.loads(seal.read_text())
        record["exporter"] = "0"
        seal.write_text(json.dumps(record))
    elif damage == "seal_broken":
        seal.write_text("{")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt, created = cached_graph(GraphCache(tmp_path), producer)
    assert created and producer.calls == 2
    assert rebuilt == path and rebuilt.read_bytes() == producer.data
    notices = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    # Rebuilt once: the next run uses it as is.
    _, created = cached_graph(GraphCache(tmp_path), producer)
    assert not created and producer.calls == 2


def test_export_notice_says_it_happens_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        GraphCache(tmp_path).get_or_create("tiny", FIELDS, ".onnx", Producer(), notice="exporting tiny to ONNX (once)")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == ["exporting tiny to ONNX (once)"]


def test_key_changes_with_weights_spec_and_exporter():
    base = GraphCache(Path("/nonexistent")).path_for("tiny", FIELDS, ".onnx")
    other_weights = graph_key_fields("onnx", SPEC, "1" * 64)
    other_spec = graph_key_fields("onnx", InputSpec.make((1, 3, 16, 8), {0: "N"}), "0" * 64)
    other_config = graph_key_fields("onnx", SPEC, "0" * 64, {"model_config": {"input_size": [256, 192]}})
    names = {GraphCache(Path("/nonexistent")).path_for("tiny", f, ".onnx") for f in (other_weights, other_spec, other_config)}
    assert base not in names and len(names) == 3
    assert FIELDS["exporter"] and FIELDS["opset"]


# --------------------------------------------------------------------------- the digest index


def test_unchanged_file_is_not_hashed_again(tmp_path, monkeypatch):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"weights one")
    settle(weights)
    index = DigestIndex(tmp_path / "home")
    assert index.sha256(weights) == hashlib.sha256(b"weights one").hexdigest()
    calls = []
    monkeypatch.setattr(checksum, "sha256_file", lambda path: calls.append(path) or "f" * 64)
    assert index.sha256(weights) == hashlib.sha256(b"weights one").hexdigest()
    assert calls == []


@pytest.mark.parametrize("how", ["rewrite_same_size", "replace_by_rename", "recently_written"])
def test_weights_replaced_in_place_are_hashed_again(tmp_path, how, monkeypatch):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"weights one")
    if how != "recently_written":
        settle(weights)
    else:
        # The first hash comes one second after the write, inside the racy window, whatever
        # the machine's speed: the index's clock is pinned to the file's mtime + 1 s.
        written_ns = weights.stat().st_mtime_ns
        monkeypatch.setattr(checksum, "time", types.SimpleNamespace(time_ns=lambda: written_ns + 1_000_000_000))
        assert 1_000_000_000 < checksum.RACY_WINDOW_NS
    index = DigestIndex(tmp_path / "home")
    old = index.sha256(weights)
    if how == "rewrite_same_size":
        with open(weights, "r+b") as handle:
            handle.write(b"W")
    elif how == "replace_by_rename":
        other = tmp_path / "new.pkl"
        other.write_bytes(b"weights two")
        os.replace(other, weights)
    else:  # rewritten within the same mtime tick: identity equal, but the digest is racy
        stat = weights.stat()
        with open(weights, "r+b") as handle:
            handle.write(b"W")
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    new = index.sha256(weights)
    assert new == hashlib.sha256(weights.read_bytes()).hexdigest() != old
    # ...so the graph-cache key changes with it.
    assert graph_key_fields("onnx", SPEC, new) != graph_key_fields("onnx", SPEC, old)


def test_damaged_index_is_ignored(tmp_path):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"weights")
    home = tmp_path / "home"
    home.mkdir()
    (home / checksum.INDEX_FILE_NAME).write_text("[1, 2")
    assert DigestIndex(home).sha256(weights) == hashlib.sha256(b"weights").hexdigest()


# --------------------------------------------------------------------------- an unusable $MSPN_HOME


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """The system temp dir, redirected so the fallback folder and leftovers can be inspected."""
    folder = tmp_path / "systemtmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_mspn_home_that_is_a_file_falls_back_with_one_warning(tmp_path, monkeypatch, private_tmp, caplog):
    home = tmp_path / "home_is_a_file"
    home.write_text("oops")
    monkeypatch.setenv("MSPN_HOME", str(home))
    with caplog.at_level(logging.WARNING):
        root = store.usable_cache_root()
        assert store.usable_cache_root() == root  # said once per process
    assert root is not None and root.parent == private_tmp
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(home) in warnings[0] and str(root) in warnings[0] and "\n" not in warnings[0]
    cache = GraphCache()
    assert cache.persistent and cache.directory == root / "graphs"
    path, _ = cached_graph(cache, Producer())
    assert path.parent == root / "graphs"


def test_no_usable_cache_at_all_leaves_no_temporary_folders(tmp_path, monkeypatch, private_tmp, caplog):
    home = tmp_path / "home_is_a_file"
    home.write_text("oops")
    monkeypatch.setenv("MSPN_HOME", str(home))
    (private_tmp / store._private_temp_root().name).write_text("the per-user fallback is blocked too")
    with caplog.at_level(logging.WARNING):
        cache = GraphCache()
    assert not cache.persistent
    assert any("without a cache" in r.getMessage() for r in caplog.records)
    producer = Producer()
    path, created = cache.get_or_create("tiny", FIELDS, ".onnx", producer)
    assert created and path.read_bytes() == producer.data
    cache.seal(path, verified=True)  # nothing to seal: never reused
    cache.release()
    assert not path.exists()
    assert sorted(p.name for p in private_tmp.iterdir()) == [store._private_temp_root().name]


def test_unwritable_cache_folder_keeps_the_graph_for_this_run_only(tmp_path, private_tmp, caplog):
    blocked = tmp_path / "graphs_is_a_file"
    blocked.write_text("not a folder")
    cache = GraphCache(blocked)
    with caplog.at_level(logging.WARNING):
        path, created = cache.get_or_create("tiny", FIELDS, ".onnx", Producer())
    assert created and path.is_file() and path.parent.parent == private_tmp
    assert any("for this run only" in r.getMessage() for r in caplog.records)
    cache.release()
    assert list(private_tmp.iterdir()) == []


_READ_ONLY_PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from mspn_cli.weights import store
root = store.usable_cache_root()
print(root)
"""


def test_read_only_mspn_home_is_reported_and_avoided(tmp_path):
    from tests.conftest import _drop_permission_override, _effective_capabilities

    if os.geteuid() == 0 and not _effective_capabilities() >> 8 & 1:
        pytest.skip("running as root without CAP_SETPCAP: cannot make file permissions apply to the child")
    home = tmp_path / "read_only_home"
    home.mkdir()
    home.chmod(0o555)
    systemtmp = tmp_path / "systemtmp"
    systemtmp.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_PROBE], capture_output=True, text=True, timeout=120,
            env=dict(os.environ, MSPN_HOME=str(home), TMPDIR=str(systemtmp)),
            preexec_fn=_drop_permission_override if os.geteuid() == 0 else None,
        )
    finally:
        home.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(home) in lines[0] and "unusable" in lines[0], proc.stderr
    assert Path(proc.stdout.strip()).parent == systemtmp
    assert list(home.iterdir()) == []
