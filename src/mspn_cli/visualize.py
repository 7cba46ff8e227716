"""Drawing skeletons and person boxes on images (pure numpy + OpenCV).

The look follows the official MegEngine / SimpleBaseline demo: every limb is a filled,
translucent ellipse between its two joints, joints are solid dots on top. Sizes are derived
from the image and the person so that the drawing reads well on a 300 px thumbnail and on a
2600 px photo alike.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from mspn_cli.errors import InputError
from mspn_cli.skeleton import KEYPOINT_COLORS, LIMB_COLORS, LIMBS, NUM_KEYPOINTS

# Opacity of a limb over the photo; the official demo blends limbs at 0.6.
LIMB_ALPHA = 0.6
# Dark rim around each joint dot so it stays visible on a background of the same hue.
JOINT_OUTLINE_COLOR = (32, 32, 32)
# Person boxes cycle through these (BGR); muted so they do not compete with the limbs.
BOX_COLORS = (
    (80, 220, 240),  # warm yellow
    (200, 200, 200),  # light grey
    (230, 160, 200),  # lavender
    (140, 230, 140),  # soft green
    (150, 170, 250),  # salmon
    (240, 220, 140),  # pale sky blue
)

# A pose that belongs to no track (video) is drawn in grey.
UNTRACKED_COLOR = (170, 170, 170)

# Fixed-point precision for OpenCV drawing: coordinates are passed multiplied by 2**_SHIFT
# so joints and limbs land on sub-pixel positions instead of jumping to integer pixels.
_SHIFT = 4
_ONE = 1 << _SHIFT

# Joints 0-4 (nose, eyes, ears) are the face.
_NUM_FACE_JOINTS = 5
_FACE_JOINT_SCALE = 0.75


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Return a new contiguous 8-bit, 3-channel BGR copy of a gray, BGR or BGRA image.

    Alpha is dropped rather than composited, so the picture matches what the detector saw
    (OpenCV's colour decoding drops it too). 16-bit data keeps its high byte, as OpenCV's own
    8-bit decoding does; float data is read as 0..1.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise ValueError(f"expected an H×W, H×W×3 or H×W×4 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")

    if image.dtype == np.uint8:
        image8 = image
    elif image.dtype == np.uint16:
        image8 = (image >> 8).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        image8 = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        image8 = np.clip(image, 0, 255).astype(np.uint8)

    if image8.ndim == 2:
        return cv2.cvtColor(image8, cv2.COLOR_GRAY2BGR)
    channels = image8.shape[2]
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image8[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image8, cv2.COLOR_BGRA2BGR)
    return np.array(image8, dtype=np.uint8, order="C", copy=True)


def joint_confidence(keypoint_scores) -> np.ndarray:
    """Keypoint scores (the official lookup, heatmap peak / 255 + 1) on a 0-to-1 scale: peak / 255.

    This is the scale of `--kpt-thr`: 0 is a flat heatmap (the joint's position is a guess),
    1 a peak as high as the training targets'. Peaks outside that range are clipped.
    """
    with np.errstate(invalid="ignore"):
        return np.clip(np.asarray(keypoint_scores, dtype=np.float64) - 1.0, 0.0, 1.0)


def person_confidence(keypoints: np.ndarray, instance_scores) -> np.ndarray:
    """The 0-to-1 figure drawn by each person box: mean joint confidence x box score.

    The box score is recovered from the official instance score (mean keypoint score x box
    score), which runs from about 1 to 2 and stays as is in the JSON for COCO evaluation.
    A row whose keypoint scores are all 0 has no pose (boxes only): its score is shown as is.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    instance_scores = np.asarray(instance_scores, dtype=np.float64).reshape(-1)
    mean_score = keypoints[:, :, 2].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        box_scores = instance_scores / mean_score
        shown = np.clip(joint_confidence(keypoints[:, :, 2]).mean(axis=1) * box_scores, 0.0, 1.0)
    return np.where(np.all(keypoints[:, :, 2] == 0, axis=1), instance_scores, shown)


def draw_poses(
    image_bgr: np.ndarray,
    keypoints: np.ndarray,
    boxes: Optional[np.ndarray] = None,
    scores: Optional[np.ndarray] = None,
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
    track_ids: Optional[Sequence[Optional[int]]] = None,
    radius: Optional[float] = None,
    thickness: Optional[float] = None,
) -> np.ndarray:
    """Return a new uint8 BGR image with skeletons (and person boxes) drawn on it.

    track_ids: optional N video track ids; each track keeps one colour (its box, label
    and limbs) in every frame, and "#ID" is drawn by its box (None or 0: no track, grey).
    radius / thickness: joint radius and limb width in pixels (default: sized to each person).

    keypoints: N×17×3 (x, y, score) in image pixels, scores as MSPN gives them (peak / 255 + 1).
    A joint is drawn when its confidence (`joint_confidence`, 0 to 1) is above `kpt_thr`, a limb
    when both of its joints are. boxes: optional N×4 x1,y1,x2,y2 (rows with NaN are skipped).
    scores: optional N official instance scores; each box is labelled with `person_confidence`
    (0 to 1). The input image is never modified.
    """
    canvas = to_bgr8(image_bgr)  # always a copy: the caller's array is never drawn on

    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.size == 0:
        keypoints = keypoints.reshape(0, NUM_KEYPOINTS, 3)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must be N×{NUM_KEYPOINTS}×3, got shape {keypoints.shape}")
    num_people = keypoints.shape[0]
    if num_people == 0:
        return canvas

    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if boxes.shape[0] != num_people:
            raise ValueError(f"{boxes.shape[0]} boxes for {num_people} people")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != num_people:
            raise ValueError(f"{scores.shape[0]} scores for {num_people} people")
    shown = None if scores is None else person_confidence(keypoints, scores)

    height, width = canvas.shape[:2]
    # One "unit" is about a pixel on a 500×500 image; strokes and text scale with it.
    unit = max(1.0, math.sqrt(height * width) / 500.0)
    visible = _visible_joints(keypoints, kpt_thr, height, width)

    # Painter's order: boxes under the skeletons, skeletons under the score labels; people
    # are drawn largest first so small people in front stay on top.
    sizes = [_person_size(keypoints[i], visible[i], None if boxes is None else boxes[i]) for i in range(num_people)]
    order = sorted(range(num_people), key=lambda i: -sizes[i])

    labels = []
    for i in order:
        box_color = BOX_COLORS[i % len(BOX_COLORS)] if track_ids is None else track_color(track_ids[i])
        if draw_boxes and boxes is not None and np.all(np.isfinite(boxes[i])):
            _draw_box(canvas, boxes[i], box_color, unit)
            text = [] if track_ids is None or not track_ids[i] else [f"#{int(track_ids[i])}"]
            if shown is not None and np.isfinite(shown[i]):
                text.append(f"{shown[i]:.2f}")
            if text:
                labels.append((boxes[i], " ".join(text), box_color))

    for i in order:
        limb_half_width, joint_radius = _stroke_sizes(sizes[i], unit)
        limb_half_width = limb_half_width if thickness is None else max(float(thickness), 0.5) / 2
        joint_radius = joint_radius if radius is None else max(float(radius), 0.5)
        limb_color = None if track_ids is None else track_color(track_ids[i])
        _draw_limbs(canvas, keypoints[i], visible[i], limb_half_width, limb_color)
        _draw_joints(canvas, keypoints[i], visible[i], joint_radius, unit)

    for box, text, color in labels:
        _draw_label(canvas, box, text, color, unit)
    return canvas


def records_to_arrays(
    records: Sequence[Mapping[str, Any]],
) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Turn COCO keypoint result records into (keypoints N×17×3, boxes N×4 xyxy or None, scores N).

    The visibility column of "keypoints" is always 1 in results, so the per-joint score comes
    from "keypoint_scores" when present (peak / 255 + 1, as MSPN writes them), else every joint
    counts as seen with full confidence (score 2).
    Boxes are None when no record has a "bbox"; a record without one gets a NaN row.
    Missing instance scores are NaN. Raises InputError naming the first bad record.
    """
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise InputError(f"expected a list of result records, got {type(records).__name__}")
    count = len(records)
    keypoints = np.zeros((count, NUM_KEYPOINTS, 3), dtype=np.float32)
    boxes = np.full((count, 4), np.nan, dtype=np.float32)
    scores = np.full(count, np.nan, dtype=np.float32)
    any_box = False

    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(f"record {index} is a {type(record).__name__}, expected an object")
        flat = _numbers(record.get("keypoints"), 3 * NUM_KEYPOINTS, index, "keypoints", "17 × (x, y, v)")
        keypoints[index, :, :2] = flat.reshape(NUM_KEYPOINTS, 3)[:, :2]
        if record.get("keypoint_scores") is not None:
            keypoints[index, :, 2] = _numbers(
                record["keypoint_scores"], NUM_KEYPOINTS, index, "keypoint_scores", "one per joint"
            )
        else:
            keypoints[index, :, 2] = 2.0
        box_key = "det_bbox" if record.get("det_bbox") is not None else "bbox"
        if record.get(box_key) is not None:
            x, y, w, h = _numbers(record[box_key], 4, index, box_key, "x, y, width, height")
            boxes[index] = (x, y, x + w, y + h)
            any_box = True
        score = record.get("score")
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise InputError(f"record {index}: \"score\" must be a number, got {score!r}")
            scores[index] = score

    return keypoints, (boxes if any_box else None), scores


def draw_records(
    image_bgr: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
) -> np.ndarray:
    """draw_poses() for COCO keypoint result records (see records_to_arrays)."""
    keypoints, boxes, scores = records_to_arrays(records)
    return draw_poses(image_bgr, keypoints, boxes, scores, kpt_thr=kpt_thr, draw_boxes=draw_boxes)


# --------------------------------------------------------------------------- helpers


def _numbers(value: Any, expected: int, index: int, field: str, layout: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise InputError(f"record {index}: \"{field}\" is {shown}, expected a list of {expected} numbers ({layout})")
    if len(value) != expected:
        raise InputError(f"record {index}: \"{field}\" has {len(value)} values, expected {expected} ({layout})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise InputError(f"record {index}: \"{field}\" must contain only numbers")
    return np.asarray(value, dtype=np.float32)


def _visible_joints(keypoints: np.ndarray, kpt_thr: float, height: int, width: int) -> np.ndarray:
    """N×17 mask of joints to draw: confident, finite, and not absurdly far off the image."""
    xy = keypoints[:, :, :2]
    finite = np.all(np.isfinite(keypoints), axis=2)
    # Joints far outside the frame would overflow OpenCV's fixed-point coordinates.
    margin = 4 * max(height, width)
    near = np.all(np.abs(np.nan_to_num(xy)) < margin, axis=2)
    confident = joint_confidence(keypoints[:, :, 2]) > kpt_thr
    return finite & near & confident


def _person_size(person: np.ndarray, visible: np.ndarray, box: Optional[np.ndarray]) -> float:
    """A person's linear size in pixels: from the box if there is one, else from the joints."""
    if box is not None and np.all(np.isfinite(box)):
        w, h = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
        if w * h > 0:
            return math.sqrt(w * h)
    if visible.sum() >= 2:
        xy = person[visible, :2]
        w, h = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
        # Joints span less than the body outline, and a side view is nearly a line.
        return max(math.sqrt(max(w, 1.0) * max(h, 1.0)) * 1.3, 0.5 * max(w, h))
    return 0.0


def _stroke_sizes(person_size: float, unit: float) -> Tuple[float, float]:
    """Limb half-width and joint radius for one person, in pixels.

    Proportional to the person so a crowd of small people stays legible, but capped by the
    image size so a close-up does not turn into fat sausages.
    """
    limb_half_width = float(np.clip(0.018 * person_size, max(1.0, 0.6 * unit), 4.0 * unit))
    # Never below ~2 px: smaller dots vanish under their own outline.
    joint_radius = max(limb_half_width * 0.9 + 0.6 * unit, 2.2)
    return limb_half_width, joint_radius


def track_color(track_id: Optional[int]) -> Tuple[int, int, int]:
    """The BGR colour of a track: the same in every frame, neighbouring ids far apart in hue.

    Hues step by the golden ratio, so any few consecutive ids get clearly different colours.
    """
    if track_id is None or int(track_id) <= 0:
        return UNTRACKED_COLOR
    hue = (int(track_id) * 0.618033988749895) % 1.0
    hsv = np.uint8([[[int(hue * 180) % 180, 200, 245]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _fixed(value: float) -> int:
    return int(round(value * _ONE))


def _draw_limbs(canvas: np.ndarray, person: np.ndarray, visible: np.ndarray, half_width: float,
                color_override: Optional[Tuple[int, int, int]] = None) -> None:
    height, width = canvas.shape[:2]
    for (a, b), color in zip(LIMBS, LIMB_COLORS):
        color = color if color_override is None else color_override
        if not (visible[a] and visible[b]):
            continue
        (xa, ya), (xb, yb) = person[a, :2], person[b, :2]
        length = math.hypot(xb - xa, yb - ya)
        angle = math.degrees(math.atan2(yb - ya, xb - xa))
        # ellipse2Poly works in integers, so hand it fixed-point coordinates (see _SHIFT).
        polygon = cv2.ellipse2Poly(
            (_fixed((xa + xb) / 2), _fixed((ya + yb) / 2)),
            (_fixed(length / 2 + half_width * 0.5), _fixed(half_width)),
            int(round(angle)),
            0,
            360,
            8,
        )
        # Blend only the limb's bounding rectangle: blending the whole frame once per limb
        # (as the official demo does) costs O(people × limbs × pixels).
        x0 = max(int(polygon[:, 0].min()) // _ONE - 2, 0)
        y0 = max(int(polygon[:, 1].min()) // _ONE - 2, 0)
        x1 = min(int(polygon[:, 0].max()) // _ONE + 3, width)
        y1 = min(int(polygon[:, 1].max()) // _ONE + 3, height)
        if x0 >= x1 or y0 >= y1:
            continue
        region = canvas[y0:y1, x0:x1]
        overlay = region.copy()
        cv2.fillConvexPoly(overlay, polygon - [x0 * _ONE, y0 * _ONE], color, cv2.LINE_AA, _SHIFT)
        canvas[y0:y1, x0:x1] = cv2.addWeighted(overlay, LIMB_ALPHA, region, 1.0 - LIMB_ALPHA, 0.0)


def _draw_joints(canvas: np.ndarray, person: np.ndarray, visible: np.ndarray, radius: float, unit: float) -> None:
    outline = max(1, int(round(0.5 * unit)))
    for joint in np.flatnonzero(visible):
        # The five face points sit close together; smaller dots keep them apart.
        joint_radius = radius * (_FACE_JOINT_SCALE if joint < _NUM_FACE_JOINTS else 1.0)
        center = (_fixed(person[joint, 0]), _fixed(person[joint, 1]))
        outer, inner = _fixed(joint_radius + outline * 0.5), _fixed(joint_radius - outline * 0.5)
        cv2.circle(canvas, center, outer, JOINT_OUTLINE_COLOR, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, center, inner, KEYPOINT_COLORS[joint], -1, cv2.LINE_AA, _SHIFT)


def _draw_box(canvas: np.ndarray, box: np.ndarray, color: Tuple[int, int, int], unit: float) -> None:
    thickness = max(1, int(round(unit)))
    x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, -1e6, 1e6))
    cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)


def _draw_label(canvas: np.ndarray, box: np.ndarray, text: str, color: Tuple[int, int, int], unit: float) -> None:
    """The score in a filled tab on the box's top-left corner, kept inside the image."""
    height, width = canvas.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    font_scale = 0.4 * unit
    thickness = max(1, int(round(unit)))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, thickness)
    pad = max(2, int(round(2 * unit)))
    tab_w, tab_h = text_w + 2 * pad, text_h + baseline + pad

    box_thickness = max(1, int(round(unit)))
    x = int(round(np.clip(box[0], 0, width))) - (box_thickness - 1) // 2
    top = int(round(box[1])) - (box_thickness - 1) // 2
    # Sit on top of the box edge when there is room, else just inside it.
    y = top - tab_h if top - tab_h >= 0 else max(top, 0)
    x = int(np.clip(x, 0, max(width - tab_w, 0)))
    y = int(np.clip(y, 0, max(height - tab_h, 0)))

    cv2.rectangle(canvas, (x, y), (x + tab_w - 1, y + tab_h - 1), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    text_color = (20, 20, 20) if luminance > 128 else (245, 245, 245)
    cv2.putText(canvas, text, (x + pad, y + pad // 2 + text_h), font, font_scale, text_color, thickness, cv2.LINE_AA)


def draw_boxes(image_bgr: np.ndarray, boxes: np.ndarray, scores: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of `image_bgr` with person boxes (and their scores) drawn, no skeletons."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    empty = np.zeros((len(boxes), NUM_KEYPOINTS, 3), np.float64)
    return draw_poses(image_bgr, empty, boxes, scores)
