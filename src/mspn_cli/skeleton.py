"""COCO person keypoints as plain data: names, flip pairs, limbs and drawing colours."""

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Channel k of a flipped prediction holds joint FLIP_ORDER[k].
FLIP_ORDER = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# COCO's per-joint OKS falloff constants (cocoeval's `kpt_oks_sigmas`), in COCO order.
KEYPOINT_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

# 0-based joint pairs; the same 19 edges as COCO's 1-based `skeleton`.
LIMBS = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12),
    (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
    (1, 3), (2, 4), (3, 5), (4, 6),
)

# BGR colours: left side warm, right side cool, centre line green-ish, face purple.
_LEFT = (0, 140, 255)
_RIGHT = (255, 160, 0)
_CENTRE = (80, 200, 80)
_FACE = (200, 80, 200)

LIMB_COLORS = (
    _LEFT, _LEFT, _RIGHT, _RIGHT, _CENTRE,
    _LEFT, _RIGHT, _CENTRE, _LEFT, _RIGHT,
    _LEFT, _RIGHT, _FACE, _FACE, _FACE,
    _FACE, _FACE, _FACE, _FACE,
)

KEYPOINT_COLORS = (
    _FACE, _FACE, _FACE, _FACE, _FACE,
    _LEFT, _RIGHT, _LEFT, _RIGHT, _LEFT, _RIGHT,
    _LEFT, _RIGHT, _LEFT, _RIGHT, _LEFT, _RIGHT,
)

