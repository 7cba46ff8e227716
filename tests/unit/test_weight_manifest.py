"""Strict loading without a network: weight files checked against the packaged manifests.

No MegEngine here: these run on every Python. The manifests themselves are the official
ones in tests/data/reference (the spec); the packaged copies must equal them byte for byte.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from mspn_cli.errors import WeightsError
from mspn_cli.weights import fit_to_manifest, load_checkpoint
from mspn_cli.weights.manifest import layer_kinds, manifest, manifest_text
from tests.conftest import REFERENCE
from tests.weightgen import manifest_shapes, random_state_dict

MODELS = ("mspn_4stage", "retinanet_res50_coco_3x_800size")
DETECTOR = "retinanet_res50_coco_3x_800size"


@pytest.mark.parametrize("model_name", MODELS)
def test_packaged_manifest_is_the_official_one(model_name):
    assert manifest_text(model_name) == (REFERENCE / f"{model_name}.manifest.tsv").read_text()
    assert len(manifest(model_name)) == {"mspn_4stage": 1456, DETECTOR: 301}[model_name]


def test_layer_kinds_come_from_the_keys():
    kinds = layer_kinds(manifest("mspn_4stage"))
    assert kinds["head.1"] == "norm" and kinds["head.0"] == "conv"
    kinds = layer_kinds(manifest(DETECTOR))
    assert kinds["backbone.bottom_up.bn1"] == "norm" and kinds["backbone.bottom_up.conv1"] == "conv"
    assert "head.cls_score" in kinds and kinds["head.cls_score"] == "conv"


def test_official_format_file_fits_with_legacy_bn_shapes(mspn_weights):
    state = load_checkpoint(mspn_weights)
    legacy = [k for k, v in state.items() if k.endswith("running_var") and v.ndim == 4]
    assert legacy, "the fixture stores BN statistics as (1,C,1,1), as MegEngine 0.x did"
    fitted = fit_to_manifest("mspn_4stage", state, str(mspn_weights))
    shapes = manifest_shapes("mspn_4stage")
    assert list(fitted) == list(shapes)
    assert all(fitted[key].shape == shapes[key] and fitted[key].dtype == np.float32 for key in shapes)
    np.testing.assert_array_equal(fitted[legacy[0]], state[legacy[0]].reshape(-1))


def _detector_state(seed=7):
    return random_state_dict(DETECTOR, seed=seed, legacy_shapes=False)


def test_legacy_layouts_and_float64_are_accepted():
    state = _detector_state()
    legacy = OrderedDict(state)
    legacy["backbone.bottom_up.bn1.running_mean"] = state["backbone.bottom_up.bn1.running_mean"].reshape(1, -1, 1, 1)
    legacy["head.cls_score.bias"] = state["head.cls_score.bias"].reshape(1, -1, 1, 1)  # conv bias as (1,C,1,1)
    legacy["head.cls_score.weight"] = state["head.cls_score.weight"].astype(np.float64)
    fitted = fit_to_manifest(DETECTOR, legacy, "legacy.pkl")
    for key, value in state.items():
        assert fitted[key].dtype == value.dtype
        np.testing.assert_array_equal(fitted[key], value)


def test_every_misfit_in_one_line():
    state = _detector_state()
    del state["backbone.bottom_up.conv1.weight"]
    state["extra.weight"] = np.ones(3, np.float32)
    state["backbone.bottom_up.bn1.weight"] = np.ones(5, np.float32)  # a norm layer, another element count
    weight = state["head.cls_score.weight"]
    state["head.cls_score.weight"] = weight.reshape(weight.shape[1], weight.shape[0], 3, 3)  # same count, not a layout
    with pytest.raises(WeightsError) as info:
        fit_to_manifest(DETECTOR, state, "bad.pkl")
    message = str(info.value)
    assert message.startswith(f"weights bad.pkl do not fit {DETECTOR}: ")
    assert "1 missing key (backbone.bottom_up.conv1.weight)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "backbone.bottom_up.bn1.weight: file (5,) vs model (64,)" in message
    assert f"head.cls_score.weight: file ({weight.shape[1]},{weight.shape[0]},3,3) vs model" in message
    assert "different model" not in message and "\n" not in message


def test_weights_of_the_other_network_look_foreign():
    with pytest.raises(WeightsError, match="these look like weights of a different model$"):
        fit_to_manifest("mspn_4stage", _detector_state(), "detector.pkl")


def test_unknown_model_has_no_manifest():
    with pytest.raises(WeightsError, match="no packaged state-dict manifest"):
        manifest("mspn_5stage")


@pytest.mark.megengine
def test_manifest_check_agrees_with_loading_into_the_network():
    """The same file, the same verdict and message, with or without the MegEngine network."""
    from mspn_cli.models import build_model
    from mspn_cli.weights import load_weights_into

    state = _detector_state()
    state["backbone.bottom_up.bn1.running_var"] = state["backbone.bottom_up.bn1.running_var"].reshape(1, -1, 1, 1)
    fit_to_manifest(DETECTOR, state, "ok.pkl")
    load_weights_into(build_model(DETECTOR), state, "ok.pkl", model_name=DETECTOR)
    del state["head.cls_score.bias"]
    state["backbone.bottom_up.bn1.weight"] = np.ones(5, np.float32)
    messages = []
    for check in (lambda: fit_to_manifest(DETECTOR, state, "bad.pkl"),
                  lambda: load_weights_into(build_model(DETECTOR), state, "bad.pkl", model_name=DETECTOR)):
        with pytest.raises(WeightsError) as info:
            check()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
