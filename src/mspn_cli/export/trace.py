"""Tracing a MegEngine network on an example input and dumping the traced graph.

Both exporters start here: `.mge` export dumps the trace with MegEngine's inference
optimisations, the ONNX converter without them.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from mspn_cli._mge import import_megengine, silenced_stderr
from mspn_cli.errors import ExportError, first_line


def flatten_outputs(outputs) -> List[Any]:
    """Nested lists/tuples of tensors -> a flat list (jit.trace accepts only flat ones)."""
    if isinstance(outputs, (list, tuple)):
        flat: List[Any] = []
        for item in outputs:
            flat.extend(flatten_outputs(item))
        return flat
    return [outputs]


@dataclass
class TracedGraph:
    """A model traced on one example input and serialised by MegEngine."""

    data: bytes  # the `.mge` dump
    input_name: str
    output_names: List[str]
    example_input: np.ndarray
    example_outputs: List[np.ndarray] = field(repr=False)
    # Parameters of operators whose dumped form hides them (MegEngine serialises
    # Padding's offsets and mode, but its graph API reports "{}"), in trace order.
    hidden_params: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict, repr=False)


def default_output_names(count: int) -> List[str]:
    return ["output"] if count == 1 else [f"output{i}" for i in range(count)]


def trace_and_dump(
    model,
    example_input: np.ndarray,
    *,
    input_name: str = "images",
    output_names: Optional[Sequence[str]] = None,
    optimize: bool = False,
    **dump_options,
) -> TracedGraph:
    """Trace `model` on `example_input` and dump the graph.

    `optimize=False` keeps MegEngine's operators as traced (what the ONNX converter
    wants); `optimize=True` applies `optimize_for_inference` with `dump_options`
    (e.g. `enable_nchw88=True`), which is what MegEngine Lite wants.
    """
    mge = import_megengine()
    from megengine.jit import trace

    example_input = np.ascontiguousarray(example_input, dtype=np.float32)
    model.eval()

    @trace(symbolic=True, capture_as_const=True)
    def forward(batch):
        # Flattened here so that models returning nested lists trace too.
        return flatten_outputs(model(batch))

    with _on_dump_device(model):
        try:
            outputs = forward(mge.tensor(example_input))
        except Exception as exc:  # MegEngine raises plain RuntimeErrors with C++ traces
            raise ExportError(f"tracing the model on a {tuple(example_input.shape)} input failed: {first_line(exc)}") from exc
        example_outputs = [np.asarray(out.numpy()) for out in flatten_outputs(outputs)]
        names = list(output_names) if output_names else default_output_names(len(example_outputs))
        if len(names) != len(example_outputs):
            raise ExportError(f"{len(names)} output names given for a model with {len(example_outputs)} outputs")
        buffer = io.BytesIO()
        with silenced_stderr():
            forward.dump(
                buffer,
                arg_names=[input_name],
                output_names=names,
                optimize_for_inference=optimize,
                keep_var_name=2 if not optimize else 1,  # internal names help reading a converted graph
                **dump_options,
            )
    hidden: Dict[str, List[Dict[str, Any]]] = {}
    for op in getattr(forward, "ops", None) or []:
        if getattr(op, "type", None) in _HIDDEN_PARAM_OPS:
            hidden.setdefault(_HIDDEN_PARAM_OPS[op.type], []).append(dict(op.param))
    return TracedGraph(buffer.getvalue(), input_name, names, example_input, example_outputs, hidden)


# trace op type -> dumped operator type, for operators whose parameters the dump hides
_HIDDEN_PARAM_OPS = {"Padding": "PaddingForward"}


# MegEngine's dump always creates the graph input on this comp node; every constant the
# traced graph holds (parameters, tensors made inside `forward`) must be on it too.
_DUMP_DEVICE = "xpux"


@contextlib.contextmanager
def _on_dump_device(model) -> Iterator[None]:
    """Trace and dump with the default device, and the model's tensors, on `_DUMP_DEVICE`.

    A model built while another default device was set (the megengine backend selects
    "cpux") would otherwise fail with MegEngine's "different input comp_nodes" assertion.
    Moved tensors are put back afterwards, so the caller's model is left as it was.
    """
    mge = import_megengine()
    previous_default = mge.get_default_device()
    moved = []
    try:
        for tensor in list(model.parameters()) + list(model.buffers()):
            device = str(tensor.device)
            if not device.startswith(_DUMP_DEVICE):
                moved.append((tensor, device))
                tensor._reset(tensor.to(_DUMP_DEVICE))  # device to device: 6x faster than through numpy
        mge.set_default_device(_DUMP_DEVICE)
        yield
    finally:
        mge.set_default_device(previous_default)
        for tensor, device in moved:
            tensor._reset(tensor.to(device.split(":")[0]))
