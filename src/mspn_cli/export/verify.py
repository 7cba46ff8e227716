"""Checking an exported graph against MegEngine on the traced example.

Shared by every exporter and backend, so the Lite backend needs nothing from the ONNX
converter. Tolerances are relative to the largest reference value: an exported graph
differs from MegEngine by float rounding (about 1e-6), a converter bug by far more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List

from mspn_cli.errors import ExportError

if TYPE_CHECKING:  # numpy and the tracer load only when a graph is really checked
    import numpy as np

    from mspn_cli.export.trace import TracedGraph

# onnxruntime's kernels against MegEngine's: both float32, differently ordered sums.
ONNX_TOLERANCE = 1e-4
# MegEngine Lite's NCHW88 kernels re-associate long sums more than onnxruntime does.
MGE_LITE_TOLERANCE = 1e-3


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (0 when both are all zeros)."""
    import numpy as np

    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        return float("inf")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(actual - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def check_outputs(outputs: List["np.ndarray"], traced: "TracedGraph", tolerance: float, what: str, advice: str) -> float:
    """The worst relative error of `outputs` against MegEngine's; ExportError above `tolerance`."""
    worst = 0.0
    for name, actual, expected in zip(traced.output_names, outputs, traced.example_outputs):
        error = relative_error(actual, expected)
        worst = max(worst, error)
        if not error <= tolerance:
            raise ExportError(
                f"{what} does not reproduce MegEngine on output '{name}' "
                f"(relative error {error:.2e} > {tolerance:.0e}); {advice}"
            )
    return worst


def verify_onnx(model_bytes_or_path, traced: "TracedGraph", tolerance: float = ONNX_TOLERANCE, session=None) -> float:
    """Run the ONNX graph (or an open onnxruntime `session`) on the traced example."""
    if session is None:
        import onnxruntime as ort

        session = ort.InferenceSession(model_bytes_or_path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {traced.input_name: traced.example_input})
    return check_outputs(
        outputs, traced, tolerance, "the exported ONNX graph",
        "this is a converter bug, use the megengine or mge-lite backend instead",
    )


def verify_mge(run: Callable[["np.ndarray"], List["np.ndarray"]], traced: "TracedGraph", tolerance: float = MGE_LITE_TOLERANCE) -> float:
    """Run a loaded `.mge` graph (`run(batch) -> outputs`, or an object with that method) on the traced example."""
    run = getattr(run, "run", run)
    return check_outputs(
        run(traced.example_input), traced, tolerance, "the optimised .mge graph", "use the megengine backend"
    )
