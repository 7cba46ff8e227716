"""Graph templates: the exporter's ONNX graphs without their weights, filled from a weight file.

A template is two files in the package (`mspn_cli/graphs/`), written by
`python -m mspn_cli.export.templates --write` from the exporter's own conversion of the
traced MegEngine graph:

  <model>.onnx-template   the ONNX graph with every initializer computed from the
                          weights left empty (nodes, attributes, shapes, dynamic axes and
                          the constants that do not depend on the weights are all there)
  <model>.recipes.json    for each empty initializer, its recipe (export/onnx/recipes.py):
                          which state-dict keys, and which of the converter's numpy
                          functions with which parameters; plus every key the weight
                          file must hold (shape, dtype, tolerated legacy layout)

`fill_template` replays the recipes with the converter's own functions on a weight file
read by the restricted unpickler: numpy and onnx only, no MegEngine. Tests on Python 3.10
check that the filled graph has the same bytes as a fresh export through MegEngine.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from mspn_cli.errors import ExportError
from mspn_cli.export.onnx.common import EXPORTER_VERSION, onnx_dtype
from mspn_cli.export.onnx.recipes import Recipe, evaluate_all
from mspn_cli.weights.loading import ExpectedTensor, fit_state_dict

TEMPLATE_FORMAT = 1
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "graphs"
GRAPH_SUFFIX = ".onnx-template"
RECIPES_SUFFIX = ".recipes.json"


@dataclass
class GraphTemplate:
    """A network's ONNX graph without its weights, and how to compute them."""

    model: str  # the config's model name (the file name)
    network: str  # the name weight-file messages use
    key_fields: Dict[str, Any]  # graph-cache key fields except the weights (input spec, config, exporter)
    graph: bytes  # the serialized ModelProto with the weight-derived initializers empty
    expected: Dict[str, ExpectedTensor]  # every key of the weight file, in the network's order
    model_shapes: Dict[str, Tuple[int, ...]]  # the shape the network holds each tensor in
    initializers: List[Tuple[str, Recipe]]  # (initializer name, recipe), in graph order

    def fits(self, key_fields: Mapping[str, Any]) -> bool:
        """Whether this template is the graph for these cache-key fields (any weights)."""
        return _jsonable({k: v for k, v in key_fields.items() if k != "weights"}) == _jsonable(self.key_fields)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def template_paths(model: str, folder: Optional[Path] = None) -> Tuple[Path, Path]:
    folder = Path(folder) if folder is not None else TEMPLATES_DIR
    return folder / f"{model}{GRAPH_SUFFIX}", folder / f"{model}{RECIPES_SUFFIX}"


# --------------------------------------------------------------------------- (de)serialising


def recipes_to_json(template: GraphTemplate) -> Dict[str, Any]:
    """The recipe file's content: nodes listed once each, arguments by index."""
    nodes: List[list] = []
    index: Dict[int, int] = {}

    def visit(recipe: Optional[Recipe]) -> Optional[int]:
        if recipe is None:
            return None
        if id(recipe) in index:
            return index[id(recipe)]
        args = [visit(arg) for arg in recipe.args]
        params = dict(recipe.params)
        if recipe.op == "literal":
            value = np.ascontiguousarray(recipe.value)
            params = {"dtype": value.dtype.str, "shape": list(value.shape), "data": base64.b64encode(value.tobytes()).decode()}
        nodes.append([recipe.op, args, params])
        index[id(recipe)] = len(nodes) - 1
        return index[id(recipe)]

    initializers = [[name, visit(recipe)] for name, recipe in template.initializers]
    weights = [
        [key, list(spec.shape), list(template.model_shapes[key]), spec.dtype.str, spec.layout]
        for key, spec in template.expected.items()
    ]
    return {
        "format": TEMPLATE_FORMAT,
        "exporter": EXPORTER_VERSION,
        "model": template.model,
        "network": template.network,
        "key_fields": _jsonable(template.key_fields),
        "weights": weights,
        "nodes": nodes,
        "initializers": initializers,
    }


def _recipes_from_json(record: Mapping[str, Any]) -> List[Tuple[str, Recipe]]:
    built: List[Recipe] = []
    for op, args, params in record["nodes"]:
        if op == "literal":
            data = np.frombuffer(base64.b64decode(params["data"]), dtype=np.dtype(params["dtype"]))
            built.append(Recipe.literal(data.reshape(params["shape"])))
        else:
            built.append(Recipe(op, tuple(built[a] if a is not None else None for a in args), params))
    return [(name, built[node]) for name, node in record["initializers"]]


def write_template(template: GraphTemplate, folder: Optional[Path] = None) -> Tuple[Path, Path]:
    from mspn_cli.io.writers import write_bytes_atomic

    graph_path, recipes_path = template_paths(template.model, folder)
    graph_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(graph_path, template.graph)
    text = json.dumps(recipes_to_json(template), separators=(",", ":"), sort_keys=True)
    write_bytes_atomic(recipes_path, (text + "\n").encode())
    return graph_path, recipes_path


def load_template(model: str, folder: Optional[Path] = None) -> Optional[GraphTemplate]:
    """The shipped template of `model`, or None when there is none for this exporter version."""
    graph_path, recipes_path = template_paths(model, folder)
    try:
        record = json.loads(recipes_path.read_text())
        graph = graph_path.read_bytes()
    except (OSError, ValueError):
        return None
    if record.get("format") != TEMPLATE_FORMAT or record.get("exporter") != EXPORTER_VERSION:
        return None
    expected: Dict[str, ExpectedTensor] = {}
    model_shapes: Dict[str, Tuple[int, ...]] = {}
    for key, shape, model_shape, dtype, layout in record["weights"]:
        expected[key] = ExpectedTensor(tuple(shape), np.dtype(dtype), layout)
        model_shapes[key] = tuple(model_shape)
    return GraphTemplate(
        record["model"], record["network"], record["key_fields"], graph, expected, model_shapes, _recipes_from_json(record)
    )


# --------------------------------------------------------------------------- filling


def fill_template(template: GraphTemplate, state: Mapping[str, np.ndarray], source: str) -> bytes:
    """The serialized ONNX graph with `state`'s weights: the exporter's bytes for these weights.

    `state` as `weights.load_checkpoint` returns it; a missing or extra key or a wrong
    shape raises the WeightsError strict loading raises (exit 4, one line).
    """
    import onnx
    from onnx import numpy_helper

    fitted = fit_state_dict(state, template.expected, source, template.network)

    def leaf(key: str) -> np.ndarray:  # the tensor as the network holds it, which the trace captured
        return np.ascontiguousarray(fitted[key]).reshape(template.model_shapes[key])

    proto = onnx.ModelProto()
    proto.ParseFromString(template.graph)
    slots = {tensor.name: tensor for tensor in proto.graph.initializer}
    names = [name for name, _ in template.initializers]
    values = evaluate_all([recipe for _, recipe in template.initializers], leaf)
    for name, value in zip(names, values):
        slot = slots.get(name)
        value = np.ascontiguousarray(value)
        if slot is None or tuple(slot.dims) != value.shape or slot.data_type != onnx_dtype(value.dtype):
            raise ExportError(f"graph template of {template.model} is inconsistent at initializer '{name}'; reinstall mspn-cli")
        slot.CopyFrom(numpy_helper.from_array(value, name))
    return proto.SerializeToString()


def graph_from_template(model: str, key_fields: Mapping[str, Any], weights_path, cache) -> Optional[Path]:
    """The ONNX graph for `key_fields` in `cache` (a GraphCache), filled from the packaged
    template if no sealed one is there; None when no template fits (another config or
    input spec). Never imports MegEngine. A created graph is sealed with source "template".
    """
    from mspn_cli.export.cache import FORMAT_SUFFIXES
    from mspn_cli.weights.unpickle import load_checkpoint

    template = load_template(model)
    if template is None or not template.fits(key_fields):
        return None

    def produce() -> bytes:
        return fill_template(template, load_checkpoint(weights_path), str(weights_path))

    notice = f"building {model}'s ONNX graph from its weights (once; {cache.describe()})"
    path, created = cache.get_or_create(model, key_fields, FORMAT_SUFFIXES["onnx"], produce, notice=notice)
    if created:
        cache.seal(path, verified=False, source="template")
    return path


def respecified_graph(data: bytes, output_names, input_shape, input_axes: Mapping[int, str]) -> bytes:
    """A filled template graph with other output names and another example input shape.

    What `mspn export` changes against first use's graph: the converter names outputs
    and their dims after `output_names`, and writes the traced size of every axis that
    is not variable. Only axes the template already keeps variable may take a size (the
    graph did not depend on them); axis 0 (the batch) is the only one an output keeps.
    `export_cmd` falls back to the exporter where this does not hold.
    """
    import onnx

    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    (graph_input,) = proto.graph.input
    template_axes = {i for i, dim in enumerate(graph_input.type.tensor_type.shape.dim) if dim.HasField("dim_param")}
    if not set(input_axes) <= template_axes or len(input_shape) != len(graph_input.type.tensor_type.shape.dim):
        raise ExportError("the graph template does not have these variable axes")
    for axis, dim in enumerate(graph_input.type.tensor_type.shape.dim):
        if axis in input_axes:
            dim.dim_param = input_axes[axis]
        elif axis in template_axes:
            dim.dim_value = int(input_shape[axis])
    if len(output_names) != len(proto.graph.output):
        raise ExportError(f"{len(output_names)} output names for a graph with {len(proto.graph.output)} outputs")
    renames = {output.name: name for output, name in zip(proto.graph.output, output_names)}
    for node in proto.graph.node:
        for field in (node.input, node.output):
            for index, name in enumerate(field):
                if name in renames:
                    field[index] = renames[name]
    for output, name in zip(proto.graph.output, output_names):
        output.name = name
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            if axis in input_axes:  # the converter's rule for outputs (Converter._output_dims)
                dim.dim_param = input_axes[axis] if axis == 0 else f"{name}_dim{axis}"
            elif dim.HasField("dim_param"):
                if axis != 0:
                    raise ExportError("the graph template cannot give this output axis a fixed size")
                dim.dim_value = int(input_shape[0])
    return proto.SerializeToString()
