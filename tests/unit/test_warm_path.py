"""The warm path: a verified cached ONNX graph is opened without MegEngine or the weights' contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import onnx
import onnxruntime  # noqa: F401 - a hard dependency: a broken install fails here, it never skips

from mspn_cli.config import load_detector_config, load_pose_config  # noqa: E402
from mspn_cli.export.cache import GraphCache, graph_key_fields  # noqa: E402
from mspn_cli.runtime.network import _cached_onnxruntime_backend, graph_key_extra, input_spec_of  # noqa: E402
from mspn_cli.weights import indexed_sha256, store  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_usable_roots(monkeypatch):
    monkeypatch.setattr(store, "_USABLE_ROOTS", {})


def stand_in_graph(spec) -> bytes:
    """A valid ONNX graph with the spec's input (an average pool): what matters is that it opens."""
    from onnx import TensorProto, helper

    dims = [spec.axes_dict().get(axis, size) for axis, size in enumerate(spec.shape)]
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["images"], ["heatmaps"], kernel_shape=[4, 4], strides=[4, 4])],
        "stand_in",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def cache_stand_in(config, weights: Path) -> Path:
    """Put a sealed, verified graph where the warm path looks for `config` with `weights`."""
    spec = input_spec_of(config)
    fields = graph_key_fields("onnx", spec, indexed_sha256(weights), graph_key_extra(config))
    cache = GraphCache()
    path, created = cache.get_or_create(config.model.name, fields, ".onnx", lambda: stand_in_graph(spec))
    assert created
    cache.seal(path, verified=True)
    return path


@pytest.fixture()
def fake_weights(tmp_path) -> Path:
    """Not a pickle at all: the warm path must never read the weights' contents."""
    path = tmp_path / "weights.pkl"
    path.write_bytes(b"these bytes are not a pickle" * 100)
    old = time.time() - 100
    os.utime(path, (old, old))
    return path


_WARM_PROBE = """
import json, sys
from mspn_cli.config import load_detector_config, load_pose_config
from mspn_cli.runtime.network import attach_backend
config = load_pose_config() if sys.argv[1] == "pose" else load_detector_config()
backend, path, sha = attach_backend(config, sys.argv[2], sys.argv[3], "cpu", False)
print(json.dumps({"graph": str(backend.graph_path), "megengine": "megengine" in sys.modules,
                  "backend": backend.name}))
"""


@pytest.mark.parametrize("network", ["pose", "detector"])
@pytest.mark.parametrize("backend_name", ["onnxruntime", "auto"])
def test_warm_path_does_not_import_megengine(mspn_home, fake_weights, network, backend_name):
    config = load_pose_config() if network == "pose" else load_detector_config()
    graph = cache_stand_in(config, fake_weights)
    proc = subprocess.run(
        [sys.executable, "-c", _WARM_PROBE, network, backend_name, str(fake_weights)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, MSPN_HOME=str(mspn_home)),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    from mspn_cli.runtime.openvino_backend import openvino_can_run

    # auto opens the cached graph with its first choice: openvino where installed (optional), else onnxruntime
    expected = "openvino" if backend_name == "auto" and openvino_can_run("cpu") else "onnxruntime"
    assert report == {"graph": str(graph), "megengine": False, "backend": expected}


def test_weights_replaced_in_place_do_not_match_the_old_graph(mspn_home, fake_weights):
    config = load_pose_config()
    cache_stand_in(config, fake_weights)
    assert _cached_onnxruntime_backend(config, fake_weights, indexed_sha256(fake_weights), "cpu") is not None
    with open(fake_weights, "r+b") as handle:  # same path, same size, new content
        handle.write(b"THESE")
    assert _cached_onnxruntime_backend(config, fake_weights, indexed_sha256(fake_weights), "cpu") is None


def test_config_values_are_part_of_the_key(mspn_home, fake_weights):
    import dataclasses

    config = load_pose_config()
    cache_stand_in(config, fake_weights)
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, input_size=(128, 96)))
    assert _cached_onnxruntime_backend(other, fake_weights, indexed_sha256(fake_weights), "cpu") is None


def test_damaged_warm_graph_is_not_used(mspn_home, fake_weights):
    config = load_pose_config()
    graph = cache_stand_in(config, fake_weights)
    graph.write_bytes(graph.read_bytes()[:50])
    assert _cached_onnxruntime_backend(config, fake_weights, indexed_sha256(fake_weights), "cpu") is None
