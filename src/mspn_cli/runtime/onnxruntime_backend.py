"""The fastest CPU backend: the network converted to ONNX and run by onnxruntime.

On this kind of machine onnxruntime's convolutions reach several times MegEngine's
throughput (its NCHWc kernels use every core; MegEngine's CPU graph does not).
The ONNX graph is produced from the traced MegEngine graph by `onnx_export` and
cached under `<MSPN_HOME>/graphs/`, so only the first run with given weights pays
for the export (about 10-30 s for MSPN).
"""

from __future__ import annotations

from typing import List

import numpy as np

from mspn_cli.runtime.base import optional_import, register_backend
from mspn_cli.runtime.exported import ExportedGraphBackend
from mspn_cli.export.graph_cache import discard, exported_graph
from mspn_cli.export.onnx_export import ExportError, InputSpec, verify_onnx
from mspn_cli.errors import UsageError

# Verification compares onnxruntime with MegEngine on the export's example input; the
# two differ by float rounding only (~1e-6 relative), a converter bug by far more.
VERIFY_TOLERANCE = 1e-3


def onnxruntime_available(device: str = "cpu") -> bool:
    if not str(device or "cpu").lower().startswith("cpu"):
        return False
    return optional_import("onnxruntime") is not None and optional_import("onnx") is not None


class OnnxRuntimeBackend(ExportedGraphBackend):
    """Runs `model` as an ONNX graph in an onnxruntime CPU session (options: see ExportedGraphBackend)."""

    name = "onnxruntime"

    def _check_available(self, device: str) -> None:
        if not onnxruntime_available(device):
            raise UsageError(f"the onnxruntime backend needs the onnxruntime and onnx packages and a CPU device (got '{device}')")

    def _prepare(self, spec: InputSpec) -> None:
        import onnxruntime as ort

        graph = exported_graph(self.model, "onnx", spec, model_name=self.model_name, weights_key=self._weights_key(), cache=self.cache)
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
        self.runner = session
        self.spec = spec
        self.graph_path = graph.path
        self.exported = graph.created
        self.input_name = session.get_inputs()[0].name
        self.output_names = [output.name for output in session.get_outputs()]

    def _execute(self, batch: np.ndarray) -> List[np.ndarray]:
        return list(self.runner.run(self.output_names, {self.input_name: batch}))


register_backend("onnxruntime", OnnxRuntimeBackend, onnxruntime_available, rank=0)

__all__ = ["OnnxRuntimeBackend", "onnxruntime_available"]
