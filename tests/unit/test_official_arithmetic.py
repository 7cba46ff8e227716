"""Bit parity with a literal transcription of the official per-box arithmetic (issue 15, item 15).

The official test (MegEngine/Models 0.x, keypoints `ExtendBoxes._apply_boxes`,
`RandomBoxAffine.apply` + `get_affine_transform`, `find_keypoints`) works on numpy
scalars one box at a time, so NumPy 1.x's scalar promotion decides its dtypes: a
float32 corner divided by 2 or scaled by a Python float becomes float64 (reference
§3.2-§4.3). tests/spec.py restates that code line by line (the suite's one transcription,
same operations in the same order and grouping) and the vectorised
implementation must match them bit for bit, zero-width and zero-size boxes included.

NumPy 2 (NEP 50) keeps `np.float32(x) / 2` in float32, and NumPy >= 2.2 has no legacy mode
to run the literal code in: there the transcription types every Python number that meets a
numpy scalar as NumPy 1.x did (`numpy1_typed`), which gives the same dtypes under any NumPy.
Where NumPy 1.x rules can run, the typed and the literal code are checked equal bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mspn_cli.pose.postprocess import decode_heatmaps
from mspn_cli.pose.preprocess import crop_affine, crop_person, extend_box
from tests.spec import (
    INPUT_SHAPE, W_H_RATIO, X_EXT, Y_EXT, legacy_promotion_available, literal, numpy1_scalar_promotion, numpy1_typed,
)
from tests.spec import official_affine as _official_affine
from tests.spec import official_extend_boxes as _official_extend_boxes
from tests.spec import official_find_keypoints as _official_find_keypoints


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
    with numpy1_scalar_promotion():
        expected = _official_extend_boxes(boxes)
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
    with numpy1_scalar_promotion():
        expected = _official_extend_boxes(boxes)
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
    with numpy1_scalar_promotion():
        for box in ext:
            np.testing.assert_array_equal(crop_affine(box, INPUT_SHAPE), _official_affine(box))
    with numpy1_scalar_promotion():
        for box in ext[:40]:
            expected = cv2.warpAffine(image, _official_affine(box), (192, 256), flags=cv2.INTER_LINEAR, borderValue=0)
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
    with numpy1_scalar_promotion():
        for n in range(count):
            expected = _official_find_keypoints(heatmaps[n], ext[n])
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
    with numpy1_scalar_promotion():
        expected = _official_find_keypoints(heatmaps[0], ext[0])
    np.testing.assert_array_equal(ours[0].view(np.uint32), expected.view(np.uint32))


def test_numpy1_typed_transcription_is_the_literal_one_under_numpy1_rules():
    """The typed transcription (what NumPy 2 runs) gives the literal code's bits under NumPy 1.x
    rules: extension, crop matrix and decoder, clipped keypoints (x = 0 and x = 47) included."""
    if not legacy_promotion_available():
        pytest.skip("NumPy >= 2.2 has no legacy promotion mode to run the literal transcription in")
    rng = np.random.default_rng(1516)
    boxes = _random_boxes(rng, 3_000)
    heatmaps = _random_heatmaps(rng, 6)
    heatmaps[1, :, :, 0] = heatmaps[1, :, :, 47] = 400.0  # peaks on the left and right edges
    with numpy1_scalar_promotion():
        literal_ext = _official_extend_boxes(boxes, literal)
        typed_ext = _official_extend_boxes(boxes, numpy1_typed)
        np.testing.assert_array_equal(literal_ext.view(np.uint32), typed_ext.view(np.uint32))
        for box in literal_ext[literal_ext[:, 2] > literal_ext[:, 0]][:300]:
            np.testing.assert_array_equal(_official_affine(box, literal), _official_affine(box, numpy1_typed))
        for n in range(len(heatmaps)):
            np.testing.assert_array_equal(_official_find_keypoints(heatmaps[n], literal_ext[n], literal).view(np.uint32),
                                          _official_find_keypoints(heatmaps[n], literal_ext[n], numpy1_typed).view(np.uint32))


def test_literal_transcription_differs_under_numpy2_rules():
    """Why the typed transcription exists: run as written under NumPy 2's rules, the official
    extension lands on other float32 values for some boxes (so the checks above can fail)."""
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("NumPy 1.x has only its own rules")
    boxes = _random_boxes(np.random.default_rng(1517), 3_000)
    as_numpy1 = _official_extend_boxes(boxes, numpy1_typed)
    as_written = _official_extend_boxes(boxes, literal)
    assert (as_written != as_numpy1).any(axis=1).mean() > 0.01
