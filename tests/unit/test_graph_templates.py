"""Graph templates without MegEngine: the folding arithmetic, recipes, fitting weight files, sealing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mspn_cli.config import load_detector_config, load_pose_config
from mspn_cli.errors import WeightsError
from mspn_cli.export.cache import GraphCache, graph_key_fields
from mspn_cli.export.graph_template import fill_template, load_template, recipes_to_json
from mspn_cli.export.onnx.recipes import Recipe, Tracked, apply, evaluate_all
from mspn_cli.runtime.network import graph_key_extra, input_spec_of

DETECTOR = "retinanet_res50_coco_3x_800size"


def test_batch_norm_fold_is_the_inference_formula():
    """conv then BN(gamma, beta, mean, var, eps) == conv with w * s and (b - mean) * s + beta, s = gamma / sqrt(var + eps)."""
    weight = np.array([[[[1.0]], [[2.0]]], [[[3.0]], [[-4.0]]]], np.float32)  # (2 out, 2 in, 1, 1)
    bias = np.array([0.5, -1.0], np.float32)
    gamma, beta = np.array([2.0, 0.5]), np.array([1.0, 0.0])
    mean, var, eps = np.array([0.25, -2.0]), np.array([3.0, 0.0]), 1.0
    scale = apply("bn_scale", Tracked(gamma), Tracked(var), epsilon=eps).value
    shift = apply("bn_shift", Tracked(beta), Tracked(mean), Tracked(scale)).value
    np.testing.assert_array_equal(scale, [1.0, 0.5])  # 2 / sqrt(4), 0.5 / sqrt(1)
    folded_w = apply("fold_scale_into_weight", Tracked(weight), Tracked(scale), channels=2, groups=1, transposed=False).value
    folded_b = apply("fold_affine_into_bias", Tracked(bias), Tracked(scale), Tracked(shift), channels=2).value
    np.testing.assert_array_equal(folded_w.reshape(2, 2), [[1.0, 2.0], [1.5, -2.0]])
    np.testing.assert_array_equal(folded_b, [(0.5 - 0.25) * 1.0 + 1.0, (-1.0 + 2.0) * 0.5 + 0.0])
    assert folded_w.dtype == folded_b.dtype == np.float32


def test_transposed_fold_scales_output_channels_per_group():
    weight = np.ones((4, 1, 1, 1), np.float32)  # deconv, 2 groups: (IC=4, OC/G=1): output channel g is group g's rows
    folded = apply("fold_scale_into_weight", Tracked(weight), Tracked(np.array([2.0, 3.0])), channels=2, groups=2, transposed=True)
    np.testing.assert_array_equal(folded.value.reshape(-1), [2.0, 2.0, 3.0, 3.0])


def test_recipes_record_only_what_comes_from_the_weights_and_replay_it():
    weight = Tracked(np.array([1.0, 4.0], np.float32), Recipe.weight("layer.weight"))
    literal = Tracked(np.array([0.5, 0.5], np.float32))
    assert apply("elemwise", literal, literal, mode="ADD", dtype="float32").recipe is None
    doubled = apply("elemwise", weight, literal, mode="MUL", dtype="float32")
    shared = apply("flat_float64", doubled)
    total = apply("bn_shift", shared, shared, shared)  # a node used three times is computed once
    values = list(evaluate_all([total.recipe, doubled.recipe], {"layer.weight": np.array([2.0, 6.0], np.float32)}.__getitem__))
    np.testing.assert_array_equal(values[0], [1.0 - 1.0 * 1.0, 3.0 - 3.0 * 3.0])
    np.testing.assert_array_equal(values[1], np.array([1.0, 3.0], np.float32))


@pytest.mark.parametrize("load_config", [load_pose_config, load_detector_config])
def test_shipped_templates_fit_the_packaged_configs_only(load_config):
    config = load_config()
    template = load_template(config.model.name)
    assert template is not None
    fields = graph_key_fields("onnx", input_spec_of(config), "some-sha256", graph_key_extra(config))
    assert template.fits(fields)
    other = dict(fields, input_shape=[1, 3, 128, 96])
    assert not template.fits(other)
    assert json.loads(json.dumps(recipes_to_json(template)))["model"] == config.model.name


def test_templates_of_another_config_do_not_fit():
    config = load_pose_config()
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, input_size=(128, 96)))
    fields = graph_key_fields("onnx", input_spec_of(other), "x", graph_key_extra(other))
    assert not load_template(config.model.name).fits(fields)


@pytest.fixture(scope="module")
def detector_template():
    return load_template(DETECTOR)


def _zeros_state(template):
    """A weight file's state dict of the right shapes; np.zeros pages stay untouched, so this is cheap."""
    return {key: np.zeros(spec.shape, spec.dtype) for key, spec in template.expected.items()}


def test_a_missing_key_is_named(detector_template):
    state = _zeros_state(detector_template)
    key = list(state)[5]
    del state[key]
    with pytest.raises(WeightsError, match=rf"weights w.pkl do not fit RetinaNet: 1 missing key \({key}\)$"):
        fill_template(detector_template, state, "w.pkl")


def test_an_extra_key_is_named(detector_template):
    state = _zeros_state(detector_template)
    state["head.unknown"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"1 unexpected \(head.unknown\)$"):
        fill_template(detector_template, state, "w.pkl")


def test_a_wrong_shape_is_named_and_legacy_layouts_fit(detector_template):
    state = _zeros_state(detector_template)
    key = next(k for k, spec in detector_template.expected.items() if len(spec.shape) == 4)
    state[key] = np.zeros((1,) + tuple(detector_template.expected[key].shape[1:]), np.float32)
    with pytest.raises(WeightsError, match=rf"1 wrong shape \({key}: file \(1,"):
        fill_template(detector_template, state, "w.pkl")


def test_template_graphs_count_as_verified_other_unverified_ones_do_not(tmp_path):
    cache = GraphCache(tmp_path)
    fields = {"weights": "w", "format": "onnx"}
    for source, found in (("template", True), ("exporter", False)):
        path, _ = cache.get_or_create(f"net-{source}", fields, ".onnx", lambda: b"graph bytes")
        cache.seal(path, verified=False, source=source)
        assert (cache.find(f"net-{source}", fields, ".onnx", require_verified=True) is not None) is found


def test_shipped_templates_stay_small():
    from mspn_cli.export.graph_template import TEMPLATES_DIR

    sizes = {p.name: p.stat().st_size for p in TEMPLATES_DIR.iterdir() if p.is_file()}
    assert len(sizes) == 4 and sum(sizes.values()) < 1_000_000, sizes


def test_onnx_graph_path_fills_once_then_finds_the_sealed_graph(mspn_home, monkeypatch, detector_weights):
    """The one entry point for ONNX-consuming backends: built from the template on a miss, reused after."""
    from mspn_cli.runtime import network
    from mspn_cli.weights import indexed_sha256, store

    monkeypatch.setattr(store, "_USABLE_ROOTS", {})
    config = load_detector_config()
    sha256 = indexed_sha256(detector_weights)
    path = network.onnx_graph_path(config, detector_weights, sha256, progress=False)
    assert path.parent == mspn_home / "graphs"
    assert json.loads(path.with_name(path.name + ".seal.json").read_text())["source"] == "template"
    built = path.stat().st_mtime_ns

    def no_second_build(*args, **kwargs):
        raise AssertionError("the sealed graph should have been found")

    monkeypatch.setattr(network, "attach_backend", no_second_build)
    monkeypatch.setattr("mspn_cli.export.graph_template.fill_template", no_second_build)
    assert network.onnx_graph_path(config, detector_weights, sha256, progress=False) == path
    assert path.stat().st_mtime_ns == built


def test_respecified_graph_renames_outputs_and_fixes_the_batch():
    import onnx

    from mspn_cli.errors import ExportError
    from mspn_cli.export.graph_template import respecified_graph

    template = load_template("mspn_4stage")
    proto = onnx.ModelProto()
    proto.ParseFromString(respecified_graph(template.graph, ["heatmaps"], (4, 3, 256, 192), {}))

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert dims(proto.graph.input[0]) == [4, 3, 256, 192]
    assert [o.name for o in proto.graph.output] == ["heatmaps"] and dims(proto.graph.output[0]) == [4, 17, 64, 48]
    assert sum(out == "heatmaps" for node in proto.graph.node for out in node.output) == 1
    with pytest.raises(ExportError):  # MSPN's graph was traced with a fixed crop size
        respecified_graph(template.graph, ["heatmaps"], (1, 3, 256, 192), {0: "N", 2: "H"})
