"""OpenVINO on the CPU: the same ONNX graphs as onnxruntime, in f32 or (checked) bf16.

f32 is forced (INFERENCE_PRECISION_HINT f32): OpenVINO otherwise runs bf16 silently on
any CPU with AMX or AVX512_BF16, which would break the promise that the default path
reproduces the official results. bf16 runs only on request (`precision="bf16"`), only
where the CPU computes bf16 natively, and only once a check against f32 on this
machine has passed (`runtime.precision`). The precision a compiled model really uses is
read back from it and reported, never assumed.

Compiled models are cached in `openvino/` beside the graphs (OpenVINO's CACHE_DIR), so
a warm start imports a compiled blob instead of compiling the graph again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from mspn_cli.errors import ExportError, UsageError
from mspn_cli.export.cache import GraphCache, discard, exported_graph
from mspn_cli.export.specs import InputSpec
from mspn_cli.export.verify import ONNX_TOLERANCE, check_outputs
from mspn_cli.runtime.base import optional_import, register_backend, usable_cpus
from mspn_cli.runtime.cpu_features import cpu_features
from mspn_cli.runtime.exported import ExportedGraphBackend
from mspn_cli.runtime.precision import bf16_verdict, check_precision_name, verification_batch

log = logging.getLogger(__name__)

# OpenVINO's element type names -> the names of --precision
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
VERIFICATION_SAMPLES = 2


def _is_cpu(device: str) -> bool:
    return str(device or "cpu").lower().startswith("cpu")


def openvino_can_run(device: str = "cpu") -> bool:
    """OpenVINO can run an already exported ONNX graph on `device`."""
    return _is_cpu(device) and optional_import("openvino") is not None


def openvino_available(device: str = "cpu") -> bool:
    """OpenVINO can run, and onnx can export, on `device`."""
    return openvino_can_run(device) and optional_import("onnx") is not None


_core = None


def openvino_core():
    global _core
    if _core is None:
        import openvino

        _core = openvino.Core()
    return _core


def openvino_version() -> str:
    import openvino

    return str(openvino.get_version())


def bf16_support() -> Optional[str]:
    """None when this CPU runs bf16 natively for OpenVINO; otherwise why not, in words."""
    cpu = cpu_features()
    try:
        capabilities = [str(c).upper() for c in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot say is a runtime we do not trust with bf16
        return f"OpenVINO cannot report this CPU's capabilities ({exc})"
    if cpu.native_bf16 is False:
        return f"this CPU ({cpu.model}) has neither AMX nor AVX512_BF16, so bf16 would be emulated"
    if "BF16" not in capabilities:
        return f"OpenVINO reports no native bf16 on this CPU ({cpu.model})"
    return None


def check_precision_runs(precision: str) -> str:
    """`precision` if OpenVINO can compute in it on this CPU; otherwise UsageError saying why."""
    precision = check_precision_name(precision)
    if precision == "fp16":
        raise UsageError("--precision fp16 is for GPUs (--device cuda); on the CPU use fp32 or bf16")
    if precision == "bf16":
        why = bf16_support()
        if why is not None:
            raise UsageError(f"--precision bf16 cannot run here: {why}; use --precision fp32")
    return precision


def precision_of(compiled) -> str:
    """The precision a compiled model really computes in, read from the model ("fp32", "bf16", ...)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = value.to_string() if hasattr(value, "to_string") else str(value)
    return _PRECISION_NAMES.get(name, name)


def compile_graph(path: Path, precision: str, threads: int, cache_dir: Optional[Path]):
    """A compiled CPU model of the ONNX graph at `path`, computing in `precision` (forced, not hinted away)."""
    config: Dict[str, object] = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if cache_dir is not None:
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        except OSError as exc:  # an unwritable cache only costs compile time
            log.warning("cannot cache compiled models in %s (%s)", cache_dir, exc)
    # By path, not a read model: on a cache hit OpenVINO then imports the blob without parsing the graph.
    return openvino_core().compile_model(str(path), "CPU", config)


def run_compiled(compiled, request, batch: np.ndarray) -> List[np.ndarray]:
    results = request.infer({0: batch}, share_inputs=True, share_outputs=False)
    return [np.asarray(results[output]) for output in compiled.outputs]


class OpenVinoBackend(ExportedGraphBackend):
    """Runs `model` as an ONNX graph compiled by OpenVINO for the CPU.

    Options beyond ExportedGraphBackend's: `precision` ("fp32" default, or "bf16" where
    the CPU has native bf16 and the check passed). `self.precision` is what the compiled
    model reports it computes in.
    """

    name = "openvino"

    def __init__(self, model, device: str = "cpu", precision: str = "fp32", **options):
        self.precision_requested = check_precision_runs(precision)
        self.precision = None
        super().__init__(model, device=device, **options)

    def _check_available(self, device: str) -> None:
        if not openvino_available(device):
            raise UsageError(f"the openvino backend needs the openvino and onnx packages and a CPU device (got '{device}')")

    @classmethod
    def from_onnx_graph(
        cls, path: Path, spec: InputSpec, device: str = "cpu", precision: str = "fp32",
        cache_dir: Optional[Path] = None, threads: Optional[int] = None,
    ) -> "OpenVinoBackend":
        """A backend on an exported (sealed) ONNX graph, without the MegEngine model (the warm path).

        `cache_dir`: where compiled models go; default `openvino/` beside the graph.
        """
        if not openvino_can_run(device):
            raise UsageError(f"the openvino backend needs the openvino package and a CPU device (got '{device}')")
        backend = cls.__new__(cls)
        backend.precision_requested = check_precision_runs(precision)
        backend.precision = None
        backend.model = None
        backend.cache = GraphCache(Path(path).parent)
        backend.weights_key = None
        backend.key_extra = {}
        backend.model_name = None
        backend.threads = int(threads or usable_cpus())
        backend.verify = False
        backend.compiled_dir = Path(cache_dir) if cache_dir is not None else Path(path).parent / "openvino"
        backend._open(Path(path), spec, created=False)
        return backend

    def _prepare(self, spec: InputSpec) -> None:
        graph = exported_graph(
            self.model, "onnx", spec, model_name=self.model_name, weights_key=self._weights_key(),
            cache=self.cache, key_extra=self.key_extra, purpose="openvino",
        )
        self.compiled_dir = graph.path.parent / "openvino" if self.cache.persistent else None
        try:
            if graph.created and self.verify and graph.traced is not None:
                reference = compile_graph(graph.path, "fp32", self.threads, self.compiled_dir)
                check_outputs(run_compiled(reference, reference.create_infer_request(), graph.traced.example_input),
                              graph.traced, ONNX_TOLERANCE, "the exported ONNX graph under OpenVINO",
                              "use the onnxruntime or megengine backend instead")
            self._open(graph.path, spec, graph.created)
        except ExportError:
            discard(graph.path)
            raise
        except UsageError:
            raise
        except Exception as exc:  # OpenVINO rejects the graph
            discard(graph.path)
            if not graph.created:  # a damaged cache entry: export it again, once
                return self._prepare(spec)
            raise ExportError(f"OpenVINO cannot compile the exported graph {graph.path}: {exc}") from exc
        if graph.created:
            self.cache.seal(graph.path, verified=bool(self.verify and graph.traced is not None))

    def _open(self, path: Path, spec: InputSpec, created: bool) -> None:
        compiled = compile_graph(path, self.precision_requested, self.threads, self.compiled_dir)
        used = precision_of(compiled)
        if used != self.precision_requested:
            raise UsageError(f"--precision {self.precision_requested}: OpenVINO compiled {path.name} for {used} instead")
        if used == "bf16":
            self._verify_bf16(path, spec, compiled)
        self.runner = compiled
        self.request = compiled.create_infer_request()
        self.precision = used
        self.spec = spec
        self.graph_path = path
        self.exported = created

    def _verify_bf16(self, path: Path, spec: InputSpec, compiled) -> None:
        key = {**cpu_features().key_fields(), "openvino": openvino_version(), "graph": path.name}
        shape = (VERIFICATION_SAMPLES, *spec.shape[1:])
        request = compiled.create_infer_request()

        def run_reference(batch):
            reference = compile_graph(path, "fp32", self.threads, self.compiled_dir)
            return run_compiled(reference, reference.create_infer_request(), batch)

        verdict = bf16_verdict(self.compiled_dir, key, run_reference, lambda batch: run_compiled(compiled, request, batch),
                               verification_batch(shape))
        if not verdict.passed:
            raise UsageError(f"--precision bf16 failed its check against fp32 on this CPU ({verdict.reason}); use --precision fp32")

    def _execute(self, batch: np.ndarray) -> List[np.ndarray]:
        return run_compiled(self.runner, self.request, batch)

    def close(self) -> None:
        self.request = None
        super().close()


# Before onnxruntime (rank 0) for auto: measured on a 2-core AMX Xeon, f32 forced, it runs MSPN
# ~8% faster per person and opens a cached graph in 0.25 s instead of 0.65 s (README, "Backends").
register_backend("openvino", OpenVinoBackend, openvino_available, rank=-1)

__all__ = ["OpenVinoBackend", "bf16_support", "check_precision_runs", "compile_graph", "openvino_available", "openvino_can_run", "precision_of"]
