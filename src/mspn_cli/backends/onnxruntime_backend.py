"""The fastest CPU backend: the network converted to ONNX and run by onnxruntime.

On this kind of machine onnxruntime's convolutions reach several times MegEngine's
throughput (its NCHWc kernels use every core; MegEngine's CPU graph does not).
The ONNX graph is produced from the traced MegEngine graph by `onnx_export` and
cached under `<MSPN_HOME>/graphs/`, so only the first run with given weights pays
for the export (about 10-30 s for MSPN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from mspn_cli.backends import megengine_backend  # noqa: F401 - registers "megengine" before this backend
from mspn_cli.backends import lite_backend  # noqa: F401 - registers "mge-lite" before this backend
from mspn_cli.backends.base import Backend, optional_import, register_backend
from mspn_cli.backends.graph_cache import GraphCache, discard, exported_graph, state_digest
from mspn_cli.backends.onnx_export import (
    ExportError,
    InputSpec,
    default_input_spec,
    input_spec_for_batch,
    verify_onnx,
)
from mspn_cli.errors import UsageError

# Verification compares onnxruntime with MegEngine on the export's example input; the
# two differ by float rounding only (~1e-6 relative), a converter bug by far more.
VERIFY_TOLERANCE = 1e-3


def onnxruntime_available(device: str = "cpu") -> bool:
    if not str(device or "cpu").lower().startswith("cpu"):
        return False
    return optional_import("onnxruntime") is not None and optional_import("onnx") is not None


class OnnxRuntimeBackend(Backend):
    """Runs `model` as an ONNX graph in an onnxruntime CPU session.

    Options: `cache_key` (or `weights_key`) names the weights (e.g. the weight file's
    sha256) so the cached graph is found without hashing the model; `cache_dir`
    overrides `<MSPN_HOME>/graphs`; `input_shape` / `dynamic_axes` override the
    network's known input spec; `threads` defaults to all cores.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model,
        device: str = "cpu",
        cache_dir: Optional[os.PathLike] = None,
        weights_key: Optional[str] = None,
        cache_key: Optional[str] = None,
        model_name: Optional[str] = None,
        input_shape: Optional[Sequence[int]] = None,
        dynamic_axes=None,
        threads: Optional[int] = None,
        verify: bool = True,
        **_ignored,
    ):
        if not onnxruntime_available(device):
            raise UsageError(f"the onnxruntime backend needs the onnxruntime and onnx packages and a CPU device (got '{device}')")
        self.model = model
        self.cache = GraphCache(Path(cache_dir) if cache_dir else None)
        self.weights_key = cache_key or weights_key
        self.model_name = model_name
        self.threads = int(threads or os.cpu_count() or 1)
        self.verify = verify
        self.session = None
        self.graph_path: Optional[Path] = None
        self.exported = False  # True when this backend had to export (no cached graph)
        self.spec: Optional[InputSpec] = None
        if input_shape is not None:
            self._prepare(InputSpec.make(input_shape, dynamic_axes if dynamic_axes is not None else {0: "N"}))
        elif default_input_spec(model) is not None:
            self._prepare(default_input_spec(model))
        # Otherwise the graph is exported for the first batch's shape, in run().

    def _prepare(self, spec: InputSpec) -> None:
        import onnxruntime as ort

        if not self.weights_key:
            self.weights_key = state_digest(self.model)
        graph = exported_graph(self.model, "onnx", spec, model_name=self.model_name, weights_key=self.weights_key, cache=self.cache)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about unused initialisers and the like
        try:
            session = ort.InferenceSession(str(graph.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            discard(graph.path)
            if not graph.created:  # a damaged cache entry: export it again, once
                return self._prepare(spec)
            raise ExportError(f"onnxruntime cannot load the exported graph {graph.path}: {exc}") from exc
        if graph.created and self.verify and graph.traced is not None:
            try:
                verify_onnx(None, graph.traced, tolerance=VERIFY_TOLERANCE, session=session)
            except ExportError:
                discard(graph.path)
                raise
        self.session = session
        self.spec = spec
        self.graph_path = graph.path
        self.exported = graph.created
        self.input_name = session.get_inputs()[0].name
        self.output_names = [output.name for output in session.get_outputs()]

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is None:
            self._prepare(input_spec_for_batch(batch.shape))
        if not self.spec.accepts(batch.shape):
            raise UsageError(
                f"the onnxruntime backend was prepared for inputs shaped like {self.spec.shape} "
                f"(variable axes {sorted(self.spec.axes_dict())}); got {tuple(batch.shape)}"
            )
        return list(self.session.run(self.output_names, {self.input_name: batch}))

    def close(self) -> None:
        self.session = None


# `register_backend` inserts at a list position: 0 puts onnxruntime first, ahead of
# mge-lite and megengine, which the imports above have registered already.
register_backend("onnxruntime", OnnxRuntimeBackend, onnxruntime_available, rank=0)

__all__ = ["OnnxRuntimeBackend", "onnxruntime_available"]
