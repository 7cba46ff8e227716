"""The reference values of the specification, written once for the whole suite.

Everything here is transcribed from the reference document (MSPN_REFERENCE.md, cited by
section) or from COCO itself (the `skeleton` of the person category and cocoeval's
`kpt_oks_sigmas`), never imported from `mspn_cli` or read from its configs: a test that
compares the package with these values can fail when the package is wrong. Tests take
constants and the one transcription of the official arithmetic (box extension, crop
matrix, `find_keypoints`) from here.
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np

# -- §3: pre-processing --------------------------------------------------------------
INPUT_SHAPE = (256, 192)  # (H, W) of the crop
OUTPUT_SHAPE = (64, 48)  # (H, W) of a heatmap
NUM_KEYPOINTS = 17
X_EXT = Y_EXT = 0.10  # test_x_ext, test_y_ext (§3.2)
BOX_EXTENSION = (X_EXT, Y_EXT)
W_H_RATIO = INPUT_SHAPE[1] / INPUT_SHAPE[0]  # 0.75
STRIDE = INPUT_SHAPE[1] / OUTPUT_SHAPE[1]  # 4
# RGB statistics applied to BGR pixels (§0.1, §3.1).
MSPN_MEAN = (123.675, 116.28, 103.53)
MSPN_STD = (58.395, 57.12, 57.375)

# -- §4.1: flip test -------------------------------------------------------------------
# COCO order: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow, l/r wrist, l/r hip, l/r knee, l/r ankle.
FLIP_ORDER = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# -- §4.2: the decoder -----------------------------------------------------------------
HEAT_RANGE = 255.0  # score lookup: heatmap / 255 + 1
DECODER_BORDER = 10  # zero padding around each heatmap before the blur
BLUR_KERNEL = (17, 17)  # cv2.GaussianBlur kernel, sigmaX = 0 (OpenCV derives 2.9)
REFINEMENT_STEPS = (0.35, 0.15, 0.05)
MIN_STEP_LENGTH = 1e-3

# -- COCO: the person category's skeleton (1-based, as in person_keypoints_*.json) ------
COCO_SKELETON_1_BASED = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
COCO_LIMBS = tuple((a - 1, b - 1) for a, b in COCO_SKELETON_1_BASED)  # the 19 edges, 0-based
# cocoeval.py: kpt_oks_sigmas = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62,
# .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
OKS_SIGMAS = tuple(v / 10.0 for v in (
    .26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89,
))

# -- §7: RetinaNet -----------------------------------------------------------------------
DETECTOR_MEAN_BGR = (103.53, 116.28, 123.675)
DETECTOR_STD_BGR = (57.375, 57.12, 58.395)
DETECTOR_SCORE_THRESHOLD = 0.05
DETECTOR_NMS_IOU = 0.5
DETECTOR_MAX_DETECTIONS = 100


def legacy_promotion_available() -> bool:
    """NumPy 1.x, or NumPy 2.0/2.1 with its legacy promotion mode: the literal code can run."""
    return int(np.__version__.split(".")[0]) < 2 or hasattr(np, "_set_promotion_state")


def literal(value):
    return value


def numpy1_typed(value):
    """A Python number as NumPy 1.x's scalar math saw it next to a numpy scalar (an int64,
    a float64): applied to every Python number that meets a numpy scalar, the transcription
    gets NumPy 1.x's dtypes under any NumPy, NEP 50's included."""
    if type(value) is int:
        return np.int64(value)
    if type(value) is float:
        return np.float64(value)
    return value


def default_scalar():
    """How the transcription treats Python numbers by default: as written where NumPy 1.x
    rules can run (inside `numpy1_scalar_promotion`), typed where they cannot (NumPy >= 2.2)."""
    return literal if legacy_promotion_available() else numpy1_typed


@contextlib.contextmanager
def numpy1_scalar_promotion():
    """NumPy 1.x's value-based scalar promotion (NEP 50 changed it) where NumPy can still run
    it; on NumPy >= 2.2 nothing changes and the transcription types its numbers itself."""
    set_state = getattr(np, "_set_promotion_state", None)
    if int(np.__version__.split(".")[0]) < 2 or set_state is None:
        yield
        return
    previous = np._get_promotion_state()
    set_state("legacy")
    try:
        yield
    finally:
        set_state(previous)


# -- the one transcription of the official per-box arithmetic (§3.2-§4.3) -------------------
# The official test works on numpy scalars one box at a time, so NumPy 1.x's scalar promotion
# decides its dtypes. These functions restate that code (same operations, same order and
# grouping); call them inside `numpy1_scalar_promotion()`. `s` is applied to each Python number
# that meets a numpy scalar (`literal`: the code as written; `numpy1_typed`: NumPy 1.x's typing
# spelled out); None takes `default_scalar()`.

def official_normalize(image_bgr: np.ndarray) -> np.ndarray:
    """§3.1 as test.py does it: float32 (pixel - mean) / std, RGB statistics on BGR channels."""
    return (image_bgr.astype(np.float32) - np.float32(MSPN_MEAN)) / np.float32(MSPN_STD)


def official_extend_boxes(boxes: np.ndarray, s=None) -> np.ndarray:
    """ExtendBoxes._apply_boxes with random_extend_prob = 0 (so the random factor is the int 1)."""
    s = s or default_scalar()
    rand = 1
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
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


def official_affine(bbox: np.ndarray, s=None) -> np.ndarray:
    """RandomBoxAffine.apply + get_affine_transform with scale 1 and rotation 0 (§3.3)."""
    s = s or default_scalar()
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


def official_crop(normalized_image: np.ndarray, ext_box: np.ndarray) -> np.ndarray:
    """§3.3: the warp of the normalised image, CHW float32."""
    crop = cv2.warpAffine(normalized_image, official_affine(ext_box), (INPUT_SHAPE[1], INPUT_SHAPE[0]),
                          flags=cv2.INTER_LINEAR, borderValue=0)
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32)


def official_flip_average(heatmaps: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """§4.1 for one person: (out[0] + out[1][flip_order][:, :, ::-1]) / 2."""
    return (heatmaps + flipped[list(FLIP_ORDER)][:, :, ::-1]) / 2


def official_peak(pred_aug: np.ndarray, heat_prob: np.ndarray, border: int = DECODER_BORDER, s=None):
    """The per-joint loop body of find_keypoints (§4.2): heatmap x, y and score.

    `pred_aug` is the padded, blurred map (changed in place, as the official code does).
    """
    lb = pred_aug.argmax()
    y, x = np.unravel_index(lb, pred_aug.shape)
    y -= border
    x -= border
    pred_aug[y, x] = 0  # the quirk: unpadded coordinates on the padded map (§0.5)
    for delta in REFINEMENT_STEPS:
        lb = pred_aug.argmax()
        py, px = np.unravel_index(lb, pred_aug.shape)
        pred_aug[py, px] = 0
        py -= border + y
        px -= border + x
        ln = (px ** 2 + py ** 2) ** 0.5
        if ln > MIN_STEP_LENGTH:
            x += delta * px / ln
            y += delta * py / ln
    s = s or default_scalar()
    x = s(max(0, min(x, OUTPUT_SHAPE[1] - 1)))
    y = s(max(0, min(y, OUTPUT_SHAPE[0] - 1)))
    return x, y, heat_prob[int(round(y)), int(round(x))]


def official_find_keypoints(pred: np.ndarray, bbox=None, s=None) -> np.ndarray:
    """find_keypoints of test.py (heat_range 255, border 10, kernel 17, second_value_aug).

    With `bbox` (the extended box) the keypoints are mapped back to the image (§4.3);
    without it they stay in heatmap pixels, as the decoder's loop leaves them.
    """
    heat_prob = pred.copy()
    heat_prob = heat_prob / HEAT_RANGE + 1
    border = DECODER_BORDER
    pred_aug = np.zeros((pred.shape[0], pred.shape[1] + 2 * border, pred.shape[2] + 2 * border), dtype=np.float32)
    pred_aug[:, border:-border, border:-border] = pred.copy()
    for i in range(pred_aug.shape[0]):
        pred_aug[i] = cv2.GaussianBlur(pred_aug[i], BLUR_KERNEL, 0)
    results = np.zeros((pred_aug.shape[0], 3), dtype=np.float32 if bbox is not None else np.float64)
    for i in range(pred_aug.shape[0]):
        x, y, skeleton_score = official_peak(pred_aug[i], heat_prob[i], border, s)
        if bbox is not None:
            x = (x + 0.5) * STRIDE - 0.5
            y = (y + 0.5) * STRIDE - 0.5
            left, top, right, bottom = bbox
            x = x / INPUT_SHAPE[1] * (right - left) + left
            y = y / INPUT_SHAPE[0] * (bottom - top) + top
        results[i, 0] = x
        results[i, 1] = y
        results[i, 2] = skeleton_score
    return results
