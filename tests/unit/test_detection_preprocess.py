"""Detector resizing, padding and batching (reference §7.4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mspn_cli.errors import InputError
from mspn_cli.detection.preprocess import (
    detector_scale,
    pad_to_multiple,
    prepare_detector_batch,
    resize_for_detector,
    resized_shape,
)


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_reference_example_480x640():
    image = _image(480, 640)
    assert detector_scale(480, 640) == pytest.approx(800 / 480)
    resized, scale_y, scale_x = resize_for_detector(image, 800, 1333)
    assert resized.shape == (800, 1067, 3) and resized.dtype == np.uint8
    assert scale_y == 800 / 480 and scale_x == 1067 / 640
    np.testing.assert_array_equal(resized, cv2.resize(image, (1067, 800), interpolation=cv2.INTER_LINEAR))

    batch, im_infos = prepare_detector_batch([image], 800, 1333, 32)
    assert batch.shape == (1, 3, 800, 1088) and batch.dtype == np.float32
    assert im_infos == [(800, 1067, 480, 640)]


def test_long_side_limit():
    # 800 / 500 * 2000 = 3200 > 1333, so the long side decides: 1333 / 2000.
    assert detector_scale(500, 2000) == pytest.approx(1333 / 2000)
    assert resized_shape(500, 2000) == (333, 1333)
    resized, _, _ = resize_for_detector(_image(500, 2000), 800, 1333)
    assert resized.shape == (333, 1333, 3)
    # Exactly at the limit the short side still decides (strict ">").
    assert resized_shape(800, 1333) == (800, 1333)
    assert resized_shape(800, 1334) == (799, 1333)


def test_python_round_half_to_even():
    # 800 / 320 = 2.5 exactly; 401 * 2.5 = 1002.5 rounds to 1002 (not 1003).
    assert resized_shape(320, 401) == (800, 1002)


def test_custom_sizes():
    assert resized_shape(480, 640, short_side=512, max_side=1024) == (512, 683)


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    chw = np.full((3, 50, 70), 7, dtype=np.float32)
    padded = pad_to_multiple(chw, 32)
    assert padded.shape == (3, 64, 96)
    assert (padded[:, :50, :70] == 7).all()
    assert (padded[:, 50:, :] == 0).all() and (padded[:, :, 70:] == 0).all()

    batch = np.ones((2, 3, 64, 33), dtype=np.float32)
    assert pad_to_multiple(batch, 32).shape == (2, 3, 64, 64)
    aligned = np.ones((3, 64, 32), dtype=np.float32)
    assert pad_to_multiple(aligned, 32) is aligned


def test_batch_of_two_sizes():
    landscape, portrait = _image(480, 640, seed=1), _image(640, 480, seed=2)
    batch, im_infos = prepare_detector_batch([landscape, portrait], 800, 1333, 32)
    assert im_infos == [(800, 1067, 480, 640), (1067, 800, 640, 480)]
    assert batch.shape == (2, 3, 1088, 1088) and batch.dtype == np.float32

    for index, (image, (height, width, _, _)) in enumerate(zip([landscape, portrait], im_infos)):
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
        # Raw BGR values, not normalised: the network normalises after padding.
        np.testing.assert_array_equal(batch[index, :, :height, :width], expected.astype(np.float32))
        assert (batch[index, :, height:, :] == 0).all()
        assert (batch[index, :, :, width:] == 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((40, 50), np.uint8),  # grayscale must be converted upstream
        np.zeros((40, 50, 4), np.uint8),  # alpha must be dropped upstream
        np.zeros((40, 50, 3), np.float32),
        np.zeros((0, 50, 3), np.uint8),
    ],
)
def test_rejects_non_bgr_uint8(bad):
    with pytest.raises(InputError):
        prepare_detector_batch([bad])


def test_rejects_empty_batch():
    with pytest.raises(InputError):
        prepare_detector_batch([])
