"""Writing the graph templates shipped in the package (needs MegEngine; Python 3.10).

    python -m mspn_cli.export.templates --write    # regenerate src/mspn_cli/graphs/*
    python -m mspn_cli.export.templates            # check that the shipped ones are current

Each packaged network config (MSPN, RetinaNet) is built with seeded random weights in
which every tensor is distinct, traced and converted by the exporter exactly as first
use would (`export_onnx_model` with the config's input spec), while the converter
records where each initializer comes from: a constant equal to a network tensor is that
state-dict key, everything computed from it is a recipe. The graph without those
initializers and the recipes are the template (see graph_template.py). The values of
the random weights never reach the template; only which constant is which key does.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from mspn_cli.export.graph_template import GraphTemplate, load_template, recipes_to_json, write_template

# Not the seeds of the test fixtures: a template that kept a weight-derived value as a
# literal would then fail the parity tests, which fill it with other weights.
GENERATOR_SEED = 20260919


def packaged_configs():
    from mspn_cli.config import load_detector_config, load_pose_config

    return [load_pose_config(), load_detector_config()]


def template_key_fields(config) -> Dict[str, Any]:
    """The graph-cache key fields of `config`'s ONNX graph, except the weights."""
    from mspn_cli.export.cache import graph_key_fields
    from mspn_cli.runtime.network import graph_key_extra, input_spec_of  # config -> spec: no backend involved

    fields = graph_key_fields("onnx", input_spec_of(config), "", graph_key_extra(config))
    fields.pop("weights")
    return fields


def distinct_random_state(model, seed: int = GENERATOR_SEED) -> "OrderedDict[str, np.ndarray]":
    """A state dict for `model` in which no two tensors are equal (batch-norm variances positive)."""
    from mspn_cli.weights.loading import expected_tensors

    rng = np.random.default_rng(seed)
    state: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, spec in expected_tensors(model).items():
        if key.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, size=spec.shape)
        else:
            values = rng.normal(0.0, 0.1, size=spec.shape)
        state[key] = values.astype(spec.dtype)
    return state


def network_tensors(model) -> "OrderedDict[str, np.ndarray]":
    """Every tensor the network holds, by state-dict key, as the trace captures it."""
    tensors: "OrderedDict[str, Any]" = OrderedDict(model.named_parameters())
    tensors.update(model.named_buffers())
    return OrderedDict((key, np.asarray(tensor.numpy())) for key, tensor in tensors.items())


def export_with_recipes(model, config) -> Tuple[bytes, GraphTemplate]:
    """The exporter's ONNX graph of `model` (holding distinct weights) for `config`, and its template."""
    from mspn_cli.export.onnx import export_onnx_model
    from mspn_cli.runtime.network import input_spec_of
    from mspn_cli.weights.loading import expected_tensors

    spec = input_spec_of(config)
    tensors = network_tensors(model)
    recipes: Dict[str, Any] = {}
    # The same call as the graph cache's first-use export (export.cache.exported_graph).
    proto, _ = export_onnx_model(
        model, spec.example(), dynamic_axes={"images": spec.axes_dict()}, input_name="images", check=False,
        weight_sources=tensors, recipes_out=recipes,
    )
    exported = proto.SerializeToString()
    initializers = []
    for tensor in proto.graph.initializer:
        if tensor.name in recipes:
            initializers.append((tensor.name, recipes[tensor.name]))
            tensor.ClearField("raw_data")
    model_shapes = {key: tuple(value.shape) for key, value in tensors.items()}
    template = GraphTemplate(
        model=config.model.name,
        network=getattr(model, "name", None) or type(model).__name__,  # as strict loading names it
        key_fields=template_key_fields(config),
        graph=proto.SerializeToString(),
        expected=dict(expected_tensors(model)),
        model_shapes=model_shapes,
        initializers=initializers,
    )
    return exported, template


def build_template(config) -> GraphTemplate:
    """`config`'s template, from the exporter on a network with distinct random weights."""
    from mspn_cli.models import build_model
    from mspn_cli.weights.loading import load_weights_into

    model = build_model(config.model.name)
    load_weights_into(model, distinct_random_state(model), "generated weights")
    return export_with_recipes(model, config)[1]


def same_template(a: GraphTemplate, b: Optional[GraphTemplate]) -> bool:
    return b is not None and a.graph == b.graph and recipes_to_json(a) == recipes_to_json(b)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in args
    folder = Path(args[args.index("--folder") + 1]) if "--folder" in args else None
    stale = 0
    for config in packaged_configs():
        template = build_template(config)
        if write:
            paths = write_template(template, folder)
            print(f"{config.model.name}: wrote " + ", ".join(f"{p} ({p.stat().st_size / 1e3:.0f} kB)" for p in paths))
        elif same_template(template, load_template(config.model.name, folder)):
            print(f"{config.model.name}: the shipped template is current")
        else:
            stale += 1
            print(f"{config.model.name}: the shipped template differs from the exporter's graph; run with --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
