"""Detector input preparation: resize, pad, batch (reference §7.3, §7.4).

Pure numpy/OpenCV. Normalisation is deliberately absent: the RetinaNet graph applies
mean/std itself, after padding, so the padding must be 0 in raw pixel space here.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from mspn_cli.errors import InputError

DEFAULT_SHORT_SIDE = 800
DEFAULT_MAX_SIDE = 1333
DEFAULT_SIZE_DIVISOR = 32

# (resized_h, resized_w, orig_h, orig_w), the order of the official `im_info`.
ImInfo = Tuple[int, int, int, int]


def _check_bgr_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(f"detector input must be a numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"detector input must be an H x W x 3 BGR image, got shape {image.shape}")
    if image.dtype != np.uint8:
        # Resizing uint8 rounds to integers; other dtypes would silently give other pixels.
        raise InputError(f"detector input must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"detector input is empty (shape {image.shape})")


def detector_scale(
    height: int, width: int, short_side: int = DEFAULT_SHORT_SIDE, max_side: int = DEFAULT_MAX_SIDE
) -> float:
    """Scale that brings the short side to `short_side` unless the long side would exceed `max_side`."""
    if height < 1 or width < 1:
        raise InputError(f"image size must be positive, got {height}x{width}")
    scale = short_side / min(height, width)
    if scale * max(height, width) > max_side:
        scale = max_side / max(height, width)
    return scale


def resized_shape(
    height: int, width: int, short_side: int = DEFAULT_SHORT_SIDE, max_side: int = DEFAULT_MAX_SIDE
) -> Tuple[int, int]:
    """(new_h, new_w) with Python's round (half to even), as the official evaluator."""
    scale = detector_scale(height, width, short_side, max_side)
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def resize_for_detector(
    image_bgr: np.ndarray, short_side: int = DEFAULT_SHORT_SIDE, max_side: int = DEFAULT_MAX_SIDE
) -> Tuple[np.ndarray, float, float]:
    """Resize an H x W x 3 uint8 image; returns (resized, scale_y, scale_x).

    The two scales are the realised ones (new_h / h, new_w / w), which differ
    slightly from `detector_scale` because of rounding; they are what maps boxes back.
    """
    _check_bgr_image(image_bgr)
    height, width = image_bgr.shape[:2]
    new_h, new_w = resized_shape(height, width, short_side, max_side)
    if (new_h, new_w) == (height, width):
        resized = image_bgr.copy()
    else:
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, new_h / height, new_w / width


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def pad_to_multiple(array: np.ndarray, divisor: int = DEFAULT_SIZE_DIVISOR) -> np.ndarray:
    """Zero-pad the last two axes (H, W) at the bottom/right up to multiples of `divisor`.

    Accepts C x H x W or N x C x H x W (any array whose last two axes are H, W).
    """
    if divisor < 1:
        raise InputError(f"size divisor must be >= 1, got {divisor}")
    if array.ndim < 2:
        raise InputError(f"cannot pad an array of shape {array.shape}")
    height, width = array.shape[-2:]
    pad_h = _round_up(height, divisor) - height
    pad_w = _round_up(width, divisor) - width
    if pad_h == 0 and pad_w == 0:
        return array
    padding = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(array, padding, mode="constant", constant_values=0)


def prepare_detector_batch(
    images: Sequence[np.ndarray],
    short_side: int = DEFAULT_SHORT_SIDE,
    max_side: int = DEFAULT_MAX_SIDE,
    divisor: int = DEFAULT_SIZE_DIVISOR,
) -> Tuple[np.ndarray, List[ImInfo]]:
    """Resize every image and stack them into one zero-padded batch.

    Returns (batch, im_infos): batch is N x 3 x Hmax x Wmax float32 raw BGR pixels,
    Hmax/Wmax the largest resized sizes rounded up to `divisor`; each image sits in
    the top-left corner. im_infos[i] = (resized_h, resized_w, orig_h, orig_w).
    """
    if len(images) == 0:
        raise InputError("no images to detect on")
    resized_images = []
    im_infos: List[ImInfo] = []
    for image in images:
        resized, _, _ = resize_for_detector(image, short_side, max_side)
        resized_images.append(resized)
        im_infos.append((resized.shape[0], resized.shape[1], image.shape[0], image.shape[1]))
    batch_h = _round_up(max(info[0] for info in im_infos), divisor)
    batch_w = _round_up(max(info[1] for info in im_infos), divisor)
    batch = np.zeros((len(images), 3, batch_h, batch_w), dtype=np.float32)
    for index, resized in enumerate(resized_images):
        height, width = resized.shape[:2]
        batch[index, :, :height, :width] = resized.transpose(2, 0, 1)
    return batch, im_infos


__all__ = [
    "DEFAULT_MAX_SIDE",
    "DEFAULT_SHORT_SIDE",
    "DEFAULT_SIZE_DIVISOR",
    "ImInfo",
    "detector_scale",
    "pad_to_multiple",
    "prepare_detector_batch",
    "resize_for_detector",
    "resized_shape",
]
