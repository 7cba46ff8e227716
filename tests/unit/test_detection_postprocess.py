"""Anchors, decoding, NMS and the detection cap, on hand-made cases (reference §7.3, §7.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mspn_cli.config import AnchorConfig, DetectorPostprocessConfig, load_detector_config
from mspn_cli.detection.postprocess import (
    decode_boxes,
    detections_for_image,
    flatten_head_outputs,
    generate_anchors,
    map_boxes_to_image,
    nms,
    postprocess_detections,
)
from mspn_cli.errors import InputError

SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RATIOS = (0.5, 1.0, 2.0)
ANCHORS = AnchorConfig(strides=(8, 16), base_sizes=(32, 64), scales=SCALES, ratios=RATIOS)


def _anchor(cx, cy, size, ratio):
    width = math.sqrt(size * size / ratio)
    height = ratio * width
    return [cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2]


# ---------------------------------------------------------------- anchors


def test_anchor_count_and_order():
    anchors = generate_anchors([(2, 3), (1, 2)], (8, 16), (32, 64), SCALES, RATIOS)
    assert anchors.shape == (2 * 3 * 9 + 1 * 2 * 9, 4) and anchors.dtype == np.float32
    expected = {
        0: _anchor(4, 4, 32, 0.5),  # (y0, x0): scale 0 x ratio 0.5
        1: _anchor(4, 4, 32, 1.0),  # (-12, -12, 20, 20)
        2: _anchor(4, 4, 32, 2.0),
        3: _anchor(4, 4, 32 * SCALES[1], 0.5),  # scale is the outer loop
        8: _anchor(4, 4, 32 * SCALES[2], 2.0),
        9: _anchor(12, 4, 32, 0.5),  # next column x = 1
        27: _anchor(4, 12, 32, 0.5),  # next row y = 1
        54: _anchor(8, 8, 64, 0.5),  # second level, stride 16
        63 + 1: _anchor(24, 8, 64, 1.0),
    }
    for index, box in expected.items():
        np.testing.assert_allclose(anchors[index], box, rtol=0, atol=1e-4, err_msg=f"anchor {index}")
    np.testing.assert_array_equal(anchors[1], [-12, -12, 20, 20])


def test_anchor_count_for_packaged_config_at_800x1088():
    config = load_detector_config().anchors
    shapes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    anchors = generate_anchors(shapes, config.strides, config.base_sizes, config.scales, config.ratios, config.offset)
    assert anchors.shape == (9 * sum(h * w for h, w in shapes), 4)


# ---------------------------------------------------------------- layout and decoding


def test_flatten_head_outputs_layout():
    height, width, num_classes = 2, 3, 80
    logits = np.zeros((1, 9 * num_classes, height, width), np.float32)
    offsets = np.zeros((1, 36, height, width), np.float32)
    # Mark anchor a = 4 at (y=1, x=2), class 7, and its dh (k = 3).
    logits[0, 4 * num_classes + 7, 1, 2] = 3.0
    offsets[0, 4 * 4 + 3, 1, 2] = 0.25
    small = [np.zeros((1, 9 * num_classes, 1, 1), np.float32)]
    small_offsets = [np.zeros((1, 36, 1, 1), np.float32)]
    scores, deltas = flatten_head_outputs([logits] + small, [offsets] + small_offsets, num_classes)
    assert scores.shape == (height * width * 9 + 9, num_classes) and deltas.shape == (scores.shape[0], 4)
    anchor_index = (1 * width + 2) * 9 + 4
    assert scores[anchor_index, 7] == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert np.count_nonzero(scores != np.float32(0.5)) == 1
    assert deltas[anchor_index, 3] == np.float32(0.25) and np.count_nonzero(deltas) == 1

    # A batch of two: image_index picks the image; C x h x w is one image.
    pair = np.concatenate([np.zeros_like(logits), logits])
    pair_offsets = np.concatenate([np.zeros_like(offsets), offsets])
    second, _ = flatten_head_outputs([pair], [pair_offsets], num_classes, image_index=1)
    alone, _ = flatten_head_outputs([logits[0]], [offsets[0]], num_classes)
    np.testing.assert_array_equal(second, alone)


def test_decode_zero_deltas_gives_anchors_and_round_trip():
    anchors = generate_anchors([(2, 2)], (8,), (32,), SCALES, RATIOS)
    np.testing.assert_array_equal(decode_boxes(anchors, np.zeros_like(anchors)), anchors)

    targets = np.array([[10, 20, 50, 90], [-5, 0, 5, 3], [100, 100, 300, 180]], np.float32)
    chosen = anchors[[0, 13, 35]]
    aw, ah = chosen[:, 2] - chosen[:, 0], chosen[:, 3] - chosen[:, 1]
    acx, acy = chosen[:, 0] + aw / 2, chosen[:, 1] + ah / 2
    tw, th = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    deltas = np.stack(
        [
            (targets[:, 0] + tw / 2 - acx) / aw,
            (targets[:, 1] + th / 2 - acy) / ah,
            np.log(tw / aw),
            np.log(th / ah),
        ],
        axis=1,
    )
    np.testing.assert_allclose(decode_boxes(chosen, deltas), targets, rtol=0, atol=1e-3)


def test_decode_has_no_plus_one_and_no_clamp():
    anchor = np.array([[0, 0, 10, 20]], np.float32)
    box = decode_boxes(anchor, np.array([[0.1, -0.1, math.log(2), 5.0]], np.float32))
    width, height = 20.0, 20 * math.exp(5.0)  # exp(5) is above the usual log(1000/16) clamp
    np.testing.assert_allclose(box[0], [6 - width / 2, 8 - height / 2, 6 + width / 2, 8 + height / 2], rtol=1e-5)


def test_map_boxes_to_image_scales_per_axis_and_clips_at_size():
    im_info = (800, 1067, 480, 640)
    boxes = np.array([[1067 / 2, 400, 1067, 800], [-30, -10, 2000, 900]], np.float32)
    mapped = map_boxes_to_image(boxes, im_info)
    np.testing.assert_allclose(mapped[0], [320, 240, 640, 480], rtol=1e-6)
    np.testing.assert_array_equal(mapped[1], [0, 0, 640, 480])  # upper bound is the size, not size - 1
    assert mapped.dtype == np.float32
    assert boxes[1, 0] == -30  # input untouched


# ---------------------------------------------------------------- NMS


def test_nms_keeps_iou_exactly_at_threshold():
    anchor = [0, 0, 10, 10]
    exactly_half = [0, 0, 10, 5]  # inter 50 / union 100
    above_half = [0, 0, 10, 5.01]  # inter 50.1 / union 100
    scores = np.array([0.9, 0.8], np.float32)
    for chunk_size in (1024, 1):  # within a chunk, and across chunks (the kept boxes filter the next chunk)
        assert nms(np.array([anchor, exactly_half], np.float32), scores, 0.5, chunk_size=chunk_size).tolist() == [0, 1]
        assert nms(np.array([anchor, above_half], np.float32), scores, 0.5, chunk_size=chunk_size).tolist() == [0]


def test_nms_order_and_chains():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.8], np.float32)
    # 1 suppresses 0 and 2 (IoU 0.82); 3 is separate. Greedy, highest first.
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]


def test_nms_ties_follow_reversed_argsort():
    box = [0, 0, 10, 10]
    # Equal scores: the reversed default argsort visits the later index first.
    scores = np.array([0.7, 0.7, 0.7], np.float32)
    assert nms(np.array([box, box, box], np.float32), scores, 0.5).tolist() == [2]
    separate = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
    assert nms(separate, scores, 0.5).tolist() == list(np.argsort(scores)[::-1])


def test_nms_degenerate_boxes_use_the_denominator_floor():
    points = np.array([[3, 3, 3, 3], [3, 3, 3, 3]], np.float32)  # zero area: IoU 0 / 1e-5 = 0
    assert nms(points, np.array([0.9, 0.8], np.float32), 0.5).tolist() == [0, 1]


def test_nms_empty():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0


def _one_pass_greedy_nms(boxes, scores, iou_thr):
    """The textbook one-pass loop, as the reference for the chunked nms."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(np.float32(0), np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        iou = w * h / np.maximum(areas[best] + areas[rest] - w * h, np.float32(1e-5))
        order = rest[iou <= iou_thr]
    return keep


def _clustered_boxes(rng, count):
    centres = rng.uniform(0, 200, size=(count // 10 + 1, 2))[rng.integers(0, count // 10 + 1, size=count)]
    centres = centres + rng.normal(0, 4, size=(count, 2))
    sizes = rng.uniform(10, 40, size=(count, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, size=count), 2).astype(np.float32)  # many ties
    return boxes, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_nms_equals_one_pass_greedy(seed):
    boxes, scores = _clustered_boxes(np.random.default_rng(seed), 300)
    expected = _one_pass_greedy_nms(boxes, scores, 0.5)
    assert nms(boxes, scores, 0.5).tolist() == expected
    assert nms(boxes, scores, 0.5, chunk_size=7).tolist() == expected
    assert nms(boxes, scores, 0.5, max_keep=5, chunk_size=7).tolist() == expected[:5]


# ---------------------------------------------------------------- thresholds, classes, cap


def _separate_boxes(count):
    x = np.arange(count, dtype=np.float32) * 20
    return np.stack([x, np.zeros_like(x), x + 10, np.full_like(x, 10)], axis=1)


def test_score_exactly_at_threshold_is_excluded():
    boxes = _separate_boxes(2)
    scores = np.zeros((2, 80), np.float32)
    scores[0, 0] = np.float32(0.05)
    scores[1, 0] = np.nextafter(np.float32(0.05), np.float32(1))
    detections = postprocess_detections(scores, boxes, 0.05, 0.5, 100)
    assert detections.shape == (1, 6)
    np.testing.assert_array_equal(detections[0, :4], boxes[1])


def test_exactly_max_dets_rows_keep_their_class_grouping():
    """Reference §7.5: only *more than* the cap are sorted by score and cut; exactly the cap
    keeps the rows grouped by class, each class in its NMS keep order."""
    boxes = _separate_boxes(3)
    scores = np.zeros((3, 80), np.float32)
    scores[0, 0] = 0.2
    scores[1, 2] = 0.9
    scores[2, 2] = 0.6
    at_cap = postprocess_detections(scores, boxes, 0.05, 0.5, 3)
    assert at_cap[:, 5].tolist() == [0, 2, 2]
    np.testing.assert_allclose(at_cap[:, 4], [0.2, 0.9, 0.6])
    over_cap = postprocess_detections(scores, boxes, 0.05, 0.5, 2)
    assert over_cap[:, 5].tolist() == [2, 2]
    np.testing.assert_allclose(over_cap[:, 4], [0.9, 0.6])


def test_scores_of_another_length_or_rank_than_the_boxes_are_refused():
    boxes = _separate_boxes(3)
    with pytest.raises(InputError, match="do not match"):
        postprocess_detections(np.zeros((2, 80), np.float32), boxes)
    with pytest.raises(InputError, match="do not match"):
        postprocess_detections(np.full(3, 0.9, np.float32), boxes)  # one score per box, no classes


def test_empty_input_gives_zero_by_six():
    for anchors in (0, 5):
        detections = postprocess_detections(np.zeros((anchors, 80), np.float32), np.zeros((anchors, 4), np.float32))
        assert detections.shape == (0, 6) and detections.dtype == np.float32


def test_rows_are_grouped_by_class_in_keep_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [30, 30, 40, 40]], np.float32)
    scores = np.zeros((3, 80), np.float32)
    scores[:, 2] = [0.3, 0.6, 0.4]  # box 1 suppresses box 0
    scores[:, 0] = [0.2, 0.0, 0.9]
    detections = postprocess_detections(scores, boxes)
    assert detections.dtype == np.float32
    assert detections[:, 5].tolist() == [0, 0, 2, 2]
    np.testing.assert_allclose(detections[:, 4], [0.9, 0.2, 0.6, 0.4])
    np.testing.assert_array_equal(detections[:, :4], boxes[[2, 0, 1, 2]])


def test_global_cap_over_all_classes_pushes_persons_out():
    boxes = _separate_boxes(101)
    scores = np.zeros((101, 80), np.float32)
    scores[:100, 5] = 0.9  # 100 confident non-person detections
    scores[100, 0] = 0.5  # one person, less confident
    detections = postprocess_detections(scores, boxes, 0.05, 0.5, 100)
    assert detections.shape == (100, 6)
    assert not (detections[:, 5] == 0).any()

    # A person-only shortcut (thresholding and NMS only column 0) would keep the person.
    shortcut = postprocess_detections(scores[:, :1], boxes, 0.05, 0.5, 100)
    assert shortcut.shape == (1, 6)


def test_cap_is_a_stable_sort():
    boxes = _separate_boxes(60)
    scores = np.zeros((60, 80), np.float32)
    scores[:, 0] = 0.7
    scores[:, 3] = 0.7
    scores[:10, 9] = 0.8
    detections = postprocess_detections(scores, boxes, 0.05, 0.5, 100)
    assert detections.shape == (100, 6)
    # Highest first; equal scores keep the pre-cap order (class 0 before class 3).
    assert detections[:10, 5].tolist() == [9] * 10
    assert detections[10:70, 5].tolist() == [0] * 60
    assert detections[70:, 5].tolist() == [3] * 30
    # ... and within class 3 the first 30 rows in NMS keep order survive.
    class_3_keep = nms(boxes, scores[:, 3], 0.5)
    np.testing.assert_array_equal(detections[70:, :4], boxes[class_3_keep[:30]])


# ---------------------------------------------------------------- whole chain


def test_detections_for_image_chains_everything():
    # A 64 x 96 padded input: P3 8 x 12, P4 4 x 6.
    num_classes = 80
    logits = [np.full((1, 720, 8, 12), -20.0, np.float32), np.full((1, 720, 4, 6), -20.0, np.float32)]
    offsets = [np.zeros((1, 36, 8, 12), np.float32), np.zeros((1, 36, 4, 6), np.float32)]
    logits[0][0, 1 * num_classes + 0, 3, 5] = 2.0  # anchor a = 1 (32 x 32) at y = 3, x = 5: a person
    logits[1][0, 1 * num_classes + 16, 0, 0] = 1.0  # class 16 on P4
    im_info = (60, 90, 30, 45)  # the image was upscaled x2 before padding
    detections = detections_for_image(logits, offsets, im_info, ANCHORS, DetectorPostprocessConfig())
    assert detections.shape == (2, 6)
    person, other = detections
    centre_x, centre_y = (5 + 0.5) * 8, (3 + 0.5) * 8
    expected = np.array([centre_x - 16, centre_y - 16, centre_x + 16, centre_y + 16]) / 2
    np.testing.assert_allclose(person[:4], expected, rtol=1e-6)
    assert person[4] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6) and person[5] == 0
    assert other[5] == 16
    np.testing.assert_allclose(other[:4], [0, 0, 20, 20], rtol=1e-6)  # (-24, -24, 40, 40) / 2, clipped at 0


def test_early_stop_per_class_does_not_change_the_capped_result():
    rng = np.random.default_rng(5)
    boxes, _ = _clustered_boxes(rng, 400)
    scores = (rng.uniform(0, 1, size=(400, 80)) ** 8).astype(np.float32)
    scores[:, 0] = np.round(scores[:, 0], 1)  # ties across the cut
    detections = postprocess_detections(scores, boxes, 0.05, 0.5, 100)

    blocks = []
    for class_index in range(80):
        candidates = np.flatnonzero(scores[:, class_index] > 0.05)
        keep = candidates[_one_pass_greedy_nms(boxes[candidates], scores[candidates, class_index], 0.5)]
        blocks += [[*boxes[i], scores[i, class_index], class_index] for i in keep]
    reference = np.asarray(blocks, np.float32)
    assert len(reference) > 100
    reference = reference[np.argsort(-reference[:, 4], kind="stable")[:100]]
    np.testing.assert_array_equal(detections, reference)
