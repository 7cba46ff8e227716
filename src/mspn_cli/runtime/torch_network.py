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
from typing import Any

from mspn_cli.errors import ExportError
from mspn_cli.runtime.base import register_backend
from mspn_cli.runtime.devices import is_cuda_device
from mspn_cli.runtime.torch_backend import TorchBackend, check_torch_device, torch_available

log = logging.getLogger(__name__)

__all__ = ["attach_torch_backend", "uses_torch"]


def uses_torch(backend: Any, device: str) -> bool:
    """--backend torch, or --backend auto on a CUDA device (no other backend serves one)."""
    return backend == "torch" or (backend == "auto" and is_cuda_device(device))


def attach_torch_backend(config, graph_path: Path, device: str, precision: str) -> TorchBackend:
    """`config`'s network from its sealed ONNX graph, on `device` in PyTorch (the caller checked the device)."""
    started = time.perf_counter()
    backend = TorchBackend(graph_path, device=device, precision=precision)
    log.info("%s: torch backend on %s (%s) ready in %.1f s", config.model.name, backend.device_name, precision,
             time.perf_counter() - started)
    return backend


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
