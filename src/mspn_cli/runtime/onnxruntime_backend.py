"""The fastest CPU backend: the network converted to ONNX and run by onnxruntime.

On this kind of machine onnxruntime's convolutions reach several times MegEngine's
throughput (its NCHWc kernels use every core; MegEngine's CPU graph does not).
The ONNX graph is produced from the traced MegEngine graph by `mspn_cli.export.onnx`
and cached under `<MSPN_HOME>/graphs/`, so only the first run with given weights pays
for the export. A run that finds its verified graph in the cache needs neither
MegEngine nor the weights (`from_cached_graph`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from mspn_cli.errors import ExportError, UsageError
from mspn_cli.export.cache import GraphCache, discard, exported_graph
from mspn_cli.export.specs import InputSpec
from mspn_cli.export.verify import ONNX_TOLERANCE, verify_onnx
from mspn_cli.runtime.base import optional_import, register_backend, usable_cpus
from mspn_cli.runtime.exported import ExportedGraphBackend


def _is_cpu(device: str) -> bool:
    return str(device or "cpu").lower().startswith("cpu")


def onnxruntime_available(device: str = "cpu") -> bool:
    """onnxruntime can run, and onnx can export, on `device`."""
    return _is_cpu(device) and optional_import("onnxruntime") is not None and optional_import("onnx") is not None


def onnxruntime_can_run(device: str = "cpu") -> bool:
    """onnxruntime can run an already exported graph on `device` (onnx is not needed for that)."""
    return _is_cpu(device) and optional_import("onnxruntime") is not None


def open_session(path: Path, threads: int):
    """An onnxruntime CPU session for the graph at `path`, optimised at load (ORT_ENABLE_ALL).

    Measured (benchmarks/session_start.py, MSPN 294 MB, 2 cores, median of 5 fresh
    interpreters, interleaved): open + first run 1.17 s plain, 1.24 s for a model saved
    optimised at ORT_ENABLE_ALL and loaded with optimisations off, 1.40 s for one saved at
    ORT_ENABLE_EXTENDED. Reading the weights and re-laying them out for the NCHWc
    kernels dominate either way, so the saved model buys nothing (and an ENABLE_ALL one
    would tie the cache to this CPU's vector width): the plain way stays.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings are about unused initialisers and the like
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend(ExportedGraphBackend):
    """Runs `model` as an ONNX graph in an onnxruntime CPU session (options: see ExportedGraphBackend)."""

    name = "onnxruntime"

    def _check_available(self, device: str) -> None:
        if not onnxruntime_available(device):
            raise UsageError(f"the onnxruntime backend needs the onnxruntime and onnx packages and a CPU device (got '{device}')")

    @classmethod
    def from_cached_graph(cls, path: Path, spec: InputSpec, cache: GraphCache, threads: Optional[int] = None) -> "OnnxRuntimeBackend":
        """A backend on a sealed cached graph, without the MegEngine model (the warm path)."""
        backend = cls.__new__(cls)
        backend.model = None
        backend.cache = cache
        backend.weights_key = None
        backend.key_extra = {}
        backend.model_name = None
        backend.threads = int(threads or usable_cpus())
        backend.verify = False
        backend._use(open_session(path, backend.threads), spec, path, created=False)
        return backend

    def _prepare(self, spec: InputSpec) -> None:
        graph = exported_graph(
            self.model, "onnx", spec, model_name=self.model_name, weights_key=self._weights_key(),
            cache=self.cache, key_extra=self.key_extra, purpose="onnxruntime",
        )
        try:
            session = open_session(graph.path, self.threads)
        except Exception as exc:
            discard(graph.path)
            if not graph.created:  # a damaged cache entry: export it again, once
                return self._prepare(spec)
            raise ExportError(f"onnxruntime cannot load the exported graph {graph.path}: {exc}") from exc
        if graph.created:
            verified = self.verify and graph.traced is not None
            if verified:
                try:
                    verify_onnx(None, graph.traced, tolerance=ONNX_TOLERANCE, session=session)
                except ExportError:
                    discard(graph.path)
                    raise
            self.cache.seal(graph.path, verified=verified)
        self._use(session, spec, graph.path, graph.created)

    def _use(self, session, spec: InputSpec, path: Path, created: bool) -> None:
        self.runner = session
        self.spec = spec
        self.graph_path = path
        self.exported = created
        self.input_name = session.get_inputs()[0].name
        self.output_names = [output.name for output in session.get_outputs()]

    def _execute(self, batch: np.ndarray) -> List[np.ndarray]:
        return list(self.runner.run(self.output_names, {self.input_name: batch}))


register_backend("onnxruntime", OnnxRuntimeBackend, onnxruntime_available, rank=0)

__all__ = ["OnnxRuntimeBackend", "onnxruntime_available", "onnxruntime_can_run", "open_session"]
