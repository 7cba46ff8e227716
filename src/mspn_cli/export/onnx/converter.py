"""The ONNX converter's core: walks a dumped MegEngine graph and emits ONNX nodes.

The converter is generic: it loads the dump back as a computing graph and emits ONNX
nodes operator by operator. Nothing about MSPN or RetinaNet is written twice; any
network built from the supported operators converts. The operator handlers live by
family in `ops_conv`, `ops_elementwise`, `ops_pool` and `ops_shape`.

What the converter does itself, because it is simple and exact:
  * constant bias additions and inference-mode batch norms directly after a
    convolution are folded into the convolution's weights and bias;
  * elementwise operators whose inputs are all constants are evaluated with numpy;
  * shape arithmetic (GetVarShape, Subtensor on shapes, Concat, casts) is kept as
    ONNX operators, so the exported graph stays valid for other input sizes;
  * Padding's offsets and mode are taken from the trace, because MegEngine's graph
    API does not report them for a dumped operator.

An operator it does not know raises `UnsupportedOperatorError`, naming the operator
type and mode, rather than producing a graph that computes something else.
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from mspn_cli._mge import import_megengine
from mspn_cli.errors import ExportError, UnsupportedOperatorError
from mspn_cli.export.onnx.common import (
    EXPORTER_VERSION,
    ONNX_IR_VERSION,
    ONNX_OPSET,
    FoldableConv,
    Node,
    onnx_dtype,
    var_dtype,
)
from mspn_cli.export.onnx.recipes import Recipe, Tracked, apply
from mspn_cli.export.onnx.ops_conv import ConvOps
from mspn_cli.export.onnx.ops_elementwise import ElementwiseOps
from mspn_cli.export.onnx.ops_pool import PoolOps
from mspn_cli.export.onnx.ops_shape import ShapeOps
from mspn_cli.export.specs import axis_names
from mspn_cli.errors import first_line

DynamicAxes = Mapping[str, Union[Mapping[int, str], Sequence[int]]]


def convert_mge_graph(
    data: bytes,
    *,
    input_name: str,
    output_names: Sequence[str],
    input_shape: Sequence[int],
    dynamic_axes: DynamicAxes,
    check: bool = True,
    hidden_params: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
    weight_sources: Optional[Mapping[str, np.ndarray]] = None,
    recipes_out: Optional[Dict[str, Recipe]] = None,
):
    """Convert a dumped MegEngine graph (`.mge` bytes) to an `onnx.ModelProto`.

    `hidden_params` is `TracedGraph.hidden_params`: without it, operators whose
    parameters the dump hides (Padding) cannot be converted. `weight_sources` (state-dict
    key -> the tensor as the network holds it, every tensor distinct) lets the converter
    recognise which constants are weights; it then puts into `recipes_out` how each
    weight-derived initializer was computed (what a graph template stores). The graph
    itself is the same with or without them.
    """
    import onnx

    mge = import_megengine()  # noqa: F841 - initialises MegEngine before its graph API is used
    from megengine.core.tensor import megbrain_graph as G
    from megengine.utils.comp_graph_tools import get_oprs_seq

    loaded = G.load_graph(io.BytesIO(data))
    outputs = list(loaded.output_vars_list)
    oprs = get_oprs_seq(outputs, prune_reshape=False, prune_immtensor=False)
    converter = Converter(oprs, outputs, input_name, list(output_names), tuple(input_shape), dynamic_axes, hidden_params)
    converter.weight_keys = _weight_keys(weight_sources or {})
    model_proto = converter.convert()
    if recipes_out is not None:
        used = {initializer.name for initializer in model_proto.graph.initializer}
        recipes_out.update({name: r for name, r in converter.initializer_recipes.items() if name in used})
    if check:
        try:
            onnx.checker.check_model(model_proto)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the converted ONNX graph is invalid: {first_line(exc)}") from exc
    return model_proto



class Converter(ConvOps, ElementwiseOps, PoolOps, ShapeOps):
    """Walks MegEngine operators in topological order and emits ONNX nodes."""

    def __init__(self, oprs, outputs, input_name, output_names, input_shape, dynamic_axes, hidden_params=None):
        self.oprs = oprs
        self.hidden_params = {kind: list(params) for kind, params in (hidden_params or {}).items()}
        self.outputs = outputs
        self.input_name = input_name
        self.output_names = output_names
        self.input_shape = input_shape
        self.input_axes = axis_names(dynamic_axes.get(input_name), input_name)
        self.output_axes = {name: axis_names(dynamic_axes.get(name), name) for name in output_names}

        self.nodes: List[Node] = []
        self.initializers: Dict[str, np.ndarray] = {}
        self.names: Dict[int, str] = {}  # MegEngine var id -> ONNX tensor name
        self.consts: Dict[int, np.ndarray] = {}  # MegEngine var id -> value known at export time
        self.const_recipes: Dict[int, Recipe] = {}  # var id -> how a weight-derived constant was computed
        self.initializer_recipes: Dict[str, Recipe] = {}  # initializer name -> the same, for initializers
        self.weight_keys: Dict[Tuple[str, Tuple[int, ...], bytes], str] = {}  # (dtype, shape, digest) -> state-dict key
        self.dtypes: Dict[str, np.dtype] = {}  # ONNX tensor name -> dtype
        self.foldable: Dict[int, FoldableConv] = {}  # var id -> conv that may absorb its consumer
        self._used_names: set = set()
        self._int64_cache: Dict[str, str] = {}
        self._graph_inputs: List[Tuple[str, np.dtype, Tuple[int, ...]]] = []

        self.consumers: Dict[int, int] = {}
        for opr in oprs:
            for var in opr.inputs:
                self.consumers[var.id] = self.consumers.get(var.id, 0) + 1
        for var in outputs:  # being a graph output counts as one more use
            self.consumers[var.id] = self.consumers.get(var.id, 0) + 1

    # ----------------------------------------------------------------- naming helpers

    def fresh(self, hint: str) -> str:
        base = "".join(ch if ch.isalnum() or ch in "._-:/" else "_" for ch in (hint or "t"))[:80] or "t"
        name, index = base, 1
        while name in self._used_names:
            index += 1
            name = f"{base}_{index}"
        self._used_names.add(name)
        return name

    def emit(self, op_type: str, inputs: Sequence[str], hint: str, dtype=None, n_outputs: int = 1, **attrs) -> str:
        outputs = [self.fresh(f"{hint}:{op_type}" if n_outputs == 1 else f"{hint}:{op_type}{i}") for i in range(n_outputs)]
        self.nodes.append(Node(op_type, list(inputs), outputs, attrs, self.fresh(f"n:{hint}:{op_type}")))
        if dtype is not None:
            for out in outputs:
                self.dtypes[out] = np.dtype(dtype)
        return outputs[0]

    def constant(self, value, hint: str) -> str:
        """A new initializer; `value` an array, or a `Tracked` one that may come from the weights."""
        name = self.fresh(hint)
        self.set_initializer(name, value if isinstance(value, Tracked) else Tracked(np.asarray(value)))
        return name

    def set_initializer(self, name: str, tracked: Tracked) -> None:
        value = np.asarray(tracked.value)
        self.initializers[name] = value
        self.dtypes[name] = value.dtype
        if tracked.recipe is not None:
            self.initializer_recipes[name] = tracked.recipe
        else:
            self.initializer_recipes.pop(name, None)

    def tracked_initializer(self, name: str) -> Tracked:
        return Tracked(self.initializers[name], self.initializer_recipes.get(name))

    def tracked(self, var) -> Tracked:
        """A constant variable's value with its recipe (None when it does not come from the weights)."""
        return Tracked(self.consts[var.id], self.const_recipes.get(var.id))

    def set_const(self, var, tracked: Tracked) -> None:
        self.consts[var.id] = tracked.value
        if tracked.recipe is not None:
            self.const_recipes[var.id] = tracked.recipe

    def literal_of(self, var) -> np.ndarray:
        """A constant that shapes the graph (a shape, a size, a step): it must not come from the weights."""
        if var.id in self.const_recipes:
            raise UnsupportedOperatorError(f"cannot export to ONNX: '{var.name}' shapes the graph but is computed from the weights")
        return self.consts[var.id]

    def name_of(self, var) -> str:
        """The ONNX tensor holding `var`; constants become initializers on first use."""
        if var.id not in self.names:
            if var.id not in self.consts:
                raise ExportError(f"internal error: variable '{var.name}' used before it is produced")
            self.names[var.id] = self.constant(self.tracked(var), var.name)
        return self.names[var.id]

    def int64_of(self, var) -> str:
        """`var` as an int64 tensor (what ONNX wants for shapes and indices)."""
        if var.id in self.consts:
            return self.constant(apply("astype", self.tracked(var), dtype="int64"), f"{var.name}:i64")
        source = self.name_of(var)
        if self.dtypes.get(source) == np.dtype(np.int64):
            return source
        if source not in self._int64_cache:
            self._int64_cache[source] = self.emit("Cast", [source], var.name, np.int64, to=onnx_dtype(np.int64))
        return self._int64_cache[source]

    def bind(self, var, name: str) -> None:
        self.names[var.id] = name
        dtype = var_dtype(var)
        if dtype is not None and name not in self.dtypes:
            self.dtypes[name] = dtype

    def is_const(self, var) -> bool:
        return var.id in self.consts

    def single_use(self, var) -> bool:
        return self.consumers.get(var.id, 0) == 1

    # ----------------------------------------------------------------- driver

    def convert(self):
        for opr in self.oprs:
            handler = getattr(self, "op_" + opr.type, None)
            if handler is None:
                raise UnsupportedOperatorError(
                    f"cannot export to ONNX: MegEngine operator {opr.type} ('{opr.name}') is not supported "
                    "by the converter; use the megengine or mge-lite backend (or --format mge)"
                )
            params = _params(opr)
            handler(opr, params)
        return self._build_model()

    def _build_model(self):
        import onnx
        from onnx import helper, numpy_helper

        renames: Dict[str, str] = {}
        output_infos = []
        produced = {out for node in self.nodes for out in node.outputs}
        for var, name in zip(self.outputs, self.output_names):
            source = self.name_of(var)
            if source in produced and source not in renames and source not in self._graph_input_names():
                renames[source] = name
            else:  # the output is a constant, the input, or another output: copy it
                self.nodes.append(Node("Identity", [source], [name], {}, self.fresh(f"n:{name}")))
            output_infos.append(
                helper.make_tensor_value_info(
                    name, onnx_dtype(var_dtype(var) or np.float32), self._output_dims(name, tuple(var.shape))
                )
            )
        for node in self.nodes:
            node.inputs = [renames.get(i, i) for i in node.inputs]
            node.outputs = [renames.get(o, o) for o in node.outputs]

        used = {i for node in self.nodes for i in node.inputs}
        initializers = [
            numpy_helper.from_array(np.ascontiguousarray(value), name)
            for name, value in self.initializers.items()
            if name in used
        ]
        inputs = [
            helper.make_tensor_value_info(name, onnx_dtype(dtype), self._input_dims(shape))
            for name, dtype, shape in self._graph_inputs
        ]
        nodes = [helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name, **n.attrs) for n in self.nodes]
        graph = helper.make_graph(nodes, "mspn_cli_export", inputs, output_infos, initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            producer_name="mspn-cli",
            producer_version=EXPORTER_VERSION,
        )
        model.ir_version = ONNX_IR_VERSION
        return model

    def _graph_input_names(self):
        return {name for name, _, _ in self._graph_inputs}

    def _input_dims(self, shape):
        return [self.input_axes.get(axis, int(size)) for axis, size in enumerate(shape)]

    def _output_dims(self, name: str, shape: Tuple[int, ...]):
        explicit = self.output_axes.get(name)
        if explicit:
            return [explicit.get(axis, int(size)) for axis, size in enumerate(shape)]
        # Without an explicit spec: an output axis may vary when the input axis of the
        # same index does (convolutional networks keep N, H, W in place).
        dims: List[Union[int, str]] = []
        for axis, size in enumerate(shape):
            if axis in self.input_axes:
                dims.append(self.input_axes[axis] if axis == 0 else f"{name}_dim{axis}")
            else:
                dims.append(int(size))
        return dims

    # ----------------------------------------------------------------- sources

    def op_Host2DeviceCopy(self, opr, params):
        var = opr.outputs[0]
        if self._graph_inputs:
            raise UnsupportedOperatorError("cannot export to ONNX: the graph has more than one input")
        shape = tuple(self.input_shape) if self.input_shape else tuple(var.shape)
        self._graph_inputs.append((self.input_name, var_dtype(var) or np.dtype(np.float32), shape))
        self._used_names.add(self.input_name)
        self.bind(var, self.input_name)

    def op_ImmutableTensor(self, opr, params):
        value = np.asarray(opr.outputs[0].value)
        key = self.weight_keys.get(_value_signature(value)) if self.weight_keys else None
        self.set_const(opr.outputs[0], Tracked(value, Recipe.weight(key) if key is not None else None))

    op_SharedDeviceTensor = op_ImmutableTensor

    def op_Identity(self, opr, params):
        self._alias(opr.inputs[0], opr.outputs[0])

    op_Copy = op_Identity

    def _check_nchw(self, opr, params):
        if params.get("format", "NCHW") != "NCHW":
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: {opr.type} in layout {params.get('format')} is not supported (only NCHW)"
            )

    def _alias(self, source, target) -> None:
        if self.is_const(source):
            self.set_const(target, self.tracked(source))
            return
        self.bind(target, self.name_of(source))
        if source.id in self.foldable and self.single_use(target):
            self.foldable[target.id] = self.foldable.pop(source.id)



def _params(opr) -> Any:
    text = (opr.params or "").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _value_signature(value: np.ndarray) -> Tuple[str, Tuple[int, ...], bytes]:
    import hashlib

    array = np.ascontiguousarray(value)
    return array.dtype.str, tuple(array.shape), hashlib.sha256(memoryview(array).cast("B")).digest()


def _weight_keys(sources: Mapping[str, np.ndarray]) -> Dict[Tuple[str, Tuple[int, ...], bytes], str]:
    """Each weight tensor's signature -> its key; two equal tensors could not be told apart."""
    keys: Dict[Tuple[str, Tuple[int, ...], bytes], str] = {}
    for key, value in sources.items():
        signature = _value_signature(np.asarray(value))
        if signature in keys:
            raise ExportError(f"weights {keys[signature]} and {key} are equal: constants cannot be traced back to one key")
        keys[signature] = key
    return keys
