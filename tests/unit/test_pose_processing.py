"""Numerical tests of MSPN pre- and post-processing against the reference spec (§3, §4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mspn_cli.pose.postprocess import average_flip, decode_heatmaps, instance_scores
from mspn_cli.pose.postprocess import decode_heatmaps_to_crop
from mspn_cli.pose.preprocess import crop_affine, crop_person, crop_persons, extend_box, normalize_image
from tests.spec import FLIP_ORDER, MSPN_MEAN, MSPN_STD, official_find_keypoints, numpy1_scalar_promotion


# ----------------------------------------------------------------- normalisation
def test_normalisation_applies_rgb_statistics_to_bgr_channels():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 200  # B
    image[..., 2] = 10  # R
    out = normalize_image(image)
    assert out.dtype == np.float32
    # Channel 0 (blue) uses the *red* statistics 123.675 / 58.395: the weights' quirk.
    assert out[0, 0, 0] == pytest.approx((200 - MSPN_MEAN[0]) / MSPN_STD[0], abs=1e-6)
    assert out[0, 0, 1] == pytest.approx((0 - MSPN_MEAN[1]) / MSPN_STD[1], abs=1e-6)
    assert out[0, 0, 2] == pytest.approx((10 - MSPN_MEAN[2]) / MSPN_STD[2], abs=1e-6)


# ----------------------------------------------------------------- box extension
def test_extend_box_tall_box_widens_to_aspect():
    ext = extend_box([100, 50, 200, 450])  # w 100, h 400
    # eh = 440 -> ew = 0.75 * 440 = 330, centre (150, 250)
    np.testing.assert_allclose(ext, [150 - 165, 250 - 220, 150 + 165, 250 + 220], atol=1e-4)
    assert ext.dtype == np.float32


def test_extend_box_wide_box_grows_height():
    ext = extend_box([0, 0, 300, 100])  # ew = 330 > 0.75 * 110 -> eh = 440
    np.testing.assert_allclose(ext, [150 - 165, 50 - 220, 150 + 165, 50 + 220], atol=1e-4)


def test_extend_box_applies_each_axis_its_own_extension():
    """The shipped x and y extensions are equal (0.1); a config may set them apart (§3.2)."""
    ext = extend_box([0, 0, 300, 100], (0.3, 0.1), 0.75)  # ew = 390 > 0.75 * 110 -> eh = 520
    np.testing.assert_allclose(ext, [150 - 195, 50 - 260, 150 + 195, 50 + 260], atol=1e-4)
    ext = extend_box([0, 0, 100, 400], (0.1, 0.3), 0.75)  # eh = 520, ew = 110 <= 390 -> ew = 390
    np.testing.assert_allclose(ext, [50 - 195, 200 - 260, 50 + 195, 200 + 260], atol=1e-4)


def test_extend_box_batch_and_aspect_exact():
    boxes = np.array([[10, 20, 30, 90], [5, 5, 205, 55], [0, 0, 75, 100]], np.float32)
    ext = extend_box(boxes)
    assert ext.shape == (3, 4)
    widths, heights = ext[:, 2] - ext[:, 0], ext[:, 3] - ext[:, 1]
    np.testing.assert_allclose(widths / heights, 0.75, rtol=1e-5)
    np.testing.assert_allclose((ext[:, 0] + ext[:, 2]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2, atol=1e-4)
    # Boundary case ew == 0.75 * eh takes the "else" branch and keeps both sizes.
    np.testing.assert_allclose(widths[2], 1.1 * 75, rtol=1e-6)


# ----------------------------------------------------------------- affine crop
def test_crop_affine_maps_extended_box_onto_canvas():
    ext = np.array([40.0, 30.0, 136.0, 158.0], np.float32)  # 96 x 128, scale 2
    matrix = crop_affine(ext)
    corners = np.array([[40, 30, 1], [136, 158, 1], [88, 94, 1]], np.float64)
    mapped = corners @ matrix.T
    np.testing.assert_allclose(mapped, [[0, 0], [192, 256], [96, 128]], atol=1e-3)
    np.testing.assert_allclose(matrix, [[2, 0, -80], [0, 2, -60]], atol=1e-4)


def test_crop_is_cut_from_normalised_image_with_zero_border():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 100, 3), dtype=np.uint8)
    norm = normalize_image(image)
    ext = extend_box([-50, -50, 20, 60])  # mostly outside the image
    crop = crop_person(norm, ext)
    assert crop.shape == (3, 256, 192) and crop.dtype == np.float32
    # Top-left corner is outside the image: 0 in normalised space (the mean colour).
    assert np.all(crop[:, 0, 0] == 0)
    # Equals cv2.warpAffine with the 3-point matrix, bit for bit.
    expected = cv2.warpAffine(norm, crop_affine(ext), (192, 256), flags=cv2.INTER_LINEAR, borderValue=0)
    np.testing.assert_array_equal(crop, expected.transpose(2, 0, 1))
    batch = crop_persons(norm, np.stack([ext, ext]))
    np.testing.assert_array_equal(batch[1], crop)
    assert crop_persons(norm, np.zeros((0, 4))).shape == (0, 3, 256, 192)


def test_crop_pixel_lands_where_the_affine_says():
    image = np.zeros((300, 300, 3), np.uint8)
    image[150, 120] = 255
    norm = normalize_image(image)
    ext = np.array([60.0, 50.0, 156.0, 178.0], np.float32)  # scale 2
    crop = crop_person(norm, ext)
    peak = np.unravel_index(np.argmax(crop[0]), crop[0].shape)
    assert peak == (2 * (150 - 50), 2 * (120 - 60))


# ----------------------------------------------------------------- flip test
def test_average_flip_reorders_channels_and_mirrors():
    rng = np.random.default_rng(1)
    heatmaps = rng.normal(size=(2, 17, 64, 48)).astype(np.float32)
    flipped = rng.normal(size=(2, 17, 64, 48)).astype(np.float32)
    out = average_flip(heatmaps, flipped)
    k = 5  # left shoulder: flipped channel 6 holds it
    np.testing.assert_allclose(out[0, k], (heatmaps[0, k] + flipped[0, FLIP_ORDER[k], :, ::-1]) / 2, atol=1e-6)
    # A symmetric prediction survives the flip average unchanged.
    mirrored = heatmaps[:, list(FLIP_ORDER), :, ::-1]
    np.testing.assert_allclose(average_flip(heatmaps, mirrored), heatmaps, atol=1e-6)


# ----------------------------------------------------------------- decoder
def _gaussian(h=64, w=48, cx=20.0, cy=30.0, sigma=2.0, peak=255.0):
    ys, xs = np.mgrid[0:h, 0:w]
    return (peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))).astype(np.float32)


def _maps_zoo():
    rng = np.random.default_rng(7)
    zoo = [
        _gaussian(cx=20, cy=30),
        _gaussian(cx=20.4, cy=30.3),  # sub-pixel peak
        np.zeros((64, 48), np.float32),  # degenerate: all zero
        -np.abs(rng.normal(size=(64, 48))).astype(np.float32) * 50,  # all negative
        np.full((64, 48), 7.5, np.float32),  # flat
        _gaussian(cx=0, cy=0),  # peak on the top-left border
        _gaussian(cx=47, cy=63),  # peak on the bottom-right border
        _gaussian(cx=10, cy=10) + _gaussian(cx=30, cy=50),  # two equal peaks (tie)
        rng.normal(scale=60, size=(64, 48)).astype(np.float32),  # noise
    ]
    tie = np.zeros((64, 48), np.float32)
    tie[20, 10] = tie[20, 11] = 200  # exact tie of neighbouring pixels
    zoo.append(tie)
    return zoo


def test_decoder_matches_literal_spec_transcription_on_edge_cases():
    zoo = _maps_zoo()
    maps = np.zeros((1, 17, 64, 48), np.float32)
    for index, hm in enumerate(zoo):
        maps[0, index] = hm
    xy, scores = decode_heatmaps_to_crop(maps)
    with numpy1_scalar_promotion():
        expected = official_find_keypoints(maps[0])  # heatmap pixels: no box given
    for index, hm in enumerate(zoo):
        x, y, score = expected[index]
        assert xy[0, index, 0] == pytest.approx(x, abs=1e-9), index
        assert xy[0, index, 1] == pytest.approx(y, abs=1e-9), index
        assert scores[0, index] == pytest.approx(score, abs=1e-6), index


def test_decoder_quirk_first_step_does_not_move():
    # A single-pixel peak: blurred peak at (20, 30); the 0.35 step never moves (quirk),
    # the next two moves are 0.15 and 0.05 towards neighbours, so 0.1 <= |shift| <= 0.2.
    hm = np.zeros((1, 1, 64, 48), np.float32)
    hm[0, 0, 30, 20] = 255
    xy, scores = decode_heatmaps_to_crop(hm)
    shift = np.hypot(xy[0, 0, 0] - 20, xy[0, 0, 1] - 30)
    assert 0.1 - 1e-9 <= shift <= 0.2 + 1e-9  # never the 0.35 step
    assert scores[0, 0] == pytest.approx(2.0)  # 255 / 255 + 1


def test_degenerate_maps_end_at_heatmap_origin():
    xy, _ = decode_heatmaps_to_crop(np.zeros((1, 2, 64, 48), np.float32))
    np.testing.assert_allclose(xy[0], 0.0)


def test_decode_maps_back_through_the_extended_box():
    ext = np.array([[100.0, 40.0, 196.0, 168.0]], np.float32)  # 96 x 128 => crop scale 2
    hm = np.zeros((1, 17, 64, 48), np.float32)
    for k in range(17):
        hm[0, k] = _gaussian(cx=10 + k, cy=20 + k, sigma=2.0)
    out = decode_heatmaps(hm, ext)
    assert out.shape == (1, 17, 3) and out.dtype == np.float32
    xy, _ = decode_heatmaps_to_crop(hm)
    expected_x = ((xy[0, :, 0] + 0.5) * 4 - 0.5) / 192 * 96 + 100
    expected_y = ((xy[0, :, 1] + 0.5) * 4 - 0.5) / 256 * 128 + 40
    np.testing.assert_allclose(out[0, :, 0], expected_x, atol=1e-3)
    np.testing.assert_allclose(out[0, :, 1], expected_y, atol=1e-3)
    # A Gaussian centred on heatmap pixel (cx, cy) decodes within ~0.2 heatmap px of it.
    true_x = ((10 + np.arange(17) + 0.5) * 4 - 0.5) / 2 + 100
    np.testing.assert_allclose(out[0, :, 0], true_x, atol=0.2 * 4 / 2 + 1e-3)


def test_decode_is_the_inverse_of_the_crop_affine():
    ext = extend_box([57.3, 81.9, 211.4, 390.2])
    matrix = crop_affine(ext)
    inverse = cv2.invertAffineTransform(matrix)
    hm = np.zeros((1, 17, 64, 48), np.float32)
    hm[0, :] = _gaussian(cx=17, cy=41)
    out = decode_heatmaps(hm, ext[None])
    xy, _ = decode_heatmaps_to_crop(hm)
    crop_pt = np.array([(xy[0, 0, 0] + 0.5) * 4 - 0.5, (xy[0, 0, 1] + 0.5) * 4 - 0.5, 1.0])
    np.testing.assert_allclose(out[0, 0, :2], inverse @ crop_pt, atol=1e-3)


def test_decode_zero_persons_and_batch_consistency():
    assert decode_heatmaps(np.zeros((0, 17, 64, 48), np.float32), np.zeros((0, 4))).shape == (0, 17, 3)
    rng = np.random.default_rng(3)
    hm = rng.normal(scale=50, size=(3, 17, 64, 48)).astype(np.float32)
    ext = extend_box(np.array([[0, 0, 50, 100], [10, 10, 90, 70], [5, 6, 7, 8]], np.float32))
    together = decode_heatmaps(hm, ext)
    for i in range(3):
        np.testing.assert_array_equal(decode_heatmaps(hm[i : i + 1], ext[i : i + 1]), together[i : i + 1])
    with pytest.raises(ValueError):
        decode_heatmaps(hm, ext[:2])


def test_instance_score_is_mean_keypoint_score_times_box_score():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, :, 2] = 1.5
    kps[1, :, 2] = np.linspace(1, 2, 17)
    np.testing.assert_allclose(instance_scores(kps, np.array([0.8, 0.5])), [1.2, 0.75], rtol=1e-6)
