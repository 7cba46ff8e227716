"""The torch backend runs both seeded networks as onnxruntime and MegEngine do (CPU, fp32, within 1e-4).

Needs PyTorch (the optional [torch] extra); CI runs this in a Python 3.11 venv with the CPU
wheel, where there is no MegEngine: the graphs are filled from the packaged templates, and
MegEngine's outputs come from the file the reference world wrote (tests/reference_outputs.py).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the optional [torch] extra) is not installed")

from mspn_cli.config import load_pose_config  # noqa: E402
from mspn_cli.export.verify import relative_error  # noqa: E402
from mspn_cli.runtime.onnxruntime_backend import open_session  # noqa: E402
from mspn_cli.runtime.torch_backend import TorchBackend  # noqa: E402
from mspn_cli.runtime.network import attach_backend, sealed_onnx_graph  # noqa: E402
from tests.conftest import WEIGHTS_CACHE  # noqa: E402
from tests.reference_outputs import load_outputs, megengine_outputs, reference_file  # noqa: E402
from tests.reference_outputs import network_of as _network  # noqa: E402
from tests.reference_outputs import reference_inputs as _inputs  # noqa: E402

pytestmark = pytest.mark.torch
TOLERANCE = 1e-4  # the bound: torch on CPU in fp32 against the other backends


@pytest.fixture(autouse=True)
def shared_graph_cache(monkeypatch):
    monkeypatch.setenv("MSPN_HOME", str(WEIGHTS_CACHE / "home"))


@pytest.mark.parametrize("which", ["mspn", "detector"])
def test_torch_cpu_matches_onnxruntime(which, mspn_weights, detector_weights):
    config, weights = _network(which, mspn_weights, detector_weights)
    graph, _, _ = sealed_onnx_graph(config, str(weights), progress=False)
    batch = _inputs(which)
    session = open_session(graph, threads=2)
    expected = session.run(None, {session.get_inputs()[0].name: batch})
    backend = TorchBackend(graph, device="cpu", precision="fp32")
    actual = backend.run(batch)
    assert len(actual) == len(expected) == (1 if which == "mspn" else 10)
    for got, want in zip(actual, expected):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert relative_error(got, want) <= TOLERANCE


@pytest.mark.parametrize("which", ["mspn", "detector"])
def test_torch_cpu_matches_megengine(which, mspn_weights, detector_weights):
    """Against MegEngine's own outputs: computed here where MegEngine is installed, else read
    from the file the reference world wrote (.ci/run's Python 3.10 world runs first)."""
    import importlib.util

    if importlib.util.find_spec("megengine") is not None:
        expected = megengine_outputs(which, mspn_weights, detector_weights)
    else:
        path = reference_file(which)
        if path is None:
            pytest.skip("MegEngine 1.13 is absent on this Python and MSPN_CROSS_WORLD_DIR is not set (.ci/run sets it)")
        assert path.is_file(), f"{path} is missing: the Python 3.10 world writes it (tests/slow/test_megengine_reference.py)"
        expected = load_outputs(path)
    config, weights = _network(which, mspn_weights, detector_weights)
    backend, _, _ = attach_backend(config, "torch", str(weights), "cpu", progress=False, precision="fp32")
    actual = backend.run(_inputs(which))
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert relative_error(got, want) <= TOLERANCE


def test_bf16_on_cpu_stays_close_to_fp32(mspn_weights):
    """bf16 is an option on CPU too; its heatmaps stay within a few percent of each map's range."""
    graph, _, _ = sealed_onnx_graph(load_pose_config(), str(mspn_weights), progress=False)
    batch = _inputs("mspn")[:1]
    exact = TorchBackend(graph, precision="fp32").run(batch)[0]
    reduced = TorchBackend(graph, precision="bf16").run(batch)[0]
    spread = exact.max(axis=(2, 3)) - exact.min(axis=(2, 3))
    error = np.abs(reduced - exact).max(axis=(2, 3)) / spread
    assert reduced.dtype == np.float32
    assert 0 < error.max() < 0.1  # not bit-equal (so bf16 did run), and close
