"""The detector's candidate-first post-processing against the dense one (reference §7.5).

`detections_for_image` scores only the logits above a safe bound, read in the head's
C x h x w layout; the dense chain (`flatten_head_outputs` -> `decode_boxes` ->
`map_boxes_to_image` -> `postprocess_detections`) scores every anchor of every class.
They must agree bit for bit, ties, the threshold's edge and non-finite logits included.
"""

from __future__ import annotations

import numpy as np
import pytest

from mspn_cli.config import AnchorConfig, DetectorPostprocessConfig
from mspn_cli.detection import postprocess
from mspn_cli.detection.postprocess import (
    anchors_for_outputs,
    decode_boxes,
    detections_for_image,
    flatten_head_outputs,
    map_boxes_to_image,
    postprocess_detections,
    score_candidates,
    sigmoid,
)
from mspn_cli.errors import InputError

SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RATIOS = (0.5, 1.0, 2.0)
ANCHORS = AnchorConfig(strides=(8, 16), base_sizes=(32, 64), scales=SCALES, ratios=RATIOS)
NUM_CLASSES = 80
IM_INFO = (60, 90, 30, 45)


def _dense(logits, offsets, post):
    scores, deltas = flatten_head_outputs(logits, offsets, NUM_CLASSES)
    boxes = map_boxes_to_image(decode_boxes(anchors_for_outputs(logits, ANCHORS), deltas), IM_INFO)
    return postprocess_detections(scores, boxes, post.score_thr, post.nms_thr, post.max_dets)


def _head_outputs(seed):
    """Logits spread around the 0.05 threshold's logit (-2.944), with repeated values (ties)."""
    rng = np.random.default_rng(seed)
    logits = [rng.normal(-3.5, 1.5, (1, 720, h, w)).astype(np.float32) for h, w in ((8, 12), (4, 6))]
    offsets = [rng.normal(0, 0.3, (1, 36, h, w)).astype(np.float32) for h, w in ((8, 12), (4, 6))]
    logits[0][0, :, :2, :] = np.round(logits[0][0, :, :2, :], 1)  # many equal scores
    return logits, offsets


@pytest.fixture(params=["sparse", "dense"])
def path(request, monkeypatch):
    """Both ways `detections_for_image` may take: candidates first, or every anchor scored."""
    monkeypatch.setattr(postprocess, "SPARSE_SHARE", 1.0 if request.param == "sparse" else 0.0)
    return request.param


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_dets", [100, 5000])
def test_candidate_first_equals_dense_bit_for_bit(seed, max_dets, path):
    logits, offsets = _head_outputs(seed)
    post = DetectorPostprocessConfig(max_dets=max_dets)
    fast = detections_for_image(logits, offsets, IM_INFO, ANCHORS, post)
    dense = _dense(logits, offsets, post)
    assert len(dense) > 50
    assert fast.tobytes() == dense.tobytes()


def test_scores_at_the_threshold_edge_and_non_finite_logits(path):
    logits, offsets = _head_outputs(3)
    edge = np.float32(np.log(0.05 / 0.95))
    # Logits within a few float32 steps of the threshold's: some score exactly 0.05 or just around it.
    steps = np.nextafter(edge, np.float32(np.inf)), edge, np.nextafter(edge, np.float32(-np.inf))
    for index, value in enumerate(steps * 20):
        logits[1][0, index, index % 4, index % 6] = value
    logits[0][0, 5, 1, 1], logits[0][0, 6, 1, 2], logits[0][0, 7, 1, 3] = np.inf, -np.inf, np.nan
    post = DetectorPostprocessConfig(max_dets=5000)
    assert detections_for_image(logits, offsets, IM_INFO, ANCHORS, post).tobytes() == _dense(logits, offsets, post).tobytes()


def test_candidates_are_those_above_the_threshold_in_class_then_anchor_order():
    logits, offsets = _head_outputs(4)
    class_ids, anchor_ids, scores, deltas = score_candidates(logits, offsets, 0.05, NUM_CLASSES)
    dense_scores, dense_deltas = flatten_head_outputs(logits, offsets, NUM_CLASSES)
    expected_classes, expected_anchors = np.nonzero(dense_scores.T > 0.05)
    np.testing.assert_array_equal(class_ids, expected_classes)
    np.testing.assert_array_equal(anchor_ids, expected_anchors)
    assert scores.tobytes() == dense_scores[anchor_ids, class_ids].tobytes()
    assert deltas.tobytes() == dense_deltas[anchor_ids].tobytes()
    assert scores.tobytes() == sigmoid(logits_at(logits, class_ids, anchor_ids)).tobytes()


def logits_at(logits, class_ids, anchor_ids):
    flat = np.concatenate([level[0].transpose(1, 2, 0).reshape(-1, NUM_CLASSES) for level in logits])
    return flat[anchor_ids, class_ids]


def test_threshold_outside_zero_one_takes_every_finite_logit():
    logits, offsets = _head_outputs(5)
    class_ids, _, _, _ = score_candidates(logits, offsets, 0.0, NUM_CLASSES)
    assert class_ids.size == sum(level.size for level in logits)


def test_many_candidates_hand_over_to_scoring_every_anchor():
    logits, offsets = _head_outputs(7)  # about a third of the logits are above the bound
    assert score_candidates(logits, offsets, 0.05, NUM_CLASSES, max_share=0.1) is None
    assert score_candidates(logits, offsets, 0.05, NUM_CLASSES, max_share=0.5) is not None


def test_mismatched_offsets_are_refused():
    logits, offsets = _head_outputs(6)
    with pytest.raises(InputError):
        score_candidates(logits, [offsets[0][:, :32]] + offsets[1:], 0.05, NUM_CLASSES)


def test_the_head_outputs_default_to_cocos_80_classes():
    """Called without num_classes, both readers of the head take COCO's 80 classes (reference §7.1)."""
    logits, offsets = _head_outputs(8)
    scores, deltas = flatten_head_outputs(logits, offsets)
    np.testing.assert_array_equal(scores, flatten_head_outputs(logits, offsets, NUM_CLASSES)[0])
    assert scores.shape[1] == NUM_CLASSES and deltas.shape == (scores.shape[0], 4)
    found = score_candidates(logits, offsets, 0.05)
    expected = score_candidates(logits, offsets, 0.05, NUM_CLASSES)
    for got, want in zip(found, expected):
        np.testing.assert_array_equal(got, want)
