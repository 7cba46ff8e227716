"""The project's ONNX graphs run by PyTorch: a small, strict interpreter, no third network definition.

`GraphPlan` is the graph in a neutral form (nodes in topological order, initialisers as
numpy arrays); `plan_from_onnx` reads it from an ONNX file (needs the onnx package).
`OnnxTorchModule` runs a plan: float initialisers become buffers (they move with
`.to(device)`), integer ones (axes, slice bounds) stay numpy. Values of the graph are
either torch tensors on the device (feature maps) or numpy int64 arrays on the host
(shapes and what is computed from them), so a Shape -> Slice -> Concat -> Resize chain
costs no device round trip.

Only the operators the project's converter emits (export/onnx/ops_*.py) are known, and
only in the modes it emits them; anything else is refused with one line at build time,
never approximated. Reduced precision: Conv and ConvTranspose weights take the compute
dtype (each casts its input to it); every other float constant stays float32, so the
detector's mean/std normalisation of 0..255 pixels keeps float32; outputs come back float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from mspn_cli.errors import UnsupportedOperatorError

Value = Union[torch.Tensor, np.ndarray]

# ONNX TensorProto element types the graphs use.
_ONNX_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2)}


@dataclass
class GraphNode:
    op: str
    inputs: Tuple[str, ...]  # "" marks an omitted optional input
    outputs: Tuple[str, ...]
    attrs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphPlan:
    inputs: List[str]
    outputs: List[str]
    nodes: List[GraphNode]
    initializers: Dict[str, np.ndarray]


def plan_from_onnx(path) -> GraphPlan:
    """The plan of the ONNX file at `path` (weights included)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {}
        for attribute in node.attribute:
            value = onnx.helper.get_attribute_value(attribute)
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
        nodes.append(GraphNode(node.op_type, tuple(node.input), tuple(node.output), attrs))
    graph_inputs = [value.name for value in graph.input if value.name not in initializers]
    return GraphPlan(graph_inputs, [value.name for value in graph.output], nodes, initializers)


def _refuse(node: GraphNode, what: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(f"the torch backend cannot run ONNX {node.op} with {what}; use --backend onnxruntime")


def _pads_2d(node: GraphNode) -> Tuple[int, int, int, int]:
    """ONNX 2-D pads (top, left, bottom, right); auto_pad other than NOTSET is refused."""
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise _refuse(node, f"auto_pad={node.attrs['auto_pad']}")
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise _refuse(node, f"{len(pads) // 2}-D pads (only 2-D)")
    return tuple(int(p) for p in pads)  # type: ignore[return-value]


def _onnx_slice(dim: int, start: int, end: int, step: int) -> List[int]:
    """The indices ONNX Slice takes along an axis of length `dim` (opset 13 clamping rules)."""
    if step == 0:
        raise UnsupportedOperatorError("ONNX Slice with step 0 is invalid")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return list(range(start, end, step))


def _ints(value: Value) -> List[int]:
    return [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else np.asarray(value).reshape(-1).tolist())]


class OnnxTorchModule(torch.nn.Module):
    """Runs a `GraphPlan`; build it once, move it with `.to(device)`, call it with the input batch."""

    def __init__(self, plan: GraphPlan, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        unknown = sorted({node.op for node in plan.nodes} - set(_OPS))
        if unknown:
            raise UnsupportedOperatorError(
                f"the torch backend does not know ONNX operator(s) {', '.join(unknown)}; use --backend onnxruntime"
            )
        if len(plan.inputs) != 1:
            raise UnsupportedOperatorError(f"the torch backend runs graphs with one input, this one has {len(plan.inputs)}")
        self.plan = plan
        self.compute_dtype = compute_dtype
        weight_names = {node.inputs[i] for node in plan.nodes for i in _WEIGHT_INPUTS.get(node.op, ()) if i < len(node.inputs)}
        self._buffer_of: Dict[str, str] = {}
        self._host_constants: Dict[str, np.ndarray] = {}
        for index, (name, array) in enumerate(plan.initializers.items()):
            if np.issubdtype(array.dtype, np.floating):
                dtype = compute_dtype if name in weight_names else torch.float32
                self.register_buffer(f"c{index}", torch.from_numpy(np.array(array, dtype=np.float32)).to(dtype))
                self._buffer_of[name] = f"c{index}"
            else:
                self._host_constants[name] = np.array(array)
        for node in plan.nodes:  # mode checks at build time: a refusal never waits for the first batch
            _CHECKS.get(node.op, lambda n: None)(node)
        # A value is dropped after the last node that reads it: a large batch keeps only live maps.
        last_use = {name: position for position, node in enumerate(plan.nodes) for name in node.inputs}
        self._release_after = [[name for name in node.inputs if name and last_use[name] == position
                                and name not in plan.outputs] for position, node in enumerate(plan.nodes)]

    def constant(self, name: str) -> Value:
        if name in self._buffer_of:
            return getattr(self, self._buffer_of[name])
        return self._host_constants[name]

    def forward(self, batch: torch.Tensor) -> List[torch.Tensor]:
        values: Dict[str, Value] = {self.plan.inputs[0]: batch}
        for node, released in zip(self.plan.nodes, self._release_after):
            args = [None if not name else (values[name] if name in values else self.constant(name)) for name in node.inputs]
            results = _OPS[node.op](node, args)
            for name, result in zip(node.outputs, results if isinstance(results, tuple) else (results,)):
                values[name] = result
            for name in released:
                values.pop(name, None)
        return [values[name].float() if isinstance(values[name], torch.Tensor) else torch.from_numpy(values[name]) for name in self.plan.outputs]


# -- operators ----------------------------------------------------------------------------


def _conv(node: GraphNode, args) -> torch.Tensor:
    x, weight, bias = (args + [None])[:3]
    top, left, bottom, right = _pads_2d(node)
    x = x.to(weight.dtype)
    if (top, left) != (bottom, right):
        x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
    return F.conv2d(x, weight, bias, tuple(node.attrs.get("strides", (1, 1))), (top, left),
                    tuple(node.attrs.get("dilations", (1, 1))), int(node.attrs.get("group", 1)))


def _conv_transpose(node: GraphNode, args) -> torch.Tensor:
    x, weight, bias = (args + [None])[:3]
    top, left, _, _ = _pads_2d(node)
    return F.conv_transpose2d(x.to(weight.dtype), weight, bias, tuple(node.attrs.get("strides", (1, 1))), (top, left),
                              tuple(node.attrs.get("output_padding", (0, 0))), int(node.attrs.get("group", 1)),
                              tuple(node.attrs.get("dilations", (1, 1))))


def _check_conv_transpose(node: GraphNode) -> None:
    top, left, bottom, right = _pads_2d(node)
    if (top, left) != (bottom, right) or "output_shape" in node.attrs:
        raise _refuse(node, "asymmetric pads or output_shape")


def _pool(node: GraphNode, args) -> torch.Tensor:
    x = args[0]
    top, left, bottom, right = _pads_2d(node)
    kernel, strides = tuple(node.attrs["kernel_shape"]), tuple(node.attrs.get("strides", (1, 1)))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if node.op == "MaxPool":
        if (top, left) != (bottom, right):
            x, top, left = F.pad(x, (left, right, top, bottom), value=float("-inf")), 0, 0
        return F.max_pool2d(x, kernel, strides, (top, left), tuple(node.attrs.get("dilations", (1, 1))), ceil)
    return F.avg_pool2d(x, kernel, strides, (top, left), ceil, bool(node.attrs.get("count_include_pad", 0)))


def _check_pool(node: GraphNode) -> None:
    top, left, bottom, right = _pads_2d(node)
    if node.op == "AveragePool" and (top, left) != (bottom, right):
        raise _refuse(node, "asymmetric pads")
    if node.op == "MaxPool" and len(node.outputs) > 1:
        raise _refuse(node, "an Indices output")


def _check_binary(node: GraphNode) -> None:
    if len(node.inputs) != 2:
        raise _refuse(node, f"{len(node.inputs)} inputs (only 2)")


def _elementwise(function):
    def run(node: GraphNode, args):
        a, b = args
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):  # shape arithmetic stays on the host
            return np.asarray(function(torch.from_numpy(a), torch.from_numpy(b)).numpy())
        if isinstance(a, np.ndarray):
            a = torch.as_tensor(a, device=b.device)
        if isinstance(b, np.ndarray):
            b = torch.as_tensor(b, device=a.device)
        return function(a, b)

    return run


def _integer_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ONNX Div on integers truncates toward zero
    return torch.div(a, b, rounding_mode="trunc") if not a.is_floating_point() and not b.is_floating_point() else a / b


def _shape(node: GraphNode, args) -> np.ndarray:
    shape = np.array(args[0].shape, dtype=np.int64)
    start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
    return shape[start:None if end is None else int(end)]


def _cast(node: GraphNode, args) -> Value:
    target = _ONNX_DTYPES.get(int(node.attrs["to"]))
    if target is None:
        raise _refuse(node, f"to={node.attrs['to']}")
    value = args[0]
    if isinstance(value, np.ndarray):
        return value.astype(target)
    return value.float() if target is np.float32 else value.to(torch.from_numpy(np.zeros(0, target)).dtype)


def _slice(node: GraphNode, args) -> Value:
    data, starts, ends = args[0], _ints(args[1]), _ints(args[2])
    axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + data.ndim if axis < 0 else axis
        index = _onnx_slice(data.shape[axis], start, end, step)
        if isinstance(data, np.ndarray):
            data = np.take(data, index, axis=axis)
        else:
            data = torch.index_select(data, axis, torch.as_tensor(index, dtype=torch.long, device=data.device))
    return data


def _concat(node: GraphNode, args) -> Value:
    axis = int(node.attrs["axis"])
    if all(isinstance(arg, np.ndarray) for arg in args):
        return np.concatenate(args, axis=axis)
    device = next(arg.device for arg in args if isinstance(arg, torch.Tensor))
    return torch.cat([torch.as_tensor(arg, device=device) for arg in args], dim=axis)


_RESIZE_MODES = {("linear", "half_pixel"): ("bilinear", False), ("linear", "pytorch_half_pixel"): ("bilinear", False),
                 ("linear", "align_corners"): ("bilinear", True), ("nearest", "asymmetric"): ("nearest", None)}


def _check_resize(node: GraphNode) -> None:
    mode, transform = node.attrs.get("mode", "nearest"), node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if (mode, transform) not in _RESIZE_MODES or (mode == "nearest" and node.attrs.get("nearest_mode", "round_prefer_floor") != "floor"):
        raise _refuse(node, f"mode={mode}, coordinate_transformation_mode={transform}")
    if node.attrs.get("antialias", 0) or node.attrs.get("axes") is not None:
        raise _refuse(node, "antialias or axes")


def _resize(node: GraphNode, args) -> torch.Tensor:
    x = args[0]
    scales = args[2] if len(args) > 2 else None
    sizes = args[3] if len(args) > 3 else None
    if sizes is not None and len(_ints(sizes)):
        target = _ints(sizes)
    elif scales is not None:
        factors = [float(s) for s in np.asarray(scales.cpu() if isinstance(scales, torch.Tensor) else scales).reshape(-1)]
        target = [int(np.floor(dim * factor)) for dim, factor in zip(x.shape, factors)]
        if any(dim * factor != size for dim, factor, size in zip(x.shape, factors, target)):
            raise _refuse(node, "scales that do not give whole sizes")
    else:
        raise _refuse(node, "neither sizes nor scales")
    if list(target[:2]) != list(x.shape[:2]):
        raise _refuse(node, "a resize of the batch or channel axis")
    mode, align = _RESIZE_MODES[(node.attrs.get("mode", "nearest"), node.attrs.get("coordinate_transformation_mode", "half_pixel"))]
    return F.interpolate(x, size=tuple(target[2:]), mode=mode, align_corners=align)


def _reshape(node: GraphNode, args) -> Value:
    data, shape = args[0], _ints(args[1])
    if not node.attrs.get("allowzero", 0):
        shape = [data.shape[i] if size == 0 else size for i, size in enumerate(shape)]
    return data.reshape(shape)


def _axes_of(node: GraphNode, args) -> List[int]:
    return _ints(args[1]) if len(args) > 1 and args[1] is not None else list(node.attrs.get("axes", []))


def _unsqueeze(node: GraphNode, args) -> Value:
    data = args[0]
    rank = data.ndim + len(_axes_of(node, args))
    for axis in sorted(a + rank if a < 0 else a for a in _axes_of(node, args)):
        data = np.expand_dims(data, axis) if isinstance(data, np.ndarray) else data.unsqueeze(axis)
    return data


def _squeeze(node: GraphNode, args) -> Value:
    data = args[0]
    axes = _axes_of(node, args) or [i for i, size in enumerate(data.shape) if size == 1]
    axes = tuple(sorted((a + data.ndim if a < 0 else a for a in axes), reverse=True))
    for axis in axes:
        data = np.squeeze(data, axis) if isinstance(data, np.ndarray) else data.squeeze(axis)
    return data


def _gather(node: GraphNode, args) -> Value:
    data, indices, axis = args[0], np.asarray(_ints(args[1])).reshape(np.shape(args[1])), int(node.attrs.get("axis", 0))
    if isinstance(data, np.ndarray):
        return np.take(data, indices, axis=axis)
    axis = axis + data.ndim if axis < 0 else axis
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    flat = torch.index_select(data, axis, torch.as_tensor(indices.reshape(-1), dtype=torch.long, device=data.device))
    return flat.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])


def _transpose(node: GraphNode, args) -> Value:
    data = args[0]
    perm = list(node.attrs.get("perm", range(data.ndim - 1, -1, -1)))
    return np.transpose(data, perm) if isinstance(data, np.ndarray) else data.permute(perm)


def _expand(node: GraphNode, args) -> Value:
    data, shape = args[0], _ints(args[1])
    target = np.broadcast_shapes(tuple(data.shape), tuple(shape))
    return np.broadcast_to(data, target).copy() if isinstance(data, np.ndarray) else data.expand(target)


def _unary(function):
    return lambda node, args: function(args[0])


_OPS = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _pool, "AveragePool": _pool,
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Floor": _unary(lambda x: np.floor(x) if isinstance(x, np.ndarray) else torch.floor(x)),
    "Identity": _unary(lambda x: x),
    "Add": _elementwise(torch.add), "Sub": _elementwise(torch.sub), "Mul": _elementwise(torch.mul),
    "Div": _elementwise(_integer_divide), "Max": _elementwise(torch.maximum), "Min": _elementwise(torch.minimum),
    "Shape": _shape, "Cast": _cast, "Slice": _slice, "Concat": _concat, "Resize": _resize,
    "Reshape": _reshape, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Gather": _gather,
    "Transpose": _transpose, "Expand": _expand,
}
_CHECKS = {"Conv": _pads_2d, "ConvTranspose": _check_conv_transpose, "MaxPool": _check_pool,
           "AveragePool": _check_pool, "Resize": _check_resize, "Max": _check_binary, "Min": _check_binary}

SUPPORTED_OPERATORS: Sequence[str] = tuple(sorted(_OPS))

__all__ = ["GraphNode", "GraphPlan", "OnnxTorchModule", "SUPPORTED_OPERATORS", "plan_from_onnx"]
