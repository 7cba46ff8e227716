"""The lean hot path gives exactly the results of the plain formulas (issue 12 item 5)."""

from __future__ import annotations

import numpy as np
import pytest

from mspn_cli.pose.preprocess import DEFAULT_MEAN, DEFAULT_STD, normalize_image


def _formula(image, mean, std):
    return (image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("mean, std", [(DEFAULT_MEAN, DEFAULT_STD), ((0.1, 200.0, 3.3), (1.0, 0.3, 77.0))])
def test_lookup_normalisation_is_the_formula_bit_for_bit(mean, std):
    # Every 8-bit value in every channel, in a contiguous and in a strided view.
    values = np.arange(256, dtype=np.uint8)
    image = np.stack(np.meshgrid(values, values[::-1], indexing="ij"), axis=-1)[:, :, [0, 1, 0]]
    image = np.ascontiguousarray(image)
    assert _same_bits(normalize_image(image, mean, std), _formula(image, mean, std))
    strided = image[::3, ::2]
    assert _same_bits(normalize_image(strided, mean, std), _formula(strided, mean, std))


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (480, 640, 3)])
def test_lookup_normalisation_any_size(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert _same_bits(normalize_image(image), _formula(image, DEFAULT_MEAN, DEFAULT_STD))


def test_non_8bit_input_still_normalised_by_the_formula():
    image = np.random.default_rng(1).uniform(0, 255, (6, 4, 3)).astype(np.float32)
    assert _same_bits(normalize_image(image), _formula(image, DEFAULT_MEAN, DEFAULT_STD))
