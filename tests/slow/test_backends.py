"""Every backend reproduces the megengine reference; the graph cache is reused."""

from __future__ import annotations

import numpy as np
import onnxruntime  # noqa: F401 - a hard dependency: a broken install fails here, it never skips
import pytest

from mspn_cli.runtime.lite_probe import lite_runs_here
from tests.conftest import requires_lite

from tests.conftest import skip_module_without_megengine  # noqa: E402

skip_module_without_megengine()
pytestmark = pytest.mark.megengine

from tests.conftest import megengine_idle  # noqa: E402
from mspn_cli.runtime import available_backends, create_backend
from mspn_cli.export.verify import relative_error
from mspn_cli.errors import UsageError
from mspn_cli.runtime.openvino_backend import openvino_available

mge = megengine_idle()
F = mge.functional
M = mge.module

TOLERANCE = 1e-4
EXPORTED_BACKENDS = [
    "onnxruntime",
    pytest.param("mge-lite", marks=requires_lite),
    pytest.param("openvino", marks=pytest.mark.skipif(
        not openvino_available("cpu"), reason="openvino is not installed (optional)")),
]


def _load(model_name: str, weights):
    from mspn_cli.models import build_model
    from mspn_cli.weights import load_checkpoint, load_weights_into

    model = build_model(model_name)
    load_weights_into(model, load_checkpoint(weights), str(weights))
    return model


def _assert_close(actual, expected):
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert got.shape == want.shape, (index, got.shape, want.shape)
        error = relative_error(got, want)
        assert error <= TOLERANCE, (index, error)


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("graphs")


# --------------------------------------------------------------------------- MSPN


MSPN_BATCHES = (1, 3)


@pytest.fixture(scope="module")
def mspn_case(mspn_weights):
    """The MSPN network with the test weights and MegEngine's heatmaps for batches of 1 and 3."""
    model = _load("mspn_4stage", mspn_weights)
    rng = np.random.default_rng(0)
    batches = {n: rng.uniform(-2, 2, size=(n, 3, 256, 192)).astype(np.float32) for n in MSPN_BATCHES}
    reference = create_backend("megengine", model)
    expected = {n: reference.run(batch) for n, batch in batches.items()}
    return model, batches, expected


@pytest.mark.parametrize("backend_name", EXPORTED_BACKENDS)
def test_mspn_backends_match_megengine_at_any_batch_size(backend_name, mspn_case, graph_dir):
    model, batches, expected = mspn_case
    backend = create_backend(backend_name, model, cache_dir=graph_dir, cache_key="mspn-test-seed0",
                             input_shape=(1, 3, 256, 192), dynamic_axes={0: "N"})  # the caller declares the spec
    assert backend.name == backend_name
    assert getattr(backend, "precision", "fp32") == "fp32"  # OpenVINO: read back from the compiled model (f32 forced)
    for n in MSPN_BATCHES:
        outputs = backend.run(batches[n])
        assert outputs[0].shape == (n, 17, 64, 48)
        _assert_close(outputs, expected[n])
    backend.close()


# --------------------------------------------------------------------------- RetinaNet


DETECTOR_SHAPES = ((1, 3, 160, 224), (2, 3, 224, 288))


@pytest.fixture(scope="module")
def detector_case(detector_weights):
    model = _load("retinanet_res50_coco_3x_800size", detector_weights)
    rng = np.random.default_rng(1)
    batches = {shape: rng.uniform(0, 255, size=shape).astype(np.float32) for shape in DETECTOR_SHAPES}
    reference = create_backend("megengine", model)
    expected = {shape: reference.run(batch) for shape, batch in batches.items()}
    return model, batches, expected


@pytest.mark.parametrize("backend_name", EXPORTED_BACKENDS)
def test_detector_backends_match_megengine_at_any_size(backend_name, detector_case, graph_dir):
    model, batches, expected = detector_case
    backend = create_backend(backend_name, model, cache_dir=graph_dir)  # no cache_key: the weights are hashed
    for shape in DETECTOR_SHAPES:
        outputs = backend.run(batches[shape])
        assert len(outputs) == 10  # logits then offsets of P3..P7
        assert outputs[0].shape == (shape[0], 720, shape[2] // 8, shape[3] // 8)
        assert outputs[5].shape == (shape[0], 36, shape[2] // 8, shape[3] // 8)
        _assert_close(outputs, expected[shape])


# --------------------------------------------------------------------------- selection and cache


def test_auto_prefers_openvino_then_onnxruntime_then_lite_then_megengine_on_cpu():
    names = available_backends("cpu")
    expected = [name for name in ("openvino", "onnxruntime", "mge-lite", "megengine") if name in names]
    assert names[: len(expected)] == expected
    assert "megengine" in names
    assert ("mge-lite" in names) == lite_runs_here()  # offered only where Lite runs
    assert "onnxruntime" not in available_backends("gpu")
    assert "mge-lite" not in available_backends("gpu")
    assert "openvino" not in available_backends("gpu")


class TinyNet(M.Module):
    """A network the backends know nothing about: its graph is exported on the first batch."""

    def __init__(self):
        super().__init__()
        self.conv = M.Conv2d(3, 4, 3, 1, 1)
        self.bn = M.BatchNorm2d(4)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


@pytest.mark.parametrize("backend_name", EXPORTED_BACKENDS)
def test_graph_cache_is_reused_by_the_next_backend(backend_name, tmp_path):
    model = TinyNet()
    model.eval()
    batch = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    expected = create_backend("megengine", model).run(batch)

    first = create_backend(backend_name, model, cache_dir=tmp_path, input_shape=(1, 3, 8, 8), dynamic_axes={0: "N"})
    # (mge-lite may export more than once: it falls back to another layout when NCHW88 fails.)
    assert first.exported and first.cache.exports >= 1
    graph = first.graph_path
    assert graph.parent == tmp_path and graph.is_file()
    written = graph.stat().st_mtime_ns
    _assert_close(first.run(batch), expected)

    second = create_backend(backend_name, model, cache_dir=tmp_path, input_shape=(1, 3, 8, 8), dynamic_axes={0: "N"})
    assert not second.exported and second.cache.exports == 0
    assert second.graph_path == graph and graph.stat().st_mtime_ns == written
    _assert_close(second.run(batch), expected)
    # No temporary files left behind: the graph, its seal and the digest index only (and
    # OpenVINO's folder of compiled models, which it keeps beside the graphs).
    kept = sorted([graph.name, graph.name + ".seal.json", "sha256-index.json"] + (["openvino"] if backend_name == "openvino" else []))
    assert sorted(p.name for p in tmp_path.iterdir()) == kept

    # Other weights are another graph.
    model.conv.bias._reset(mge.tensor(np.ones(model.conv.bias.shape, np.float32)))
    third = create_backend(backend_name, model, cache_dir=tmp_path, input_shape=(1, 3, 8, 8), dynamic_axes={0: "N"})
    assert third.exported and third.graph_path != graph


@pytest.mark.parametrize("backend_name", EXPORTED_BACKENDS)
def test_unknown_network_is_exported_for_its_first_batch(backend_name, tmp_path):
    model = TinyNet()
    model.eval()
    backend = create_backend(backend_name, model, cache_dir=tmp_path)
    assert backend.graph_path is None  # nothing known about the input yet
    small = np.random.default_rng(3).normal(size=(1, 3, 8, 12)).astype(np.float32)
    large = np.random.default_rng(4).normal(size=(3, 3, 16, 8)).astype(np.float32)
    reference = create_backend("megengine", model)
    _assert_close(backend.run(small), reference.run(small))
    _assert_close(backend.run(large), reference.run(large))  # N, H and W may vary
    with pytest.raises(UsageError, match="prepared for inputs"):
        backend.run(np.zeros((1, 4, 8, 8), np.float32))


def test_exported_backends_are_cpu_only():
    model = TinyNet()
    for name in ("onnxruntime", "mge-lite"):
        with pytest.raises(UsageError, match="not available"):
            create_backend(name, model, device="gpu")


@pytest.mark.parametrize("backend_name", EXPORTED_BACKENDS)
def test_damaged_cached_graph_is_exported_again(backend_name, tmp_path):
    model = TinyNet()
    model.eval()
    spec = {"input_shape": (1, 3, 8, 8), "dynamic_axes": {0: "N"}}
    graph = create_backend(backend_name, model, cache_dir=tmp_path, **spec).graph_path
    graph.write_bytes(b"not a graph")
    again = create_backend(backend_name, model, cache_dir=tmp_path, **spec)
    assert again.exported
    batch = np.random.default_rng(5).normal(size=(2, 3, 8, 8)).astype(np.float32)
    _assert_close(again.run(batch), create_backend("megengine", model).run(batch))


# --------------------------------------------------------------------------- memory

_HEAP_PROBE = """
import json, sys
import numpy as np
from mspn_cli._mge import import_megengine
mge = import_megengine()
M = mge.module
from mspn_cli.runtime import create_backend

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20

net = M.Sequential(*[M.Sequential(M.Conv2d(16, 16, 3, 1, 1), M.ReLU()) for _ in range(12)])
net.eval()
backend = create_backend("megengine", net)
samples = []
for n in [4, 8, 4, 8, 6, 8, 4, 8, 8, 8]:  # ~19 MB activations, batch size changing
    backend.run(np.ones((n, 16, 192, 192), np.float32))
    samples.append(rss_mb())
print(json.dumps({"samples": samples, "activation_mb": 8 * 16 * 192 * 192 * 4 / 2**20}))
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc and relies on glibc")
def test_megengine_backend_memory_stays_flat_across_calls_and_batch_sizes():
    # Without mspn_cli._mge.cap_heap_growth this probe climbs from ~0.3 to ~1 GB (glibc
    # keeps freed activations on a fragmented heap); with it, it stays within ~40 MB.
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    proc = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    samples = probe["samples"]
    # The baseline is the probe's own RSS after its first calls; the bound is in units of the
    # largest call's activations (~19 MB), so it does not depend on the machine's footprint.
    growth = max(samples[1:]) - samples[1]
    assert growth < 8 * probe["activation_mb"], f"RSS grew by {growth:.0f} MB over repeated calls: {samples}"


# --------------------------------------------------------------------------- auto fallback


class CumulativeNet(M.Module):
    """Uses an operator the ONNX converter does not know (Cumsum)."""

    def forward(self, x):
        return F.cumsum(x, axis=1)


@requires_lite
def test_auto_falls_back_when_the_fastest_backend_cannot_export(tmp_path, caplog):
    import logging

    from mspn_cli.errors import UnsupportedOperatorError

    model = CumulativeNet()
    spec = {"cache_dir": tmp_path, "input_shape": (1, 3, 4, 4), "dynamic_axes": {0: "N"}}
    with pytest.raises(UnsupportedOperatorError, match="Cumsum"):
        create_backend("onnxruntime", model, **spec)  # named explicitly: no fallback
    with caplog.at_level(logging.WARNING, logger="mspn_cli"):
        backend = create_backend("auto", model, **spec)
    assert backend.name == "mge-lite"
    assert any("'onnxruntime' could not start" in r.getMessage() and "Cumsum" in r.getMessage() for r in caplog.records)
    batch = np.random.default_rng(6).normal(size=(2, 3, 4, 4)).astype(np.float32)
    _assert_close(backend.run(batch), [np.cumsum(batch, axis=1)])


def test_auto_ends_with_the_megengine_reference(monkeypatch, tmp_path):
    from mspn_cli.runtime import base

    def broken(*_args, **_kwargs):
        raise RuntimeError("runtime refused the graph\nC++ backtrace ...")

    for name in available_backends("cpu"):
        if name != "megengine":
            monkeypatch.setitem(base._FACTORIES, name, broken)
    model = TinyNet()
    model.eval()
    backend = create_backend("auto", model, cache_dir=tmp_path)
    assert backend.name == "megengine"
    assert backend.run(np.ones((1, 3, 8, 8), np.float32))[0].shape == (1, 4, 8, 8)
