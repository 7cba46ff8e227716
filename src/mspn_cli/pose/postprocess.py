"""MSPN post-processing: flip averaging, the official heatmap decoder, mapping back.

Pure numpy/cv2 and vectorised over persons and joints. The decoder reproduces the
official `find_keypoints` including its off-by-border quirk (reference §4.2).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from mspn_cli.skeleton import FLIP_ORDER

__all__ = [
    "average_flip",
    "decode_heatmaps",
    "decode_heatmaps_to_crop",
    "instance_scores",
]

# OpenCV 4 filters take at most 512 channels at once, OpenCV 5 (CV_CN_MAX) 128. Channels are
# blurred independently, so the chunk size does not change a bit (tests/unit/test_lazy_crops.py).
_MAX_CHANNELS = 128


def average_flip(heatmaps: np.ndarray, flipped_heatmaps: np.ndarray, flip_order: Sequence[int] = FLIP_ORDER) -> np.ndarray:
    """Mean of the prediction and the mirrored prediction of the mirrored crop.

    Both N x K x H x W. Channel k of the flipped output holds joint flip_order[k];
    the W axis is reversed without a one-pixel shift (as the official test).
    """
    restored = flipped_heatmaps[:, list(flip_order), :, ::-1]
    return ((heatmaps + restored) / 2).astype(np.float32)


def _blur_padded(heatmaps: np.ndarray, border: int, kernel: int) -> np.ndarray:
    """Zero-pad each map by `border` and Gaussian-blur it: returns M x Hp x Wp float32."""
    count, height, width = heatmaps.shape
    padded = np.zeros((height + 2 * border, width + 2 * border, count), dtype=np.float32)
    padded[border : border + height, border : border + width, :] = heatmaps.transpose(1, 2, 0)
    blurred = np.empty_like(padded)
    for start in range(0, count, _MAX_CHANNELS):
        stop = min(start + _MAX_CHANNELS, count)
        chunk = np.ascontiguousarray(padded[:, :, start:stop])
        out = cv2.GaussianBlur(chunk, (kernel, kernel), 0)
        blurred[:, :, start:stop] = out.reshape(chunk.shape)
    return blurred.transpose(2, 0, 1)


def decode_heatmaps_to_crop(
    heatmaps: np.ndarray,
    heat_range: float = 255.0,
    blur_kernel: int = 17,
    border: int = 10,
    shift_steps: Sequence[float] = (0.35, 0.15, 0.05),
) -> Tuple[np.ndarray, np.ndarray]:
    """Decode N x K x H x W heatmaps to sub-pixel heatmap coordinates and scores.

    Returns (xy N x K x 2 float64 in heatmap pixels, scores N x K float64).
    """
    n, k, height, width = heatmaps.shape
    maps = heatmaps.reshape(n * k, height, width).astype(np.float32)
    padded_h, padded_w = height + 2 * border, width + 2 * border
    flat = _blur_padded(maps, border, blur_kernel).reshape(n * k, padded_h * padded_w)
    rows = np.arange(n * k)

    peak = np.argmax(flat, axis=1)
    y = (peak // padded_w - border).astype(np.float64)
    x = (peak % padded_w - border).astype(np.float64)
    # The official code zeroes (y, x) in the *padded* map: unpadded coordinates, with
    # numpy's wrap-around for negative indices. The true peak survives; reproduced on purpose.
    quirk = (y.astype(np.int64) % padded_h) * padded_w + (x.astype(np.int64) % padded_w)
    flat[rows, quirk] = 0
    for step in shift_steps:
        nxt = np.argmax(flat, axis=1)
        flat[rows, nxt] = 0
        # qy - (border + y), grouped as the official code: (qy - border) - y differs in the last bit.
        dy = nxt // padded_w - (border + y)
        dx = nxt % padded_w - (border + x)
        length = np.sqrt(dx * dx + dy * dy)
        move = length > 1e-3
        safe = np.where(move, length, 1.0)
        x = np.where(move, x + step * dx / safe, x)
        y = np.where(move, y + step * dy / safe, y)
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)

    # Scores come from the unblurred map at the rounded position (half to even, as Python's round).
    lookup = maps.reshape(n * k, height * width)[rows, (np.rint(y) * width + np.rint(x)).astype(np.int64)]
    scores = lookup / np.float32(heat_range) + np.float32(1)
    xy = np.stack([x, y], axis=1).reshape(n, k, 2)
    return xy, scores.reshape(n, k)


def decode_heatmaps(
    heatmaps: np.ndarray,
    ext_boxes: np.ndarray,
    input_size: Tuple[int, int] = (256, 192),
    heat_range: float = 255.0,
    blur_kernel: int = 17,
    border: int = 10,
    shift_steps: Sequence[float] = (0.35, 0.15, 0.05),
) -> np.ndarray:
    """Flip-averaged N x K x h x w heatmaps + extended boxes N x 4 -> N x K x 3 (x, y, score).

    Coordinates are image pixels, mapped back through the *extended* box (the exact
    inverse of the crop affine; reference §4.3).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    ext_boxes = np.asarray(ext_boxes, dtype=np.float32).reshape(-1, 4)
    n, k, height, width = heatmaps.shape
    if n != len(ext_boxes):
        raise ValueError(f"{n} heatmap sets but {len(ext_boxes)} boxes")
    if n == 0:
        return np.zeros((0, k, 3), dtype=np.float32)
    xy, scores = decode_heatmaps_to_crop(heatmaps, heat_range, blur_kernel, border, shift_steps)
    in_h, in_w = input_size
    crop_x = (xy[..., 0] + 0.5) * (in_w / width) - 0.5
    crop_y = (xy[..., 1] + 0.5) * (in_h / height) - 0.5
    x1, y1, x2, y2 = (ext_boxes[:, i : i + 1] for i in range(4))
    # The box size is a float32 difference, as in the official code; the rest is float64.
    width32, height32 = (x2 - x1).astype(np.float64), (y2 - y1).astype(np.float64)
    img_x = crop_x / in_w * width32 + x1.astype(np.float64)
    img_y = crop_y / in_h * height32 + y1.astype(np.float64)
    return np.stack([img_x, img_y, scores], axis=2).astype(np.float32)


def instance_scores(keypoints: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
    """Official instance score: mean keypoint score x detection score."""
    if len(keypoints) == 0:
        return np.zeros((0,), dtype=np.float32)
    return (keypoints[:, :, 2].mean(axis=1) * np.asarray(box_scores, dtype=np.float32)).astype(np.float32)
