"""The shipped graph templates against the exporter (Python 3.10, MegEngine): same graph, same bytes.

For each network: the exporter traces the network holding the seeded test weights and
converts it as first use does; the shipped template, filled from the same weight file
with numpy alone, must give the same serialized bytes. Regenerating the template from
that export must give the shipped files, so the shipped structure cannot drift from the
exporter. The test weights are not the generator's, so a weight-derived initializer
kept as a literal in a template fails here.
"""

from __future__ import annotations

import pytest

from mspn_cli.export.graph_template import fill_template, load_template, recipes_to_json

pytestmark = pytest.mark.megengine  # every test here runs the exporter, which traces with MegEngine


def _export(config, weights):
    """(exporter's bytes, converted without recording recipes; bytes with recipes; template from it)."""
    from mspn_cli.export.onnx import convert_mge_graph
    from mspn_cli.export.templates import export_with_recipes
    from mspn_cli.export.trace import trace_and_dump
    from mspn_cli.runtime.network import input_spec_of, load_network

    model, _, _ = load_network(config.model.name, config.weights, str(weights), progress=False)
    with_recipes, template = export_with_recipes(model, config)
    # The plain first-use conversion (no recipes recorded) of a fresh trace: the same graph.
    spec = input_spec_of(config)
    traced = trace_and_dump(model, spec.example(), input_name="images", optimize=False)
    plain = convert_mge_graph(
        traced.data, input_name="images", output_names=traced.output_names, input_shape=spec.shape,
        dynamic_axes={"images": spec.axes_dict()}, hidden_params=traced.hidden_params, check=False,
    ).SerializeToString()
    return plain, with_recipes, template


@pytest.fixture(scope="module", params=["pose", "detector"])
def network(request, mspn_weights, detector_weights):
    from mspn_cli.config import load_detector_config, load_pose_config

    if request.param == "pose":
        config, weights = load_pose_config(), mspn_weights
    else:
        config, weights = load_detector_config(), detector_weights
    return config, weights, _export(config, weights)


def test_filled_template_has_the_exporters_bytes(network):
    from mspn_cli.weights import load_checkpoint

    config, weights, (plain, with_recipes, _) = network
    assert plain == with_recipes  # recording recipes does not change the graph
    shipped = load_template(config.model.name)
    assert shipped is not None, "no shipped template: run python -m mspn_cli.export.templates --write"
    filled = fill_template(shipped, load_checkpoint(weights), str(weights))
    assert len(filled) == len(plain)
    assert filled == plain


def test_shipped_template_is_the_exporters_current_one(network):
    config, _, (_, _, regenerated) = network
    shipped = load_template(config.model.name)
    assert shipped is not None
    assert regenerated.graph == shipped.graph, "run python -m mspn_cli.export.templates --write"
    assert recipes_to_json(regenerated) == recipes_to_json(shipped), "run python -m mspn_cli.export.templates --write"


# --------------------------------------------------------------------------- mspn export --format onnx


@pytest.mark.parametrize("model, weights_fixture, options", [
    ("mspn_4stage", "mspn_weights", []),
    ("retinanet_res50_coco_3x_800size", "detector_weights", ["--batch", "2", "--input-size", "128,160"]),
])
def test_cli_export_onnx_without_megengine_has_the_exporters_bytes(tmp_path, request, cli_export, model, weights_fixture, options):
    """Without MegEngine, `mspn export --format onnx` fills the template: the exporter's bytes
    (with MegEngine and --verify, the exporter runs and checks the graph against MegEngine)."""
    from tests.conftest import run_mspn
    from tests.tripwire import megengine_hidden_env

    weights = request.getfixturevalue(weights_fixture)
    filled = tmp_path / "template.onnx"
    exported, proc = cli_export(model, weights, *options)
    assert "matches MegEngine" in proc.stderr
    proc = run_mspn("export", model, "--format", "onnx", "--weights", weights, "-o", filled, *options,
                    env=megengine_hidden_env(MSPN_HOME=str(tmp_path / "no-megengine" / "home")))
    assert proc.returncode == 0, proc.stderr
    assert "from the packaged graph template" in proc.stderr and "not run against MegEngine" in proc.stderr
    assert filled.read_bytes() == exported.read_bytes()
