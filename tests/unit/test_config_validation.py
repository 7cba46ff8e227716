"""Every config value is range-checked when the config is loaded (issue 15, item 10).

Each case edits one line of a packaged TOML and expects ConfigError (exit 5) whose
message names the key. Before the checks, `heat_range = 0` gave numpy warnings and
`score: null`, and `input_size = [0, 192]` a ZeroDivisionError after the export.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mspn_cli.config import DEFAULT_DETECTOR_CONFIG, DEFAULT_EVAL_CONFIG, DEFAULT_POSE_CONFIG
from mspn_cli.config import load_detector_config, load_eval_config, load_pose_config
from mspn_cli.errors import EXIT_CONFIG, ConfigError

POSE_CASES = {
    "heat-range-zero": ("heat_range = 255.0", "heat_range = 0.0", "decoder.heat_range"),
    "heat-range-negative": ("heat_range = 255.0", "heat_range = -3.0", "decoder.heat_range"),
    "heat-range-nan": ("heat_range = 255.0", "heat_range = nan", "decoder.heat_range"),
    "input-height-zero": ("input_size = [256, 192]", "input_size = [0, 192]", "model.input_size"),
    "input-negative": ("input_size = [256, 192]", "input_size = [256, -192]", "model.input_size"),
    "input-not-multiple-of-32": ("input_size = [256, 192]", "input_size = [250, 192]", "model.input_size"),
    "heatmap-inconsistent": ("heatmap_size = [64, 48]", "heatmap_size = [64, 47]", "model.heatmap_size"),
    "heatmap-zero": ("heatmap_size = [64, 48]", "heatmap_size = [0, 0]", "model.heatmap_size"),
    "input-changed-heatmap-not": ("input_size = [256, 192]", "input_size = [384, 288]", "model.heatmap_size"),
    "keypoints-other-than-network": ("num_keypoints = 17", "num_keypoints = 16", "model.num_keypoints"),
    "std-zero": ("std = [58.395, 57.12, 57.375]", "std = [58.395, 0.0, 57.375]", "preprocess.std[1]"),
    "std-negative": ("std = [58.395, 57.12, 57.375]", "std = [58.395, 57.12, -1.0]", "preprocess.std[2]"),
    "mean-infinite": ("mean = [123.675, 116.28, 103.53]", "mean = [inf, 116.28, 103.53]", "preprocess.mean[0]"),
    "box-extension-negative": ("box_extension = [0.1, 0.1]", "box_extension = [-0.2, 0.1]", "preprocess.box_extension[0]"),
    "blur-kernel-even": ("blur_kernel = 17 ", "blur_kernel = 16 ", "decoder.blur_kernel"),
    "blur-kernel-zero": ("blur_kernel = 17 ", "blur_kernel = 0 ", "decoder.blur_kernel"),
    "blur-kernel-negative-odd": ("blur_kernel = 17 ", "blur_kernel = -3 ", "decoder.blur_kernel"),
    "border-negative": ("border = 10 ", "border = -1 ", "decoder.border"),
    "shift-step-infinite": ("shift_steps = [0.35, 0.15, 0.05]", "shift_steps = [0.35, inf, 0.05]", "decoder.shift_steps[1]"),
    "batch-size-zero": ("batch_size = 8 ", "batch_size = 0 ", "test.batch_size"),
    "flip-order-not-permutation": ("flip_order = [0, 2, 1,", "flip_order = [0, 2, 2,", "test.flip_order"),
    "sha256-not-hex": ('sha256 = ""', 'sha256 = "xyz"', "weights.sha256"),
    "filename-with-folder": ('filename = "mspn_4stage_0_255_75_2.pkl"', 'filename = "../x.pkl"', "weights.filename"),
}

DETECTOR_CASES = {
    "score-thr-above-one": ("score_thr = 0.05", "score_thr = 1.5", "postprocess.score_thr"),
    "nms-thr-negative": ("nms_thr = 0.5", "nms_thr = -0.1", "postprocess.nms_thr"),
    "person-thr-above-one": ("person_thr = 0.3", "person_thr = 3.0", "postprocess.person_thr"),
    "max-dets-zero": ("max_dets = 100", "max_dets = 0", "postprocess.max_dets"),
    "strides-empty": ("strides = [8, 16, 32, 64, 128]", "strides = []", "anchors.strides"),
    "strides-zero": ("strides = [8, 16, 32, 64, 128]", "strides = [8, 16, 0, 64, 128]", "anchors.strides[2]"),
    "strides-fewer-levels": ("strides = [8, 16, 32, 64, 128]", "strides = [8, 16, 32, 64]", "anchors.strides"),
    "base-sizes-other-length": ("base_sizes = [32, 64, 128, 256, 512]", "base_sizes = [32, 64, 128, 256]", "anchors.base_sizes"),
    "ratios-empty": ("ratios = [0.5, 1.0, 2.0]", "ratios = []", "anchors.ratios"),
    "ratios-negative": ("ratios = [0.5, 1.0, 2.0]", "ratios = [0.5, -1.0, 2.0]", "anchors.ratios[1]"),
    "scales-two-anchors-short": ("scales = [1.0, 1.2599210498948732, 1.5874010519681994]", "scales = [1.0, 2.0]",
                                 "anchors.scales x anchors.ratios"),
    "offset-above-one": ("offset = 0.5", "offset = 1.5", "anchors.offset"),
    "classes-other-than-network": ("num_classes = 80", "num_classes = 81", "model.num_classes"),
    "person-class-out-of-range": ("person_class = 0 ", "person_class = 80 ", "model.person_class"),
    "size-divisor-zero": ("size_divisor = 32 ", "size_divisor = 0 ", "preprocess.size_divisor"),
    "detector-std-zero": ("std = [57.375, 57.12, 58.395]", "std = [0.0, 57.12, 58.395]", "preprocess.std[0]"),
    "short-side-too-small": ("short_side = 800", "short_side = 8", "short_side"),
}

EVAL_CASES = {
    "published-ap-above-one": ("AP = 0.752", "AP = 75.2", "published.AP"),
    "empty-images-folder": ('images = "val2017"', 'images = ""', "dataset.images"),
}


def _edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} is not in {source.name}: update this test's case"
    path = tmp_path / source.name
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old,new,key", POSE_CASES.values(), ids=POSE_CASES.keys())
def test_pose_config_value_out_of_range_is_refused(tmp_path, old, new, key):
    path = _edited(tmp_path, DEFAULT_POSE_CONFIG, old, new)
    with pytest.raises(ConfigError) as caught:
        load_pose_config(path)
    assert key in str(caught.value) and str(path) in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG == 5


@pytest.mark.parametrize("old,new,key", DETECTOR_CASES.values(), ids=DETECTOR_CASES.keys())
def test_detector_config_value_out_of_range_is_refused(tmp_path, old, new, key):
    path = _edited(tmp_path, DEFAULT_DETECTOR_CONFIG, old, new)
    with pytest.raises(ConfigError) as caught:
        load_detector_config(path)
    assert key in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("old,new,key", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_eval_config_value_out_of_range_is_refused(tmp_path, old, new, key):
    path = _edited(tmp_path, DEFAULT_EVAL_CONFIG, old, new)
    with pytest.raises(ConfigError) as caught:
        load_eval_config(path)
    assert key in str(caught.value)


def test_values_at_the_edges_of_their_ranges_are_accepted(tmp_path):
    pose = DEFAULT_POSE_CONFIG.read_text()
    for old, new in (("input_size = [256, 192]", "input_size = [384, 288]"), ("heatmap_size = [64, 48]", "heatmap_size = [96, 72]"),
                     ("box_extension = [0.1, 0.1]", "box_extension = [0.0, 0.0]"), ("border = 10 ", "border = 0 "),
                     ("blur_kernel = 17 ", "blur_kernel = 1 "), ("shift_steps = [0.35, 0.15, 0.05]", "shift_steps = []")):
        pose = pose.replace(old, new, 1)
    (tmp_path / "pose.toml").write_text(pose)
    assert load_pose_config(tmp_path / "pose.toml").model.heatmap_size == (96, 72)
    detector = DEFAULT_DETECTOR_CONFIG.read_text()
    for old, new in (("score_thr = 0.05", "score_thr = 0.0"), ("nms_thr = 0.5", "nms_thr = 1.0"), ("person_thr = 0.3", "person_thr = 1.0"),
                     ("max_dets = 100", "max_dets = 1"), ("offset = 0.5", "offset = 0.0")):
        detector = detector.replace(old, new, 1)
    (tmp_path / "det.toml").write_text(detector)
    assert load_detector_config(tmp_path / "det.toml").postprocess.max_dets == 1
