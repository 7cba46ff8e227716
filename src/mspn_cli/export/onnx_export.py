"""Export a MegEngine network as a `.mge` graph (for MegEngine Lite) or as ONNX.

The ONNX converter is generic: it traces the model with `jit.trace`, dumps the traced
graph *without* MegEngine's inference optimisations, loads the dump back as a
computing graph and emits ONNX nodes operator by operator. Nothing about MSPN or
RetinaNet is written twice; any network built from the supported operators converts.

Why the unoptimised dump: `optimize_for_inference` rewrites the graph into fused
operators (FUSE_MUL_ADD3, explicit Broadcast, ConvBias, NCHW88 layouts) that are
harder to map and no faster once onnxruntime applies its own fusions. The converter
still understands the common fused forms (FUSE_ADD_RELU, FUSE_MUL_ADD3, ConvBias in
NCHW) so a dump from elsewhere converts too.

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

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from mspn_cli._mge import import_megengine, silenced_stderr
from mspn_cli.export.graph_cache import atomic_write_bytes
from mspn_cli.errors import UsageError

# Bump whenever the converter's output changes: it is part of every graph-cache key,
# so graphs written by an older converter are not reused.
EXPORTER_VERSION = "1"
ONNX_OPSET = 17
# IR version 8 is the oldest that carries opset 17, so older onnxruntime builds load it too.
ONNX_IR_VERSION = 8

DynamicAxes = Mapping[str, Union[Mapping[int, str], Sequence[int]]]


class UnsupportedOperatorError(UsageError):
    """The graph contains an operator (or operator mode) the ONNX converter cannot express."""


class ExportError(UsageError):
    """The model could not be traced or its exported graph does not reproduce MegEngine."""


# --------------------------------------------------------------------------- tracing


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
            raise ExportError(f"tracing the model on a {tuple(example_input.shape)} input failed: {_first_line(exc)}") from exc
        example_outputs = [np.asarray(out.numpy()) for out in flatten_outputs(outputs)]
        names = list(output_names) if output_names else default_output_names(len(example_outputs))
        if len(names) != len(example_outputs):
            raise UsageError(f"{len(names)} output names given for a model with {len(example_outputs)} outputs")
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
                tensor._reset(mge.Tensor(tensor.numpy(), device=_DUMP_DEVICE))
        mge.set_default_device(_DUMP_DEVICE)
        yield
    finally:
        mge.set_default_device(previous_default)
        for tensor, device in moved:
            tensor._reset(mge.Tensor(tensor.numpy(), device=device.split(":")[0]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- input specs


@dataclass(frozen=True)
class InputSpec:
    """The example shape a graph is traced with, and which of its axes may vary."""

    shape: Tuple[int, ...]
    dynamic_axes: Tuple[Tuple[int, str], ...]  # ((axis, name), ...), hashable for cache keys

    @classmethod
    def make(cls, shape: Sequence[int], dynamic_axes: Union[Mapping[int, str], Sequence[int], None]) -> "InputSpec":
        axes = _axis_names(dynamic_axes, "images")
        return cls(tuple(int(s) for s in shape), tuple(sorted(axes.items())))

    def axes_dict(self) -> Dict[int, str]:
        return dict(self.dynamic_axes)

    def example(self) -> np.ndarray:
        # Seeded so a cache key never depends on chance; values in [-1, 1] exercise
        # every activation's both sides, which is what a verification run needs.
        return np.random.default_rng(0).uniform(-1.0, 1.0, size=self.shape).astype(np.float32)

    def accepts(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        dynamic = self.axes_dict()
        return all(axis in dynamic or int(size) == self.shape[axis] for axis, size in enumerate(shape))


# Known networks: MSPN takes fixed 256x192 crops, any number of them; RetinaNet takes
# any N x 3 x H x W. A small example keeps the trace (one real forward pass) quick.
_KNOWN_INPUT_SPECS = {
    "MSPN": ((1, 3, 256, 192), {0: "N"}),
    "RetinaNet": ((1, 3, 256, 320), {0: "N", 2: "H", 3: "W"}),
}


def default_input_spec(model) -> Optional[InputSpec]:
    """The input spec of a known network class, else None (the backend then waits for a batch)."""
    for cls in type(model).__mro__:
        if cls.__name__ in _KNOWN_INPUT_SPECS:
            shape, axes = _KNOWN_INPUT_SPECS[cls.__name__]
            return InputSpec.make(shape, axes)
    return None


def input_spec_for_batch(shape: Sequence[int]) -> InputSpec:
    """For a network nothing is known about: the batch axis varies, and H, W of an image batch."""
    axes = {0: "N", 2: "H", 3: "W"} if len(shape) == 4 else {0: "N"}
    return InputSpec.make(shape, axes)


# --------------------------------------------------------------------------- .mge export

# Options for MegEngine's own CPU inference: NCHW88 blocks suit AVX2 kernels, and
# fusing conv + bias + relu saves a pass over every activation.
MGE_CPU_DUMP_OPTIONS = {"enable_nchw88": True, "enable_fuse_conv_bias_nonlinearity": True}


def export_mge_bytes(
    model, example_input: np.ndarray, *, optimize: bool = True, input_name: str = "images", output_names: Optional[Sequence[str]] = None
) -> TracedGraph:
    options = dict(MGE_CPU_DUMP_OPTIONS) if optimize else {}
    return trace_and_dump(model, example_input, input_name=input_name, output_names=output_names, optimize=optimize, **options)


def export_mge(
    model, example_input: np.ndarray, path, *, optimize: bool = True, input_name: str = "images", output_names: Optional[Sequence[str]] = None
) -> Path:
    """Write `model` as a `.mge` graph for MegEngine Lite and return its path.

    The graph keeps its shape computations, so it accepts other batch sizes (and
    other image sizes for fully convolutional models) than `example_input`'s.
    """
    traced = export_mge_bytes(model, example_input, optimize=optimize, input_name=input_name, output_names=output_names)
    return atomic_write_bytes(Path(path), traced.data)


# --------------------------------------------------------------------------- ONNX export


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
    model_proto, traced = export_onnx_model(
        model, example_input, dynamic_axes=dynamic_axes, input_name=input_name, output_names=output_names
    )
    data = model_proto.SerializeToString()
    if verify:
        verify_onnx(data, traced)
    return atomic_write_bytes(Path(path), data)


def export_onnx_model(
    model,
    example_input: np.ndarray,
    *,
    dynamic_axes: Optional[DynamicAxes] = None,
    input_name: str = "images",
    output_names: Optional[Sequence[str]] = None,
):
    """Trace, dump and convert: returns `(onnx.ModelProto, TracedGraph)`."""
    traced = trace_and_dump(model, example_input, input_name=input_name, output_names=output_names, optimize=False)
    model_proto = convert_mge_graph(
        traced.data,
        input_name=input_name,
        output_names=traced.output_names,
        input_shape=tuple(traced.example_input.shape),
        dynamic_axes=dynamic_axes or {},
        hidden_params=traced.hidden_params,
    )
    return model_proto, traced


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (0 when both are all zeros)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        return float("inf")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(actual - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def verify_onnx(model_bytes_or_path, traced: TracedGraph, tolerance: float = 1e-4, session=None) -> float:
    """Run the ONNX graph on the traced example; raise ExportError if it disagrees with MegEngine."""
    if session is None:
        import onnxruntime as ort

        session = ort.InferenceSession(model_bytes_or_path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {traced.input_name: traced.example_input})
    worst = 0.0
    for name, actual, expected in zip(traced.output_names, outputs, traced.example_outputs):
        error = relative_error(actual, expected)
        worst = max(worst, error)
        if not error <= tolerance:
            raise ExportError(
                f"the exported ONNX graph does not reproduce MegEngine on output '{name}' "
                f"(relative error {error:.2e} > {tolerance:.0e}); this is a converter bug, "
                "use the megengine or mge-lite backend instead"
            )
    return worst


# --------------------------------------------------------------------------- converter


def convert_mge_graph(
    data: bytes,
    *,
    input_name: str,
    output_names: Sequence[str],
    input_shape: Sequence[int],
    dynamic_axes: DynamicAxes,
    check: bool = True,
    hidden_params: Optional[Mapping[str, Sequence[Mapping[str, Any]]]] = None,
):
    """Convert a dumped MegEngine graph (`.mge` bytes) to an `onnx.ModelProto`.

    `hidden_params` is `TracedGraph.hidden_params`: without it, operators whose
    parameters the dump hides (Padding) cannot be converted.
    """
    import onnx

    mge = import_megengine()  # noqa: F841 - initialises MegEngine before its graph API is used
    from megengine.core.tensor import megbrain_graph as G
    from megengine.utils.comp_graph_tools import get_oprs_seq

    loaded = G.load_graph(io.BytesIO(data))
    outputs = list(loaded.output_vars_list)
    oprs = get_oprs_seq(outputs, prune_reshape=False, prune_immtensor=False)
    converter = _Converter(oprs, outputs, input_name, list(output_names), tuple(input_shape), dynamic_axes, hidden_params)
    model_proto = converter.convert()
    if check:
        try:
            onnx.checker.check_model(model_proto)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the converted ONNX graph is invalid: {_first_line(exc)}") from exc
    return model_proto


def _axis_names(spec: Union[Mapping[int, str], Sequence[int], None], prefix: str) -> Dict[int, str]:
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        return {int(axis): str(name) for axis, name in spec.items()}
    default = {0: "N", 2: "H", 3: "W"}
    return {int(axis): default.get(int(axis), f"{prefix}_dim{axis}") for axis in spec}


@dataclass
class _Node:
    op_type: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any]
    name: str


@dataclass
class _FoldableConv:
    """A Conv/ConvTranspose whose output feeds exactly one operator, so that operator's
    per-channel affine (bias add, batch norm) can be folded into its weights."""

    node: _Node
    weight: str  # initializer owned by this node alone
    bias: Optional[str]
    out_channels: int
    groups: int
    transposed: bool


def _np_relu(x):
    return np.maximum(x, 0)


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Elemwise mode -> (ONNX op chain builder, numpy evaluator or None).
# Builders take (converter, input names) and return the output name.
_UNARY_ONNX = {
    "RELU": "Relu",
    "ABS": "Abs",
    "CEIL": "Ceil",
    "FLOOR": "Floor",
    "EXP": "Exp",
    "LOG": "Log",
    "NEGATE": "Neg",
    "SIGMOID": "Sigmoid",
    "TANH": "Tanh",
    "SIN": "Sin",
    "COS": "Cos",
    "ERF": "Erf",
    "SOFTPLUS": "Softplus",
    "H_SWISH": "HardSwish",
}
_BINARY_ONNX = {
    "ADD": "Add",
    "SUB": "Sub",
    "MUL": "Mul",
    "TRUE_DIV": "Div",
    "MAX": "Max",
    "MIN": "Min",
    "POW": "Pow",
}
_NUMPY_ELEMWISE: Dict[str, Callable[..., np.ndarray]] = {
    "RELU": _np_relu,
    "ABS": np.abs,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "EXP": np.exp,
    "LOG": np.log,
    "NEGATE": np.negative,
    "SIGMOID": _np_sigmoid,
    "TANH": np.tanh,
    "ADD": np.add,
    "SUB": np.subtract,
    "MUL": np.multiply,
    "TRUE_DIV": np.true_divide,
    "MAX": np.maximum,
    "MIN": np.minimum,
    "POW": np.power,
    "FUSE_ADD_RELU": lambda a, b: _np_relu(a + b),
    "FUSE_MUL_ADD3": lambda a, b, c: a * b + c,
    "FUSE_MUL_ADD4": lambda a, b, c, d: a * b + c * d,
}

_NO_AXIS = 7  # MegEngine's "no axis given" marker (MEGDNN_MAX_NDIM) in Reshape/GetVarShape params
_INT64_MAX = np.iinfo(np.int64).max


def _onnx_dtype(dtype) -> int:
    from onnx import TensorProto

    table = {
        np.dtype(np.float32): TensorProto.FLOAT,
        np.dtype(np.float16): TensorProto.FLOAT16,
        np.dtype(np.float64): TensorProto.DOUBLE,
        np.dtype(np.int32): TensorProto.INT32,
        np.dtype(np.int64): TensorProto.INT64,
        np.dtype(np.int16): TensorProto.INT16,
        np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.uint8): TensorProto.UINT8,
        np.dtype(np.bool_): TensorProto.BOOL,
    }
    try:
        return table[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise UnsupportedOperatorError(f"cannot export tensors of dtype {dtype} to ONNX") from None


def _var_dtype(var) -> Optional[np.dtype]:
    try:
        return np.dtype(var.dtype)
    except Exception:  # MegEngine workspace outputs have a Byte dtype numpy does not know
        return None


class _Converter:
    """Walks MegEngine operators in topological order and emits ONNX nodes."""

    def __init__(self, oprs, outputs, input_name, output_names, input_shape, dynamic_axes, hidden_params=None):
        self.oprs = oprs
        self.hidden_params = {kind: list(params) for kind, params in (hidden_params or {}).items()}
        self.outputs = outputs
        self.input_name = input_name
        self.output_names = output_names
        self.input_shape = input_shape
        self.input_axes = _axis_names(dynamic_axes.get(input_name), input_name)
        self.output_axes = {name: _axis_names(dynamic_axes.get(name), name) for name in output_names}

        self.nodes: List[_Node] = []
        self.initializers: Dict[str, np.ndarray] = {}
        self.names: Dict[int, str] = {}  # MegEngine var id -> ONNX tensor name
        self.consts: Dict[int, np.ndarray] = {}  # MegEngine var id -> value known at export time
        self.dtypes: Dict[str, np.dtype] = {}  # ONNX tensor name -> dtype
        self.foldable: Dict[int, _FoldableConv] = {}  # var id -> conv that may absorb its consumer
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
        self.nodes.append(_Node(op_type, list(inputs), outputs, attrs, self.fresh(f"n:{hint}:{op_type}")))
        if dtype is not None:
            for out in outputs:
                self.dtypes[out] = np.dtype(dtype)
        return outputs[0]

    def constant(self, value: np.ndarray, hint: str) -> str:
        value = np.asarray(value)
        name = self.fresh(hint)
        self.initializers[name] = value
        self.dtypes[name] = value.dtype
        return name

    def name_of(self, var) -> str:
        """The ONNX tensor holding `var`; constants become initializers on first use."""
        if var.id not in self.names:
            if var.id not in self.consts:
                raise ExportError(f"internal error: variable '{var.name}' used before it is produced")
            self.names[var.id] = self.constant(self.consts[var.id], var.name)
        return self.names[var.id]

    def int64_of(self, var) -> str:
        """`var` as an int64 tensor (what ONNX wants for shapes and indices)."""
        if var.id in self.consts:
            return self.constant(self.consts[var.id].astype(np.int64), f"{var.name}:i64")
        source = self.name_of(var)
        if self.dtypes.get(source) == np.dtype(np.int64):
            return source
        if source not in self._int64_cache:
            self._int64_cache[source] = self.emit("Cast", [source], var.name, np.int64, to=_onnx_dtype(np.int64))
        return self._int64_cache[source]

    def bind(self, var, name: str) -> None:
        self.names[var.id] = name
        dtype = _var_dtype(var)
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
                self.nodes.append(_Node("Identity", [source], [name], {}, self.fresh(f"n:{name}")))
            output_infos.append(
                helper.make_tensor_value_info(
                    name, _onnx_dtype(_var_dtype(var) or np.float32), self._output_dims(name, tuple(var.shape))
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
            helper.make_tensor_value_info(name, _onnx_dtype(dtype), self._input_dims(shape))
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
        self._graph_inputs.append((self.input_name, _var_dtype(var) or np.dtype(np.float32), shape))
        self._used_names.add(self.input_name)
        self.bind(var, self.input_name)

    def op_ImmutableTensor(self, opr, params):
        value = np.asarray(opr.outputs[0].value)
        self.consts[opr.outputs[0].id] = value

    op_SharedDeviceTensor = op_ImmutableTensor

    def op_Identity(self, opr, params):
        self._alias(opr.inputs[0], opr.outputs[0])

    op_Copy = op_Identity

    def _alias(self, source, target) -> None:
        if self.is_const(source):
            self.consts[target.id] = self.consts[source.id]
            return
        self.bind(target, self.name_of(source))
        if source.id in self.foldable and self.single_use(target):
            self.foldable[target.id] = self.foldable.pop(source.id)

    # ----------------------------------------------------------------- convolutions

    def _check_nchw(self, opr, params):
        if params.get("format", "NCHW") != "NCHW":
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: {opr.type} in layout {params.get('format')} is not supported (only NCHW)"
            )

    def _conv_weight(self, opr, params, weight_var, transposed: bool) -> Tuple[np.ndarray, int]:
        """The ONNX weight array (owned by the caller) and the group count."""
        if not self.is_const(weight_var):
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: {opr.type} with computed (non-constant) weights is not supported"
            )
        weight = np.array(self.consts[weight_var.id], dtype=np.float32, copy=True)
        groups = 1
        if params.get("sparse", "DENSE") == "GROUP":
            # MegEngine: (G, OC/G, IC/G, kh, kw) for conv, (G, IC/G, OC/G, kh, kw) for deconv;
            # ONNX folds the group into the first axis in both cases.
            groups = weight.shape[0]
            weight = weight.reshape((groups * weight.shape[1],) + weight.shape[2:])
        elif params.get("sparse", "DENSE") != "DENSE":
            raise UnsupportedOperatorError(f"cannot export to ONNX: {opr.type} with sparse={params['sparse']}")
        if params.get("mode", "CROSS_CORRELATION") == "CONVOLUTION":  # true convolution: flipped kernel
            weight = np.ascontiguousarray(weight[..., ::-1, ::-1])
        return weight, groups

    def _conv_attrs(self, params, weight: np.ndarray, groups: int) -> Dict[str, Any]:
        ph, pw = int(params.get("pad_h", 0)), int(params.get("pad_w", 0))
        return {
            "kernel_shape": [int(weight.shape[2]), int(weight.shape[3])],
            "strides": [int(params.get("stride_h", 1)), int(params.get("stride_w", 1))],
            "pads": [ph, pw, ph, pw],
            "dilations": [int(params.get("dilate_h", 1)), int(params.get("dilate_w", 1))],
            "group": groups,
        }

    def _emit_conv(self, opr, params, data_var, weight_var, out_var, transposed: bool, bias: Optional[np.ndarray] = None):
        self._check_nchw(opr, params)
        weight, groups = self._conv_weight(opr, params, weight_var, transposed)
        attrs = self._conv_attrs(params, weight, groups)
        out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
        if transposed:
            attrs.update(self._deconv_output_padding(opr, params, weight, data_var, out_var))
        weight_name = self.constant(weight, f"{weight_var.name}:w")
        inputs = [self.name_of(data_var), weight_name]
        bias_name = None
        if bias is not None:
            bias_name = self.constant(np.asarray(bias, np.float32).reshape(out_channels).copy(), f"{opr.name}:b")
            inputs.append(bias_name)
        op_type = "ConvTranspose" if transposed else "Conv"
        output = self.emit(op_type, inputs, out_var.name, np.float32, **attrs)
        node = self.nodes[-1]
        self.bind(out_var, output)
        if self.single_use(out_var):
            self.foldable[out_var.id] = _FoldableConv(node, weight_name, bias_name, out_channels, groups, transposed)
        return output

    def _deconv_output_padding(self, opr, params, weight, data_var, out_var) -> Dict[str, Any]:
        # MegEngine infers the deconvolution output size exactly like ONNX's default;
        # a larger static size means an explicit output shape that ONNX expresses as output_padding.
        in_shape, out_shape = tuple(data_var.shape), tuple(out_var.shape)
        extra = []
        for axis, key in ((2, "h"), (3, "w")):
            stride, pad = int(params.get(f"stride_{key}", 1)), int(params.get(f"pad_{key}", 0))
            dilate = int(params.get(f"dilate_{key}", 1))
            natural = (in_shape[axis] - 1) * stride - 2 * pad + dilate * (weight.shape[axis] - 1) + 1
            extra.append(out_shape[axis] - natural)
        if any(e != 0 for e in extra):
            if any(e < 0 for e in extra):
                raise UnsupportedOperatorError(f"cannot export to ONNX: {opr.type} with a cropped output shape")
            return {"output_padding": extra}
        return {}

    def op_ConvolutionForward(self, opr, params):
        self._emit_conv(opr, params, opr.inputs[0], opr.inputs[1], opr.outputs[0], transposed=False)

    def op_ConvolutionBackwardData(self, opr, params):
        # Inputs are (filter, input[, output-shape reference]): the gradient of a
        # convolution w.r.t. its data, i.e. a transposed convolution.
        self._emit_conv(opr, params, opr.inputs[1], opr.inputs[0], opr.outputs[0], transposed=True)

    def op_ConvBiasForward(self, opr, params):
        # Produced by optimize_for_inference(fuse_conv_bias_nonlinearity):
        # activation(conv(x, w) + bias [+ z]). The "bias" may be a per-channel constant or
        # a whole tensor (a fused residual addition), which then becomes an Add.
        out_var = opr.outputs[0]
        if len(opr.inputs) > 4:
            raise UnsupportedOperatorError("cannot export to ONNX: ConvBias with more than four inputs")
        self._check_nchw(opr, params)
        weight, groups = self._conv_weight(opr, params, opr.inputs[1], transposed=False)
        attrs = self._conv_attrs(params, weight, groups)
        inputs = [self.name_of(opr.inputs[0]), self.constant(weight, f"{opr.inputs[1].name}:w")]
        addends = list(opr.inputs[2:])
        if addends and self.is_const(addends[0]) and self.consts[addends[0].id].size == weight.shape[0]:
            inputs.append(self.constant(self.consts[addends[0].id].reshape(-1).astype(np.float32), f"{opr.name}:b"))
            addends = addends[1:]
        result = self.emit("Conv", inputs, out_var.name, np.float32, **attrs)
        for addend in addends:
            result = self.emit("Add", [result, self.name_of(addend)], out_var.name, np.float32)
        mode = params.get("nonlineMode", "IDENTITY")
        activation = {"IDENTITY": None, "RELU": "Relu", "SIGMOID": "Sigmoid", "H_SWISH": "HardSwish"}
        if mode not in activation:
            raise UnsupportedOperatorError(f"cannot export to ONNX: ConvBias with nonlineMode {mode}")
        if activation[mode]:
            result = self.emit(activation[mode], [result], out_var.name, np.float32)
        self.bind(out_var, result)

    def _fold_channel_affine(self, source_var, out_var, scale: Optional[np.ndarray], shift: np.ndarray) -> bool:
        """Fold y = conv(x) * scale + shift (per output channel) into the conv; True if done."""
        conv = self.foldable.get(source_var.id)
        if conv is None:
            return False
        channels = conv.out_channels
        shift = np.asarray(shift, dtype=np.float64)
        if shift.size not in (1, channels) or (scale is not None and np.asarray(scale).size not in (1, channels)):
            return False
        del self.foldable[source_var.id]
        shift = np.broadcast_to(shift.reshape(-1), (channels,))
        bias = self.initializers[conv.bias].astype(np.float64) if conv.bias else np.zeros(channels)
        if scale is not None:
            scale = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (channels,))
            weight = self.initializers[conv.weight].astype(np.float64)
            if conv.transposed:
                # (IC, OC/G, kh, kw): output channel g*OC/G + j lives at [group g rows, column j].
                in_per_group = weight.shape[0] // conv.groups
                per_group = channels // conv.groups
                grouped = weight.reshape(conv.groups, in_per_group, per_group, *weight.shape[2:])
                grouped = grouped * scale.reshape(conv.groups, 1, per_group, 1, 1)
                weight = grouped.reshape(weight.shape)
            else:
                weight = weight * scale.reshape(-1, 1, 1, 1)
            self.initializers[conv.weight] = weight.astype(np.float32)
            bias = bias * scale
        bias = (bias + shift).astype(np.float32)
        if conv.bias is None:
            conv.bias = self.constant(bias, f"{conv.node.name}:b")
            conv.node.inputs.append(conv.bias)
        else:
            self.initializers[conv.bias] = bias
        self.bind(out_var, conv.node.outputs[0])
        if self.single_use(out_var):
            self.foldable[out_var.id] = conv
        return True

    # ----------------------------------------------------------------- normalisation

    def op_BatchNormForward(self, opr, params):
        if params.get("fwd_mode", "INFERENCE") != "INFERENCE":
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: BatchNorm in {params.get('fwd_mode')} mode (put the model in eval mode)"
            )
        if params.get("param_dim", "DIM_1C11") != "DIM_1C11":
            raise UnsupportedOperatorError(f"cannot export to ONNX: BatchNorm with param_dim {params.get('param_dim')}")
        data, scale_var, bias_var, mean_var, var_var = opr.inputs[:5]
        out_var = opr.outputs[-1]  # outputs: batch mean, batch inv-variance, workspace, y
        if not all(self.is_const(v) for v in (scale_var, bias_var, mean_var, var_var)):
            raise UnsupportedOperatorError("cannot export to ONNX: BatchNorm with computed statistics")
        epsilon = float(params.get("epsilon", 1e-5))
        gamma, beta, mean, variance = (self.consts[v.id].astype(np.float64).reshape(-1) for v in (scale_var, bias_var, mean_var, var_var))
        scale = gamma / np.sqrt(variance + epsilon)
        shift = beta - mean * scale
        if self._fold_channel_affine(data, out_var, scale, shift):
            return
        shape = (1, -1, 1, 1)
        scaled = self.emit(
            "Mul", [self.name_of(data), self.constant(scale.astype(np.float32).reshape(shape), f"{opr.name}:scale")],
            out_var.name, np.float32,
        )
        self.bind(out_var, self.emit("Add", [scaled, self.constant(shift.astype(np.float32).reshape(shape), f"{opr.name}:shift")], out_var.name, np.float32))

    # ----------------------------------------------------------------- elementwise

    def op_Elemwise(self, opr, params):
        mode = params.get("mode")
        out_var = opr.outputs[0]
        inputs = list(opr.inputs)
        out_dtype = _var_dtype(out_var)
        if all(self.is_const(v) for v in inputs) and mode in _NUMPY_ELEMWISE:
            value = _NUMPY_ELEMWISE[mode](*(self.consts[v.id] for v in inputs))
            self.consts[out_var.id] = np.asarray(value).astype(out_dtype or np.float32)
            return
        if mode == "ADD" and self._try_fold_bias(inputs, out_var):
            return
        names = lambda: [self.name_of(v) for v in inputs]  # noqa: E731 - deferred so folding can skip constants
        hint = out_var.name
        if mode in _UNARY_ONNX:
            result = self.emit(_UNARY_ONNX[mode], names(), hint, out_dtype)
        elif mode in _BINARY_ONNX:
            result = self.emit(_BINARY_ONNX[mode], names(), hint, out_dtype)
        elif mode == "FLOOR_DIV" and out_dtype is not None and out_dtype.kind == "f":
            result = self.emit("Floor", [self.emit("Div", names(), hint, out_dtype)], hint, out_dtype)
        elif mode == "SILU":
            (x,) = names()
            result = self.emit("Mul", [x, self.emit("Sigmoid", [x], hint, out_dtype)], hint, out_dtype)
        elif mode in ("FUSE_ADD_RELU", "FUSE_ADD_SIGMOID", "FUSE_ADD_TANH", "FUSE_ADD_H_SWISH"):
            activation = {"FUSE_ADD_RELU": "Relu", "FUSE_ADD_SIGMOID": "Sigmoid", "FUSE_ADD_TANH": "Tanh", "FUSE_ADD_H_SWISH": "HardSwish"}[mode]
            if mode == "FUSE_ADD_RELU" and self._try_fold_bias(inputs, out_var, then_relu=True):
                return
            result = self.emit(activation, [self.emit("Add", names(), hint, out_dtype)], hint, out_dtype)
        elif mode == "FUSE_MUL_ADD3":
            a, b, c = names()
            result = self.emit("Add", [self.emit("Mul", [a, b], hint, out_dtype), c], hint, out_dtype)
        elif mode == "FUSE_MUL_ADD4":
            a, b, c, d = names()
            left = self.emit("Mul", [a, b], hint, out_dtype)
            result = self.emit("Add", [left, self.emit("Mul", [c, d], hint, out_dtype)], hint, out_dtype)
        else:
            raise UnsupportedOperatorError(
                f"cannot export to ONNX: MegEngine operator Elemwise mode {mode} is not supported by the converter; "
                "use the megengine or mge-lite backend (or --format mge)"
            )
        self.bind(out_var, result)

    def _try_fold_bias(self, inputs, out_var, then_relu: bool = False) -> bool:
        """ADD(conv_output, per-channel constant) -> the conv's bias."""
        if len(inputs) != 2:
            return False
        for data, other in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
            if data.id in self.foldable and self.is_const(other):
                value = self.consts[other.id]
                if value.ndim > 4:
                    return False
                # Aligned to N x C x H x W by broadcasting, only the channel axis may exceed 1.
                aligned = (1,) * (4 - value.ndim) + tuple(value.shape)
                if aligned[0] != 1 or aligned[2] != 1 or aligned[3] != 1:
                    return False
                if then_relu:
                    # Fold the add, then apply the relu to the conv output.
                    conv = self.foldable[data.id]
                    if not self._fold_channel_affine(data, out_var, None, value):
                        return False
                    self.foldable.pop(out_var.id, None)
                    result = self.emit("Relu", [conv.node.outputs[0]], out_var.name, np.float32)
                    self.bind(out_var, result)
                    return True
                return self._fold_channel_affine(data, out_var, None, value)
        return False

    def op_TypeCvt(self, opr, params):
        out_var = opr.outputs[0]
        dtype = _var_dtype(out_var)
        if self.is_const(opr.inputs[0]):
            self.consts[out_var.id] = self.consts[opr.inputs[0].id].astype(dtype)
            return
        self.bind(out_var, self.emit("Cast", [self.name_of(opr.inputs[0])], out_var.name, dtype, to=_onnx_dtype(dtype)))

    # ----------------------------------------------------------------- pooling and resizing

    def op_PoolingForward(self, opr, params):
        self._check_nchw(opr, params)
        attrs = {
            "kernel_shape": [int(params["window_h"]), int(params["window_w"])],
            "strides": [int(params.get("stride_h", 1)), int(params.get("stride_w", 1))],
            "pads": [int(params.get("pad_h", 0)), int(params.get("pad_w", 0))] * 2,
        }
        mode = params.get("mode", "MAX")
        if mode == "MAX":
            op_type = "MaxPool"
        elif mode in ("AVERAGE", "AVERAGE_COUNT_EXCLUDE_PADDING"):
            op_type = "AveragePool"
            attrs["count_include_pad"] = 1 if mode == "AVERAGE" else 0
        else:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Pooling mode {mode} is not supported")
        out_var = opr.outputs[0]
        self.bind(out_var, self.emit(op_type, [self.name_of(opr.inputs[0])], out_var.name, np.float32, **attrs))

    def op_ResizeForward(self, opr, params):
        self._check_nchw(opr, params)
        mode = params.get("imode", "LINEAR")
        # MegEngine's LINEAR resize samples at (dst + 0.5) * in/out - 0.5 and clamps at the
        # border (align_corners=False); NEAREST takes floor(dst * in/out).
        if mode == "LINEAR":
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        elif mode == "NEAREST":
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Resize interpolation mode {mode} is not supported")
        data_var, size_var, out_var = opr.inputs[0], opr.inputs[1], opr.outputs[0]
        data = self.name_of(data_var)
        batch_channels = self.emit(
            "Slice",
            [self.emit("Shape", [data], out_var.name, np.int64),
             self.constant(np.array([0], np.int64), "zero"), self.constant(np.array([2], np.int64), "two")],
            out_var.name, np.int64,
        )
        if self.is_const(size_var):
            # Float sizes come from `scale_factor` arithmetic: MegEngine truncates them.
            hw = self.constant(np.floor(self.consts[size_var.id]).astype(np.int64).reshape(-1), f"{size_var.name}:hw")
        else:
            hw = self.int64_of(size_var)
        sizes = self.emit("Concat", [batch_channels, hw], out_var.name, np.int64, axis=0)
        self.bind(out_var, self.emit("Resize", [data, "", "", sizes], out_var.name, np.float32, **attrs))

    # ----------------------------------------------------------------- shapes and layout

    def op_GetVarShape(self, opr, params):
        out_var = opr.outputs[0]
        axis = int(params.get("axis", _NO_AXIS))
        if all(self.is_const(v) for v in opr.inputs):
            shape = np.broadcast_shapes(*(self.consts[v.id].shape for v in opr.inputs))
            value = np.asarray(shape, dtype=np.int32)
            self.consts[out_var.id] = value[axis : axis + 1] if axis != _NO_AXIS else value
            return
        shapes = [self.emit("Shape", [self.name_of(v)], out_var.name, np.int64) for v in opr.inputs]
        if len(shapes) > 1:
            # Several inputs: the shape of their broadcast. Only same-rank inputs, where it
            # is the element-wise maximum (every dim is 1 or the common size).
            ranks = {len(v.shape) for v in opr.inputs}
            if len(ranks) != 1:
                raise UnsupportedOperatorError("cannot export to ONNX: GetVarShape of inputs with different ranks")
            shape = self.emit("Max", shapes, out_var.name, np.int64)
        else:
            shape = shapes[0]
        if axis != _NO_AXIS:
            shape = self.emit("Slice", [shape, self.constant(np.array([axis], np.int64), "axis"),
                                        self.constant(np.array([axis + 1], np.int64), "axis_end")], out_var.name, np.int64)
        dtype = _var_dtype(out_var) or np.dtype(np.int32)
        self.bind(out_var, self.emit("Cast", [shape], out_var.name, dtype, to=_onnx_dtype(dtype)))

    def op_Subtensor(self, opr, params):
        items = params if isinstance(params, list) else params.get("items", [])
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        index_vars = list(opr.inputs[1:])
        rank = len(data_var.shape)
        starts, ends, axes, steps, gathers = [], [], [], [], []
        for item in items:
            axis = int(item["axis"])
            begin = index_vars.pop(0) if item.get("begin") else None
            end = index_vars.pop(0) if item.get("end") else None
            step = index_vars.pop(0) if item.get("step") else None
            index = index_vars.pop(0) if item.get("idx") else None
            if index is not None:
                gathers.append((axis, index))
                continue
            negative_step = step is not None and self.is_const(step) and int(self.consts[step.id].reshape(-1)[0]) < 0
            if step is not None and not self.is_const(step):
                raise UnsupportedOperatorError("cannot export to ONNX: Subtensor with a computed step")
            axes.append(axis)
            starts.append(self.int64_of(begin) if begin is not None else
                          self.constant(np.array([_INT64_MAX if negative_step else 0], np.int64), "start"))
            ends.append(self.int64_of(end) if end is not None else
                        self.constant(np.array([-_INT64_MAX if negative_step else _INT64_MAX], np.int64), "end"))
            steps.append(self.int64_of(step) if step is not None else self.constant(np.array([1], np.int64), "step"))
        result = self.name_of(data_var)
        hint = out_var.name
        if axes:
            concat = lambda parts: parts[0] if len(parts) == 1 else self.emit("Concat", parts, hint, np.int64, axis=0)  # noqa: E731
            result = self.emit(
                "Slice",
                [result, concat(starts), concat(ends), self.constant(np.array(axes, np.int64), "axes"), concat(steps)],
                hint, _var_dtype(out_var),
            )
        # Integer indices drop their axis; do the highest axis first so lower ones keep their number.
        for axis, index in sorted(gathers, key=lambda g: -g[0]):
            gathered = self.emit("Gather", [result, self.int64_of(index)], hint, _var_dtype(out_var), axis=axis)
            result = self.emit("Squeeze", [gathered, self.constant(np.array([axis], np.int64), "axis")], hint, _var_dtype(out_var))
            rank -= 1
        if rank == 0 and len(out_var.shape) == 1:
            # MegEngine has no 0-d graph tensors: a scalar is shape (1,).
            result = self.emit("Reshape", [result, self.constant(np.array([1], np.int64), "one")], hint, _var_dtype(out_var))
        self.bind(out_var, result)

    def op_Concat(self, opr, params):
        out_var = opr.outputs[0]
        axis = int(params.get("axis", 0))
        if all(self.is_const(v) for v in opr.inputs):
            self.consts[out_var.id] = np.concatenate([self.consts[v.id] for v in opr.inputs], axis=axis)
            return
        self.bind(out_var, self.emit("Concat", [self.name_of(v) for v in opr.inputs], out_var.name, _var_dtype(out_var), axis=axis))

    def op_Reshape(self, opr, params):
        data_var, shape_var, out_var = opr.inputs[0], opr.inputs[1], opr.outputs[0]
        unspec = int(params.get("axis", _NO_AXIS))
        rank = len(out_var.shape)
        if self.is_const(shape_var):
            target = self.consts[shape_var.id].astype(np.int64).reshape(-1).copy()
            if 0 <= unspec < target.size:
                target[unspec] = -1
            if self.is_const(data_var):
                self.consts[out_var.id] = self.consts[data_var.id].reshape(target)
                return
            shape = self.constant(target, f"{out_var.name}:shape")
        else:
            shape = self.int64_of(shape_var)
            if 0 <= unspec < rank:
                # target * (1 - onehot) - onehot puts -1 at the axis MegEngine infers.
                onehot = np.zeros(rank, np.int64)
                onehot[unspec] = 1
                kept = self.emit("Mul", [shape, self.constant(1 - onehot, "keep")], out_var.name, np.int64)
                shape = self.emit("Sub", [kept, self.constant(onehot, "onehot")], out_var.name, np.int64)
        self.bind(out_var, self.emit("Reshape", [self.name_of(data_var), shape], out_var.name, _var_dtype(out_var)))

    def op_Dimshuffle(self, opr, params):
        pattern = [int(p) for p in params["pattern"]]
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        permutation = [p for p in pattern if p >= 0]
        if sorted(permutation) != list(range(len(data_var.shape))):
            raise UnsupportedOperatorError(f"cannot export to ONNX: Dimshuffle pattern {pattern} drops axes")
        if self.is_const(data_var):
            value = np.transpose(self.consts[data_var.id], permutation)
            self.consts[out_var.id] = np.expand_dims(value, [i for i, p in enumerate(pattern) if p < 0]) if -1 in pattern else value
            return
        result = self.name_of(data_var)
        if permutation != sorted(permutation):
            result = self.emit("Transpose", [result], out_var.name, _var_dtype(out_var), perm=permutation)
        new_axes = [i for i, p in enumerate(pattern) if p < 0]
        if new_axes:
            result = self.emit("Unsqueeze", [result, self.constant(np.array(new_axes, np.int64), "axes")], out_var.name, _var_dtype(out_var))
        self.bind(out_var, result)

    def op_AxisAddRemove(self, opr, params):
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        steps = [(int(d["axisnum"]), int(d["method"])) for d in params["desc"]]
        if self.is_const(data_var):
            value = self.consts[data_var.id]
            for axis, method in steps:
                value = np.expand_dims(value, axis) if method == 0 else np.squeeze(value, axis)
            self.consts[out_var.id] = value
            return
        result = self.name_of(data_var)
        for axis, method in steps:  # applied one after the other, as MegEngine does
            op_type = "Unsqueeze" if method == 0 else "Squeeze"
            result = self.emit(op_type, [result, self.constant(np.array([axis], np.int64), "axis")], out_var.name, _var_dtype(out_var))
        self.bind(out_var, result)

    def op_Broadcast(self, opr, params):
        out_var = opr.outputs[0]
        shape = self.int64_of(opr.inputs[1])
        self.bind(out_var, self.emit("Expand", [self.name_of(opr.inputs[0]), shape], out_var.name, _var_dtype(out_var)))

    def op_Reduce(self, opr, params):
        mode = params.get("mode", "SUM")
        axis = int(params.get("axis", _NO_AXIS))
        out_var = opr.outputs[0]
        if len(opr.inputs) != 1 or axis == _NO_AXIS:
            raise UnsupportedOperatorError("cannot export to ONNX: Reduce to a target shape (without an axis)")
        op_types = {"SUM": "ReduceSum", "MEAN": "ReduceMean", "MAX": "ReduceMax", "MIN": "ReduceMin",
                    "PRODUCT": "ReduceProd", "SUM_SQR": "ReduceSumSquare"}
        if mode not in op_types:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Reduce mode {mode} is not supported")
        data = self.name_of(opr.inputs[0])
        if op_types[mode] == "ReduceSum":  # since opset 13, ReduceSum takes its axes as an input
            result = self.emit("ReduceSum", [data, self.constant(np.array([axis], np.int64), "axes")], out_var.name, _var_dtype(out_var), keepdims=1)
        else:
            result = self.emit(op_types[mode], [data], out_var.name, _var_dtype(out_var), axes=[axis], keepdims=1)
        self.bind(out_var, result)

    def op_PaddingForward(self, opr, params):
        data_var, out_var = opr.inputs[0], opr.outputs[0]
        in_shape, out_shape = tuple(data_var.shape), tuple(out_var.shape)
        ndim = len(in_shape)
        param = self._hidden_param(opr, lambda p: all(
            int(p.get(f"front_offset_dim{i}", 0)) + in_shape[i] + int(p.get(f"back_offset_dim{i}", 0)) == out_shape[i]
            for i in range(ndim)
        ))
        modes = {"CONSTANT": "constant", "REFLECT": "reflect", "REPLICATE": "edge"}
        mode = str(param.get("padding_mode", "CONSTANT"))
        if mode not in modes:
            raise UnsupportedOperatorError(f"cannot export to ONNX: Padding mode {mode} is not supported")
        pads = [int(param.get(f"front_offset_dim{i}", 0)) for i in range(ndim)]
        pads += [int(param.get(f"back_offset_dim{i}", 0)) for i in range(ndim)]
        dtype = _var_dtype(out_var) or np.dtype(np.float32)
        inputs = [self.name_of(data_var), self.constant(np.array(pads, np.int64), "pads")]
        if modes[mode] == "constant":
            inputs.append(self.constant(np.array(param.get("padding_val", 0.0), dtype), "pad_value"))
        self.bind(out_var, self.emit("Pad", inputs, out_var.name, dtype, mode=modes[mode]))

    def _hidden_param(self, opr, fits: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any]:
        """The traced parameters of `opr`: the first unused ones, in trace order, that fit its shapes.

        A wrong pairing cannot pass unnoticed: exported graphs are compared with MegEngine.
        """
        recorded = self.hidden_params.get(opr.type, [])
        for index, param in enumerate(recorded):
            if fits(param):
                return recorded.pop(index)
        raise UnsupportedOperatorError(
            f"cannot export to ONNX: the parameters of {opr.type} ('{opr.name}') are not readable from a dumped "
            "graph; export the network itself (mspn export, export_onnx) rather than a .mge file"
        )


def _params(opr) -> Any:
    text = (opr.params or "").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


__all__ = [
    "EXPORTER_VERSION",
    "InputSpec",
    "default_input_spec",
    "input_spec_for_batch",
    "ExportError",
    "MGE_CPU_DUMP_OPTIONS",
    "ONNX_OPSET",
    "TracedGraph",
    "UnsupportedOperatorError",
    "convert_mge_graph",
    "export_mge",
    "export_mge_bytes",
    "export_onnx",
    "export_onnx_model",
    "flatten_outputs",
    "relative_error",
    "trace_and_dump",
    "verify_onnx",
]
