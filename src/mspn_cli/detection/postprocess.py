"""RetinaNet outputs -> detections: anchors, box decoding, NMS (reference §7.3, §7.5).

Pure numpy. Every function works on ONE image; index the batch first (or pass
`image_index` where offered). Arithmetic is float32 like the official graph, and the
NMS/cap ordering rules are the official ones, ties included.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mspn_cli.config import AnchorConfig, DetectorPostprocessConfig
from mspn_cli.errors import ConfigError, InputError

IOU_DENOMINATOR_FLOOR = 1e-5

# (resized_h, resized_w, orig_h, orig_w)
ImInfo = Tuple[int, int, int, int]

EMPTY_DETECTIONS_SHAPE = (0, 6)

# Above this share of (anchor, class) logits over the score bound, gathering candidates one
# by one costs more than scoring every anchor. A trained RetinaNet (focal-loss prior: class
# biases near -4.6) puts few above it, a random one nearly all. Both ways give the same bits.
SPARSE_SHARE = 0.1


def _anchor_shapes(base_size: float, scales: Sequence[float], ratios: Sequence[float]) -> np.ndarray:
    """K x 2 (w, h) per location: scale is the outer loop, ratio (h / w) the inner one."""
    sizes = np.array([base_size * scale for scale in scales for _ in ratios], dtype=np.float32)
    aspect = np.array([ratio for _ in scales for ratio in ratios], dtype=np.float32)
    widths = np.sqrt(sizes * sizes / aspect)
    heights = aspect * widths
    return np.stack([widths, heights], axis=1)


def generate_anchors(
    feature_shapes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
    base_sizes: Sequence[float],
    scales: Sequence[float],
    ratios: Sequence[float],
    offset: float = 0.5,
) -> np.ndarray:
    """A x 4 float32 anchors (x1, y1, x2, y2) in resized-image pixels.

    Order: level (P3 first), then grid row y, column x, then anchor a (fastest) —
    the same order as `flatten_head_outputs`.
    """
    if not (len(feature_shapes) == len(strides) == len(base_sizes)):
        raise ConfigError(
            f"anchor settings disagree: {len(feature_shapes)} levels, {len(strides)} strides, "
            f"{len(base_sizes)} base sizes"
        )
    per_level = []
    for (height, width), stride, base_size in zip(feature_shapes, strides, base_sizes):
        shapes = _anchor_shapes(base_size, scales, ratios)
        half = np.concatenate([-shapes / 2, shapes / 2], axis=1).astype(np.float32)  # K x 4
        centre_x = (np.arange(width, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
        centre_y = (np.arange(height, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
        grid_y, grid_x = np.meshgrid(centre_y, centre_x, indexing="ij")
        centres = np.stack([grid_x, grid_y, grid_x, grid_y], axis=-1).reshape(-1, 1, 4)  # (h*w) x 1 x 4
        per_level.append((centres + half[None, :, :]).reshape(-1, 4))
    if not per_level:
        return np.zeros((0, 4), dtype=np.float32)
    return np.concatenate(per_level, axis=0).astype(np.float32, copy=False)


def _one_image(array, image_index: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4:
        return array[image_index]
    if array.ndim == 3:
        return array
    raise InputError(f"head output must be C x h x w or N x C x h x w, got shape {array.shape}")


def _flatten_level(level: np.ndarray, values_per_anchor: int) -> np.ndarray:
    channels = level.shape[0]
    if channels % values_per_anchor:
        raise InputError(f"head output has {channels} channels, not a multiple of {values_per_anchor}")
    # C x h x w -> h x w x C -> (h*w*K) x values, so anchors run (y, x, a) with a fastest.
    return level.transpose(1, 2, 0).reshape(-1, values_per_anchor)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # exp overflow for very negative logits correctly gives 0
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


def flatten_head_outputs(
    logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    num_classes: int = 80,
    image_index: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-level head outputs of one image -> (scores A x num_classes, deltas A x 4).

    Each level may be C x h x w (one image) or N x C x h x w, in which case image
    `image_index` is taken. Scores are sigmoid probabilities (float32).
    """
    if len(logits) != len(offsets):
        raise InputError(f"{len(logits)} logit levels but {len(offsets)} offset levels")
    score_levels = [_flatten_level(_one_image(level, image_index), num_classes) for level in logits]
    delta_levels = [_flatten_level(_one_image(level, image_index), 4) for level in offsets]
    if not score_levels:
        return np.zeros((0, num_classes), np.float32), np.zeros((0, 4), np.float32)
    scores = sigmoid(np.concatenate(score_levels, axis=0))
    deltas = np.concatenate(delta_levels, axis=0).astype(np.float32, copy=False)
    if scores.shape[0] != deltas.shape[0]:
        raise InputError(f"{scores.shape[0]} classified anchors but {deltas.shape[0]} box offsets")
    return scores, deltas


def decode_boxes(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply (dx, dy, dw, dh) to anchors; widths are x2 - x1 (no +1) and dw/dh are not clamped."""
    anchors = np.asarray(anchors, dtype=np.float32)
    deltas = np.asarray(deltas, dtype=np.float32)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    centre_x = anchors[:, 0] + np.float32(0.5) * widths
    centre_y = anchors[:, 1] + np.float32(0.5) * heights
    new_centre_x = centre_x + deltas[:, 0] * widths
    new_centre_y = centre_y + deltas[:, 1] * heights
    with np.errstate(over="ignore"):
        new_widths = widths * np.exp(deltas[:, 2])
        new_heights = heights * np.exp(deltas[:, 3])
    half_w = np.float32(0.5) * new_widths
    half_h = np.float32(0.5) * new_heights
    boxes = np.stack(
        [new_centre_x - half_w, new_centre_y - half_h, new_centre_x + half_w, new_centre_y + half_h], axis=1
    )
    return boxes.astype(np.float32, copy=False)


def map_boxes_to_image(boxes: np.ndarray, im_info: ImInfo) -> np.ndarray:
    """Resized-image boxes -> original-image boxes, clipped to [0, orig_w] x [0, orig_h]."""
    resized_h, resized_w, orig_h, orig_w = (float(v) for v in im_info)
    boxes = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    boxes[:, 0::2] /= resized_w / orig_w
    boxes[:, 1::2] /= resized_h / orig_h
    # The upper bound is the size itself, not size - 1 (boxes are continuous coordinates).
    np.clip(boxes[:, 0::2], 0.0, orig_w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, orig_h, out=boxes[:, 1::2])
    return boxes


def _iou(coords: Tuple[np.ndarray, ...], areas: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """len(rows) x len(cols) IoU without "+1"; the union is floored at 1e-5."""
    x1, y1, x2, y2 = coords
    r, c = rows[:, None], cols[None, :]
    inter_w = np.maximum(np.float32(0.0), np.minimum(x2[r], x2[c]) - np.maximum(x1[r], x1[c]))
    inter_h = np.maximum(np.float32(0.0), np.minimum(y2[r], y2[c]) - np.maximum(y1[r], y1[c]))
    inter = inter_w * inter_h
    union = np.maximum(areas[r] + areas[c] - inter, np.float32(IOU_DENOMINATOR_FLOOR))
    return inter / union


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_thr: float,
    max_keep: Optional[int] = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Greedy NMS; returns kept indices, highest score first.

    Visiting order is `np.argsort(scores)[::-1]` (default sort kind, float32 scores),
    which fixes how ties are broken. A box survives only while IoU <= iou_thr with
    every kept box, so an IoU of exactly iou_thr survives. With `max_keep`, stops
    after that many boxes: the result is the same prefix the full run would return.

    The visiting order is consumed in chunks: a box can only be suppressed by an
    earlier kept box, so each chunk is first filtered against the boxes kept so far
    and then resolved greedily. Same result as one greedy pass over everything, but
    the work stops with `max_keep` instead of touching every candidate each step.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    coords = (boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    areas = (coords[2] - coords[0]) * (coords[3] - coords[1])
    order = np.argsort(scores)[::-1]
    limit = order.size if max_keep is None else max_keep
    chunk_size = max(int(chunk_size), 1)
    keep: List[int] = []
    for start in range(0, order.size, chunk_size):
        if len(keep) >= limit:
            break
        pending = order[start:start + chunk_size]
        if keep:
            # `<=` rather than `not >`: a NaN IoU suppresses, as in the one-pass loop.
            survives = (_iou(coords, areas, np.asarray(keep), pending) <= iou_thr).all(axis=0)
            pending = pending[survives]
        while pending.size > 0 and len(keep) < limit:
            best, rest = pending[0], pending[1:]
            keep.append(int(best))
            pending = rest[_iou(coords, areas, best[None], rest)[0] <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def postprocess_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    score_thr: float = 0.05,
    nms_thr: float = 0.5,
    max_dets: int = 100,
) -> np.ndarray:
    """Threshold, per-class NMS over all classes, then a global cap.

    Returns D x 6 float32 rows [x1, y1, x2, y2, score, class_index]: classes in
    increasing order, each in NMS keep order. If more than `max_dets` rows survive,
    they are stably sorted by score (descending) and cut, so other classes can push
    persons out — filter by class only after this.

    Per class, NMS stops after `max_dets` kept boxes. That cannot change the result:
    a class's rows are in non-increasing score order, so its rows beyond the first
    `max_dets` always rank behind those (stable sort) and are cut by the cap; and
    sorting rows that are already non-increasing leaves them as they are.
    """
    scores = np.asarray(scores, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
        raise InputError(f"scores {scores.shape} do not match boxes {boxes.shape}")
    scores_by_class = np.ascontiguousarray(scores.T)  # column scans would stride over all classes

    def classes() -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        for class_index, column in enumerate(scores_by_class):
            candidates = np.flatnonzero(column > score_thr)
            if candidates.size:
                yield class_index, column[candidates], boxes[candidates]

    return _nms_per_class(classes(), nms_thr, max_dets)


def _nms_per_class(classes: Iterable[Tuple[int, np.ndarray, np.ndarray]], nms_thr: float, max_dets: int) -> np.ndarray:
    """Per-class NMS and the global cap over (class index, scores, boxes), classes in increasing order.

    Each class's candidates must be in increasing anchor order, as a column scan lists
    them: NMS visits them by `argsort`, whose order among equal scores depends on it.
    """
    rows = []
    for class_index, class_scores, class_boxes in classes:
        keep = nms(class_boxes, class_scores, nms_thr, max_keep=max_dets)
        block = np.empty((keep.size, 6), dtype=np.float32)
        block[:, :4] = class_boxes[keep]
        block[:, 4] = class_scores[keep]
        block[:, 5] = class_index
        rows.append(block)
    if not rows:
        return np.zeros(EMPTY_DETECTIONS_SHAPE, dtype=np.float32)
    detections = np.concatenate(rows, axis=0)
    if detections.shape[0] > max_dets:
        order = np.argsort(-detections[:, 4], kind="stable")
        detections = detections[order[:max_dets]]
    return detections


def _logit_bound(score_thr: float) -> float:
    """A logit below which no sigmoid score can exceed `score_thr`, with room for rounding.

    The float32 sigmoid is off from the exact one by a few units in the last place
    (~1e-7 relative); 0.01 below the exact logit leaves a score ~0.05% below the
    threshold, far more than that. Outside (0, 1) every logit is a candidate.
    """
    if not 0.0 < score_thr < 1.0:
        return -np.inf
    return float(np.log(score_thr / (1.0 - score_thr))) - 0.01


def score_candidates(
    logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    score_thr: float,
    num_classes: int = 80,
    image_index: int = 0,
    max_share: float = 1.0,
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The (class, anchor) pairs scoring above `score_thr`, without scoring every anchor.

    Returns (class_ids, anchor_ids, scores, deltas), sorted by class then anchor index
    (the order of `flatten_head_outputs` scanned class by class), with the same float32
    sigmoid scores bit for bit: the sigmoid is elementwise, so only the logits above a
    safe bound (`_logit_bound`) need it. Each level is read in its C x h x w layout,
    so the 80-channel maps are never transposed. A trained detector puts few logits
    above the bound; when more than `max_share` of them are (a random network), this
    returns None: gathering them one by one would cost more than scoring everything.
    """
    if len(logits) != len(offsets):
        raise InputError(f"{len(logits)} logit levels but {len(offsets)} offset levels")
    bound = np.float32(_logit_bound(score_thr))
    levels, masks = [], []
    for level, level_offsets in zip(logits, offsets):
        level, level_offsets = _one_image(level, image_index), _one_image(level_offsets, image_index)
        channels, height, width = level.shape
        if channels % num_classes or level_offsets.shape != (channels * 4 // num_classes, height, width):
            raise InputError(f"head outputs of shapes {level.shape} and {level_offsets.shape} do not match {num_classes} classes")
        levels.append((level, level_offsets))
        masks.append(level > bound if bound > -np.inf else ~np.isnan(level))
    if sum(int(np.count_nonzero(mask)) for mask in masks) > max_share * sum(mask.size for mask in masks):
        return None
    classes, anchors, values, deltas = [], [], [], []
    first_anchor = 0
    for (level, level_offsets), mask in zip(levels, masks):
        channels, height, width = level.shape
        per_location = channels // num_classes
        flat = np.flatnonzero(mask)  # one index per hit: far cheaper than nonzero()'s three
        channel, cell = np.divmod(flat, height * width)
        anchor_in_cell, class_id = np.divmod(channel, num_classes)
        classes.append(class_id)
        anchors.append(first_anchor + cell * per_location + anchor_in_cell)
        values.append(level.reshape(-1)[flat])
        offsets_flat = level_offsets.reshape(-1)
        deltas.append(np.stack([offsets_flat[(anchor_in_cell * 4 + j) * height * width + cell] for j in range(4)], axis=1))
        first_anchor += height * width * per_location
    if not classes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    class_ids, anchor_ids = np.concatenate(classes), np.concatenate(anchors)
    order = np.lexsort((anchor_ids, class_ids))
    scores = sigmoid(np.ascontiguousarray(np.concatenate(values)[order]))
    above = scores > score_thr
    order = order[above]
    return (class_ids[order], anchor_ids[order], scores[above],
            np.concatenate(deltas, axis=0)[order].astype(np.float32, copy=False))


@functools.lru_cache(maxsize=16)
def _cached_anchors(feature_shapes, strides, base_sizes, scales, ratios, offset) -> np.ndarray:
    anchors = generate_anchors(feature_shapes, strides, base_sizes, scales, ratios, offset)
    anchors.setflags(write=False)
    return anchors


def anchors_for_outputs(logits: Sequence[np.ndarray], anchor_config: AnchorConfig) -> np.ndarray:
    """Anchors matching the spatial sizes of the given per-level outputs (cached, read-only)."""
    feature_shapes = tuple(tuple(int(v) for v in np.shape(level)[-2:]) for level in logits)
    return _cached_anchors(
        feature_shapes,
        tuple(anchor_config.strides),
        tuple(anchor_config.base_sizes),
        tuple(anchor_config.scales),
        tuple(anchor_config.ratios),
        float(anchor_config.offset),
    )


def detections_for_image(
    logits: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    im_info: ImInfo,
    anchor_config: AnchorConfig,
    post_config: Optional[DetectorPostprocessConfig] = None,
    num_classes: int = 80,
    image_index: int = 0,
) -> np.ndarray:
    """All detections (every class) of one image in original-image pixels, D x 6.

    Chains flatten -> decode -> map/clip -> threshold/NMS/cap. Boxes are mapped and
    clipped before NMS, as in the official evaluator.
    """
    post_config = post_config or DetectorPostprocessConfig()
    anchors = anchors_for_outputs(logits, anchor_config)
    outputs = sum(np.shape(level)[-3] // num_classes * np.shape(level)[-2] * np.shape(level)[-1] for level in logits)
    if anchors.shape[0] != outputs:
        raise ConfigError(f"{anchors.shape[0]} anchors for {outputs} head outputs: anchor config mismatch")
    found = score_candidates(logits, offsets, post_config.score_thr, num_classes, image_index, SPARSE_SHARE)
    if found is None:  # most anchors are candidates: score them all at once
        scores, deltas = flatten_head_outputs(logits, offsets, num_classes, image_index)
        boxes = map_boxes_to_image(decode_boxes(anchors, deltas), im_info)
        return postprocess_detections(scores, boxes, post_config.score_thr, post_config.nms_thr, post_config.max_dets)
    class_ids, anchor_ids, scores, deltas = found
    boxes = map_boxes_to_image(decode_boxes(anchors[anchor_ids], deltas), im_info)
    bounds = np.searchsorted(class_ids, np.arange(num_classes + 1))  # class_ids are sorted
    classes = ((c, scores[bounds[c]:bounds[c + 1]], boxes[bounds[c]:bounds[c + 1]])
               for c in range(num_classes) if bounds[c + 1] > bounds[c])
    return _nms_per_class(classes, post_config.nms_thr, post_config.max_dets)


__all__ = [
    "EMPTY_DETECTIONS_SHAPE",
    "anchors_for_outputs",
    "decode_boxes",
    "detections_for_image",
    "flatten_head_outputs",
    "generate_anchors",
    "map_boxes_to_image",
    "nms",
    "postprocess_detections",
    "score_candidates",
    "sigmoid",
]
