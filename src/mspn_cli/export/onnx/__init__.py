"""ONNX export: trace the network, dump it unoptimised, convert it operator by operator.

Why the unoptimised dump: `optimize_for_inference` rewrites the graph into fused
operators (FUSE_MUL_ADD3, explicit Broadcast, ConvBias, NCHW88 layouts) that are
harder to map and no faster once onnxruntime applies its own fusions. The converter
still understands the common fused forms (FUSE_ADD_RELU, FUSE_MUL_ADD3, ConvBias in
NCHW) so a dump from elsewhere converts too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mspn_cli.export.onnx.common import EXPORTER_VERSION, ONNX_IR_VERSION, ONNX_OPSET
from mspn_cli.export.onnx.converter import DynamicAxes, convert_mge_graph
from mspn_cli.export.trace import trace_and_dump


def export_onnx_model(
    model,
    example_input: np.ndarray,
    *,
    dynamic_axes: Optional[DynamicAxes] = None,
    input_name: str = "images",
    output_names: Optional[Sequence[str]] = None,
    check: bool = True,
    weight_sources=None,
    recipes_out=None,
):
    """Trace, dump and convert: returns `(onnx.ModelProto, TracedGraph)`.

    `check` runs onnx's checker (a second serialisation, about 1.5 s for MSPN); graphs
    that onnxruntime loads and verification compares with MegEngine can skip it.
    `weight_sources` / `recipes_out`: see `convert_mge_graph` (graph templates).
    """
    traced = trace_and_dump(model, example_input, input_name=input_name, output_names=output_names, optimize=False)
    model_proto = convert_mge_graph(
        traced.data,
        input_name=input_name,
        output_names=traced.output_names,
        input_shape=tuple(traced.example_input.shape),
        dynamic_axes=dynamic_axes or {},
        hidden_params=traced.hidden_params,
        check=check,
        weight_sources=weight_sources,
        recipes_out=recipes_out,
    )
    return model_proto, traced


def export_onnx(
    model,
    example_input: np.ndarray,
    path,
    *,
    dynamic_axes: Optional[DynamicAxes] = None,
    input_name: str = "images",
    output_names: Optional[Sequence[str]] = None,
    verify: bool = False,
) -> Path:
    """Write `model` as an ONNX file and return its path.

    `dynamic_axes` maps the input (and optionally output) names to the axes that may
    change size, e.g. `{"images": {0: "N"}}` or `{"images": [0, 2, 3]}`. With
    `verify=True` the file is run through onnxruntime on `example_input` and compared
    with MegEngine's output before it is written.
    """
    from mspn_cli.export.verify import verify_onnx
    from mspn_cli.io.writers import write_bytes_atomic

    model_proto, traced = export_onnx_model(
        model, example_input, dynamic_axes=dynamic_axes, input_name=input_name, output_names=output_names
    )
    data = model_proto.SerializeToString()
    if verify:
        verify_onnx(data, traced)
    return write_bytes_atomic(Path(path), data)


__all__ = [
    "EXPORTER_VERSION",
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "convert_mge_graph",
    "export_onnx",
    "export_onnx_model",
]
