"""A configured network behind the torch backend: the sealed, verified ONNX graph, run by PyTorch.

The graph is the one the onnxruntime backend uses (same cache entry, same seal): found
in the cache without MegEngine, or exported and verified once through the onnxruntime
backend (which needs MegEngine for the export). So the torch backend adds no network
definition of its own and runs exactly what was verified against MegEngine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Tuple

from mspn_cli.errors import ExportError
from mspn_cli.runtime.base import register_backend
from mspn_cli.runtime.devices import is_cuda_device
from mspn_cli.runtime.torch_backend import TorchBackend, check_torch_device, torch_available

log = logging.getLogger(__name__)

__all__ = ["attach_torch_backend", "sealed_onnx_graph", "uses_torch"]


def uses_torch(backend: Any, device: str) -> bool:
    """--backend torch, or --backend auto on a CUDA device (no other backend serves one)."""
    return backend == "torch" or (backend == "auto" and is_cuda_device(device))


def sealed_onnx_graph(config, weights, progress) -> Tuple[Path, Path, str]:
    """(graph path, weights path, weights sha256): the verified cached ONNX graph of `config` + `weights`.

    Exported (and verified against MegEngine) on a cache miss; that needs MegEngine.
    """
    from mspn_cli.export.cache import FORMAT_SUFFIXES, GraphCache, graph_key_fields
    from mspn_cli.runtime.network_loading import download_progress_of, graph_key_extra, input_spec_of, load_network
    from mspn_cli.weights import indexed_sha256, resolve_weights

    weights_path = resolve_weights(weights, config.weights, progress=download_progress_of(progress))
    weights_sha256 = indexed_sha256(weights_path)
    spec = input_spec_of(config)
    fields = graph_key_fields("onnx", spec, weights_sha256, graph_key_extra(config))
    path = GraphCache().find(config.model.name, fields, FORMAT_SUFFIXES["onnx"], require_verified=True)
    if path is not None:
        return path, weights_path, weights_sha256
    from mspn_cli.runtime.onnxruntime_backend import OnnxRuntimeBackend

    model, weights_path, weights_sha256 = load_network(config.model.name, config.weights, weights, progress, "cpu")
    exporter = OnnxRuntimeBackend(
        model, device="cpu", model_name=config.model.name, weights_key=weights_sha256, key_extra=graph_key_extra(config),
        input_shape=spec.shape, dynamic_axes=spec.axes_dict(), threads=1,
    )
    path = exporter.graph_path
    exporter.close()
    if path is None or not Path(path).is_file():
        raise ExportError("the torch backend needs a cache folder for the exported graph; set MSPN_HOME to a writable folder")
    return Path(path), weights_path, weights_sha256


def attach_torch_backend(config, weights, device: str, precision: str, progress) -> Tuple[TorchBackend, Path, str]:
    """(backend, weights path, weights sha256) for `config`'s network on `device` in PyTorch."""
    check_torch_device(device, precision)  # before any weights are read or graphs exported
    started = time.perf_counter()
    graph_path, weights_path, weights_sha256 = sealed_onnx_graph(config, weights, progress)
    backend = TorchBackend(graph_path, device=device, precision=precision)
    log.info("%s: torch backend on %s (%s) ready in %.1f s", config.model.name, backend.device_name, precision,
             time.perf_counter() - started)
    return backend, weights_path, weights_sha256


def _torch_backend_for_model(model, device: str = "cpu", precision: str = "fp32", **options) -> TorchBackend:
    """`create_backend("torch", model)`: export the MegEngine model's graph (cached, verified), run it in PyTorch."""
    from mspn_cli.runtime.onnxruntime_backend import OnnxRuntimeBackend

    check_torch_device(device, precision)
    exporter = OnnxRuntimeBackend(model, device="cpu", **{**options, "threads": 1})
    if exporter.graph_path is None:  # graphs are exported on the first batch when no input spec was declared
        raise ExportError("the torch backend needs the network's input spec (input_shape) to export its graph")
    try:
        return TorchBackend(exporter.graph_path, device=device, precision=precision)
    finally:
        exporter.close()


# After onnxruntime (0) and MegEngine Lite (10) on CPU; before MegEngine (100), whose CUDA 10.1 predates today's GPUs.
register_backend("torch", _torch_backend_for_model, torch_available, rank=50)
