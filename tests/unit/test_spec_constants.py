"""The package's constants and shipped configs against the specification (tests/spec.py).

Each value below is compared with the reference document or COCO, never with another
part of the package: a swapped flip pair, a limb that joins the wrong joints or a
changed decoder step fails here even where every downstream test would cancel it out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mspn_cli import skeleton
from mspn_cli.config import load_detector_config, load_pose_config
from mspn_cli.pose.postprocess import average_flip
from tests import spec
from tests.conftest import COCO_SAMPLE


def test_flip_order_of_the_skeleton_and_the_shipped_config_is_the_spec_s():
    assert tuple(skeleton.FLIP_ORDER) == spec.FLIP_ORDER
    assert tuple(load_pose_config().test.flip_order) == spec.FLIP_ORDER


def test_flip_pairs_join_left_and_right_of_the_same_joint():
    """The spec's order, read as names: every joint maps to its mirror image."""
    for joint, mirror in enumerate(spec.FLIP_ORDER):
        name, mirrored = spec.KEYPOINT_NAMES[joint], spec.KEYPOINT_NAMES[mirror]
        assert mirrored == name.replace("left", "@").replace("right", "left").replace("@", "right")


def test_keypoint_names_are_coco_s():
    assert tuple(skeleton.KEYPOINT_NAMES) == spec.KEYPOINT_NAMES
    category = json.loads((COCO_SAMPLE / "person_keypoints_sample.json").read_text())["categories"][0]
    assert tuple(category["keypoints"]) == spec.KEYPOINT_NAMES


def test_limbs_are_coco_s_19_edges():
    assert len(skeleton.LIMBS) == 19
    assert [tuple(limb) for limb in skeleton.LIMBS] == list(spec.COCO_LIMBS)
    # The spec's transcription of COCO agrees with the annotation file itself.
    category = json.loads((COCO_SAMPLE / "person_keypoints_sample.json").read_text())["categories"][0]
    assert [tuple(edge) for edge in category["skeleton"]] == list(spec.COCO_SKELETON_1_BASED)
    assert len(skeleton.LIMB_COLORS) == len(spec.COCO_LIMBS)


def test_oks_sigmas_are_cocoeval_s():
    assert np.asarray(skeleton.KEYPOINT_SIGMAS, np.float64) == pytest.approx(spec.OKS_SIGMAS, rel=1e-12)


def test_pose_config_numbers_are_the_spec_s():
    cfg = load_pose_config()
    assert tuple(cfg.model.input_size) == spec.INPUT_SHAPE
    assert tuple(cfg.model.heatmap_size) == spec.OUTPUT_SHAPE
    assert cfg.model.num_keypoints == spec.NUM_KEYPOINTS
    assert tuple(cfg.preprocess.box_extension) == spec.BOX_EXTENSION
    assert cfg.aspect_ratio == spec.W_H_RATIO
    assert tuple(cfg.preprocess.mean) == spec.MSPN_MEAN
    assert tuple(cfg.preprocess.std) == spec.MSPN_STD
    assert cfg.test.flip is True
    assert cfg.decoder.heat_range == spec.HEAT_RANGE
    assert (cfg.decoder.blur_kernel, cfg.decoder.blur_kernel) == spec.BLUR_KERNEL
    assert cfg.decoder.border == spec.DECODER_BORDER
    assert tuple(cfg.decoder.shift_steps) == spec.REFINEMENT_STEPS


def test_detector_config_numbers_are_the_spec_s():
    cfg = load_detector_config()
    assert tuple(cfg.preprocess.mean) == spec.DETECTOR_MEAN_BGR
    assert tuple(cfg.preprocess.std) == spec.DETECTOR_STD_BGR
    assert (cfg.preprocess.short_side, cfg.preprocess.max_side) == (800, 1333)
    assert cfg.postprocess.score_thr == spec.DETECTOR_SCORE_THRESHOLD
    assert cfg.postprocess.nms_thr == spec.DETECTOR_NMS_IOU
    assert cfg.postprocess.max_dets == spec.DETECTOR_MAX_DETECTIONS
    assert tuple(cfg.anchors.strides) == (8, 16, 32, 64, 128)
    assert tuple(cfg.anchors.base_sizes) == (32, 64, 128, 256, 512)
    assert cfg.anchors.scales == pytest.approx([2 ** (i / 3) for i in range(3)], rel=1e-15)
    assert tuple(cfg.anchors.ratios) == (0.5, 1.0, 2.0)


def test_flip_average_with_the_configured_order_equals_the_spec_s():
    """What the estimator calls (average_flip with the config's order) against §4.1."""
    rng = np.random.default_rng(23)
    heatmaps = rng.normal(size=(2, 17, 64, 48)).astype(np.float32)
    flipped = rng.normal(size=(2, 17, 64, 48)).astype(np.float32)
    ours = average_flip(heatmaps, flipped, load_pose_config().test.flip_order)
    for person in range(2):
        expected = spec.official_flip_average(heatmaps[person], flipped[person])
        np.testing.assert_array_equal(ours[person], expected)


def test_defaults_of_the_pure_functions_are_the_spec_s():
    """Library callers who pass nothing get the spec's numbers too (the pipeline passes the config's)."""
    import inspect

    from mspn_cli.pose.postprocess import decode_heatmaps, decode_heatmaps_to_crop
    from mspn_cli.pose.preprocess import DEFAULT_MEAN, DEFAULT_STD, extend_box

    for function in (decode_heatmaps, decode_heatmaps_to_crop):
        defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
        assert defaults["border"] == spec.DECODER_BORDER
        assert defaults["heat_range"] == spec.HEAT_RANGE
        assert (defaults["blur_kernel"],) * 2 == spec.BLUR_KERNEL
        assert tuple(defaults["shift_steps"]) == spec.REFINEMENT_STEPS
    assert tuple(inspect.signature(decode_heatmaps).parameters["input_size"].default) == spec.INPUT_SHAPE
    extend_defaults = inspect.signature(extend_box).parameters
    assert tuple(extend_defaults["extension"].default) == spec.BOX_EXTENSION
    assert extend_defaults["aspect_ratio"].default == spec.W_H_RATIO
    assert (tuple(DEFAULT_MEAN), tuple(DEFAULT_STD)) == (spec.MSPN_MEAN, spec.MSPN_STD)
