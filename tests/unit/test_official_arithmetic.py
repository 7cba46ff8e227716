"""Bit parity with a literal transcription of the official per-box arithmetic (issue 15, item 15).

The official test (MegEngine/Models 0.x, keypoints `ExtendBoxes._apply_boxes`,
`RandomBoxAffine.apply` + `get_affine_transform`, `find_keypoints`) works on numpy
scalars one box at a time, so NumPy 1.x's scalar promotion decides its dtypes: a
float32 corner divided by 2 or scaled by a Python float becomes float64 (reference
§3.2-§4.3). The `_official_*` functions below restate that code line by line (my own
transcription, same operations in the same order and grouping) and the vectorised
implementation must match them bit for bit, zero-width and zero-size boxes included.

NumPy 2 (NEP 50) keeps `np.float32(x) / 2` in float32, and NumPy >= 2.2 has no legacy mode
to run the literal code in. So each transcription takes `s`, applied to every Python
number that meets a numpy scalar: `literal` (s(v) = v) is the code as written, run under
NumPy 1.x rules; `numpy1_typed` writes NumPy 1.x's scalar promotion out (a Python int is
an int64, a Python float a float64, as its scalar math treated them), which gives the same
dtypes under any NumPy. Where NumPy 1.x rules can run, the two are checked equal bit for
bit; everywhere, the implementation is checked against the typed one.
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest

from mspn_cli.pose.postprocess import decode_heatmaps
from mspn_cli.pose.preprocess import crop_affine, crop_person, extend_box

INPUT_SHAPE = (256, 192)
OUTPUT_SHAPE = (64, 48)
X_EXT = Y_EXT = 0.10
W_H_RATIO = INPUT_SHAPE[1] / INPUT_SHAPE[0]


@contextlib.contextmanager
def numpy1_scalar_promotion():
    """The transcription needs NumPy 1.x's value-based scalar promotion (NEP 50 changed it)."""
    if int(np.__version__.split(".")[0]) < 2:
        yield
        return
    set_state = getattr(np, "_set_promotion_state", None)
    if set_state is None:
        pytest.skip("NumPy >= 2.2 has no legacy promotion mode to run the NumPy 1.x transcription in")
    previous = np._get_promotion_state()
    set_state("legacy")
    try:
        yield
    finally:
        set_state(previous)


def literal(value):
    return value


def numpy1_typed(value):
    """A Python number as NumPy 1.x's scalar math saw it next to a numpy scalar."""
    if type(value) is int:
        return np.int64(value)
    if type(value) is float:
        return np.float64(value)
    return value


def official_rules():
    """(rules, s): NumPy 1.x rules (a context factory) with the literal code where they can
    run, else no change of rules with the typed code."""
    legacy_available = int(np.__version__.split(".")[0]) < 2 or hasattr(np, "_set_promotion_state")
    if legacy_available:
        return numpy1_scalar_promotion, literal
    return contextlib.nullcontext, numpy1_typed


def _official_extend_boxes(boxes: np.ndarray, s=literal) -> np.ndarray:
    """ExtendBoxes._apply_boxes with random_extend_prob = 0 (so the random factor is the int 1)."""
    rand = 1
    boxes = boxes.copy()
    for i in range(boxes.shape[0]):
        x1, y1, x2, y2 = boxes[i]
        center_x = (x1 + x2) / s(2)
        center_y = (y1 + y2) / s(2)
        h = y2 - y1
        w = x2 - x1
        extend_h = s(1 + rand * Y_EXT) * h
        extend_w = s(1 + rand * X_EXT) * w
        if extend_w > W_H_RATIO * extend_h:
            extend_h = extend_w * 1.0 / W_H_RATIO
        else:
            extend_w = extend_h * 1.0 * W_H_RATIO
        boxes[i] = np.array(
            [center_x - extend_w / 2, center_y - extend_h / 2, center_x + extend_w / 2, center_y + extend_h / 2],
            dtype=np.float32,
        )
    return boxes


def _official_affine(bbox: np.ndarray, s=literal) -> np.ndarray:
    """RandomBoxAffine.apply + get_affine_transform with scale 1 and rotation 0."""
    scale, rot = 1, 0
    center = np.array([(bbox[0] + bbox[2]) / s(2), (bbox[1] + bbox[3]) / s(2)], dtype=np.float32)
    bbox_shape = np.array([bbox[3] - bbox[1], bbox[2] - bbox[0]], dtype=np.float32)
    dst_w, dst_h = INPUT_SHAPE[1], INPUT_SHAPE[0]
    dst_center = np.array([dst_w * 0.5, dst_h * 0.5], dtype=np.float32)
    scale = dst_w / (bbox_shape[1] * s(scale))
    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_point = [0, 1 * -0.5]
    src_dir = [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]
    dst_dir = np.array([0, scale * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = dst_center
    dst[1, :] = dst_center + dst_dir

    def third(a, b):
        direct = a - b
        return b + np.array([-direct[1], direct[0]], dtype=np.float32)

    src[2:, :] = third(src[0, :], src[1, :])
    dst[2:, :] = third(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def _official_find_keypoints(pred: np.ndarray, bbox: np.ndarray, s=literal) -> np.ndarray:
    """find_keypoints of test.py (heat_range 255, border 10, kernel 17, second_value_aug)."""
    heat_prob = pred.copy()
    heat_prob = heat_prob / 255.0 + 1
    border = 10
    pred_aug = np.zeros((pred.shape[0], pred.shape[1] + 2 * border, pred.shape[2] + 2 * border), dtype=np.float32)
    pred_aug[:, border:-border, border:-border] = pred.copy()
    for i in range(pred_aug.shape[0]):
        pred_aug[i] = cv2.GaussianBlur(pred_aug[i], (17, 17), 0)
    results = np.zeros((pred_aug.shape[0], 3), dtype=np.float32)
    for i in range(pred_aug.shape[0]):
        lb = pred_aug[i].argmax()
        y, x = np.unravel_index(lb, pred_aug[i].shape)
        y -= border
        x -= border
        pred_aug[i, y, x] = 0
        for delta in (0.35, 0.15, 0.05):
            lb = pred_aug[i].argmax()
            py, px = np.unravel_index(lb, pred_aug[i].shape)
            pred_aug[i, py, px] = 0
            py -= border + y
            px -= border + x
            ln = (px ** 2 + py ** 2) ** 0.5
            if ln > 1e-3:
                x += delta * px / ln
                y += delta * py / ln
        x = s(max(0, min(x, OUTPUT_SHAPE[1] - 1)))
        y = s(max(0, min(y, OUTPUT_SHAPE[0] - 1)))
        skeleton_score = heat_prob[i, int(round(y)), int(round(x))]
        stride = INPUT_SHAPE[1] / OUTPUT_SHAPE[1]
        x = (x + 0.5) * stride - 0.5
        y = (y + 0.5) * stride - 0.5
        left, top, right, bottom = bbox
        x = x / INPUT_SHAPE[1] * (right - left) + left
        y = y / INPUT_SHAPE[0] * (bottom - top) + top
        results[i, 0] = x
        results[i, 1] = y
        results[i, 2] = skeleton_score
    return results


def _random_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """xyxy float32 boxes as the official dataset makes them (float64 x + w, cast), with
    awkward sizes: tiny, huge, zero width, zero height, zero size, negative corners."""
    x = rng.uniform(-200, 3000, count)
    y = rng.uniform(-200, 3000, count)
    w = rng.uniform(0, 900, count) * rng.choice([1e-3, 1.0, 1.0, 1.0], count)
    h = rng.uniform(0, 900, count) * rng.choice([1e-3, 1.0, 1.0, 1.0], count)
    kind = rng.integers(0, 10, count)
    w[kind == 0] = 0.0
    h[kind == 1] = 0.0
    w[kind == 2] = h[kind == 2] = 0.0
    exact = kind == 3  # boxes on the 0.75 boundary and with round numbers
    w[exact] = np.round(w[exact])
    h[exact] = np.round(w[exact] / 0.75)
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)


def test_extend_box_is_bit_identical_to_the_official_per_box_code():
    boxes = _random_boxes(np.random.default_rng(15), 20_000)
    rules, s = official_rules()
    with rules():
        expected = _official_extend_boxes(boxes, s)
    ours = extend_box(boxes, (X_EXT, Y_EXT), W_H_RATIO)
    assert ours.dtype == np.float32
    mismatched = np.flatnonzero((ours.view(np.uint32) != expected.view(np.uint32)).any(axis=1))
    assert mismatched.size == 0, f"{mismatched.size} boxes differ, e.g. {boxes[mismatched[0]]}: {ours[mismatched[0]]} != {expected[mismatched[0]]}"
    # One box at a time gives the same bits as the batch.
    for index in (0, 1, 2, 3, 17):
        np.testing.assert_array_equal(extend_box(boxes[index], (X_EXT, Y_EXT), W_H_RATIO).view(np.uint32),
                                      expected[index].view(np.uint32))


def test_float32_extension_would_differ_for_many_boxes():
    """The parity test above can fail: computing in float32 (the old code) moves many boxes."""
    boxes = _random_boxes(np.random.default_rng(16), 5_000)
    rules, s = official_rules()
    with rules():
        expected = _official_extend_boxes(boxes, s)
    x1, y1, x2, y2 = boxes.T
    ew, eh = np.float32(1.1) * (x2 - x1), np.float32(1.1) * (y2 - y1)
    wider = ew > np.float32(0.75) * eh
    eh = np.where(wider, ew / np.float32(0.75), eh)
    ew = np.where(wider, ew, eh * np.float32(0.75))
    cx, cy = (x1 + x2) / np.float32(2), (y1 + y2) / np.float32(2)
    in_float32 = np.stack([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], axis=1).astype(np.float32)
    assert (in_float32 != expected).any(axis=1).mean() > 0.1


def test_crop_matrix_and_crop_are_bit_identical_to_the_official_affine():
    rng = np.random.default_rng(151)
    image = rng.normal(0, 1, (480, 640, 3)).astype(np.float32)
    boxes = _random_boxes(rng, 2_000)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0])]  # a zero-width extended box has no crop matrix
    ext = extend_box(boxes, (X_EXT, Y_EXT), W_H_RATIO)
    rules, s = official_rules()
    with rules():
        for box in ext:
            np.testing.assert_array_equal(crop_affine(box, INPUT_SHAPE), _official_affine(box, s))
    with rules():
        for box in ext[:40]:
            expected = cv2.warpAffine(image, _official_affine(box, s), (192, 256), flags=cv2.INTER_LINEAR, borderValue=0)
            np.testing.assert_array_equal(crop_person(image, box, INPUT_SHAPE), expected.transpose(2, 0, 1))


def _random_heatmaps(rng: np.random.Generator, count: int) -> np.ndarray:
    """Peaks at random sub-pixel places with noise; some flat or all-negative maps."""
    grid_y, grid_x = np.mgrid[0:64, 0:48].astype(np.float64)
    maps = np.empty((count, 17, 64, 48), np.float32)
    for n in range(count):
        for k in range(17):
            cx, cy = rng.uniform(-3, 50), rng.uniform(-3, 66)
            peak = rng.uniform(-20, 300)
            sigma = rng.uniform(0.7, 4)
            field = peak * np.exp(-((grid_x - cx) ** 2 + (grid_y - cy) ** 2) / (2 * sigma ** 2))
            maps[n, k] = field + rng.normal(0, rng.choice([0.0, 1.0, 8.0]), field.shape)
    maps[0, 0] = 0.0
    maps[0, 1] = -5.0
    return maps


def test_decoded_keypoints_are_bit_identical_to_the_official_find_keypoints():
    rng = np.random.default_rng(1515)
    count = 24
    heatmaps = _random_heatmaps(rng, count)
    ext = extend_box(_random_boxes(rng, count), (X_EXT, Y_EXT), W_H_RATIO)
    ours = decode_heatmaps(heatmaps, ext, INPUT_SHAPE)
    rules, s = official_rules()
    with rules():
        for n in range(count):
            expected = _official_find_keypoints(heatmaps[n], ext[n], s)
            np.testing.assert_array_equal(ours[n].view(np.uint32), expected.view(np.uint32), err_msg=f"person {n}, box {ext[n]}")


def test_mapping_back_uses_the_float32_box_width():
    """A box whose float32 width (x2 - x1) is not its exact width: the official float32 value wins."""
    heatmaps = np.zeros((1, 17, 64, 48), np.float32)
    for k in range(17):  # a peak and a runner-up per joint, so the keypoints sit off the pixel grid
        heatmaps[0, k, 3 + 3 * k, 2 + 2 * k] = 255.0
        heatmaps[0, k, 4 + 3 * k, 2 + 2 * k] = 200.0
    ext = np.array([[0.123456789, -0.000712, 170.9, 500.3]], np.float32)
    assert float(ext[0, 2] - ext[0, 0]) != float(ext[0, 2]) - float(ext[0, 0])
    ours = decode_heatmaps(heatmaps, ext, INPUT_SHAPE)
    rules, s = official_rules()
    with rules():
        expected = _official_find_keypoints(heatmaps[0], ext[0], s)
    np.testing.assert_array_equal(ours[0].view(np.uint32), expected.view(np.uint32))


def test_numpy1_typed_transcription_is_the_literal_one_under_numpy1_rules():
    """The typed transcription (what NumPy 2 runs) gives the literal code's bits under NumPy 1.x
    rules: extension, crop matrix and decoder, clipped keypoints (x = 0 and x = 47) included."""
    rng = np.random.default_rng(1516)
    boxes = _random_boxes(rng, 3_000)
    heatmaps = _random_heatmaps(rng, 6)
    heatmaps[1, :, :, 0] = heatmaps[1, :, :, 47] = 400.0  # peaks on the left and right edges
    with numpy1_scalar_promotion():
        literal_ext = _official_extend_boxes(boxes)
        typed_ext = _official_extend_boxes(boxes, numpy1_typed)
        np.testing.assert_array_equal(literal_ext.view(np.uint32), typed_ext.view(np.uint32))
        for box in literal_ext[literal_ext[:, 2] > literal_ext[:, 0]][:300]:
            np.testing.assert_array_equal(_official_affine(box), _official_affine(box, numpy1_typed))
        for n in range(len(heatmaps)):
            np.testing.assert_array_equal(_official_find_keypoints(heatmaps[n], literal_ext[n]).view(np.uint32),
                                          _official_find_keypoints(heatmaps[n], literal_ext[n], numpy1_typed).view(np.uint32))


def test_literal_transcription_differs_under_numpy2_rules():
    """Why the typed transcription exists: run as written under NumPy 2's rules, the official
    extension lands on other float32 values for some boxes (so the checks above can fail)."""
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("NumPy 1.x has only its own rules")
    boxes = _random_boxes(np.random.default_rng(1517), 3_000)
    as_numpy1 = _official_extend_boxes(boxes, numpy1_typed)
    as_written = _official_extend_boxes(boxes)
    assert (as_written != as_numpy1).any(axis=1).mean() > 0.01
