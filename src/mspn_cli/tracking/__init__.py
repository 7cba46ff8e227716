"""Person tracking and keypoint smoothing for videos: pure numpy post-processing.

No networks, no video reading, no printing. Poses of one frame are numpy arrays:
keypoints (N, 17, 3) as x, y, joint score; boxes (N, 4) xyxy; scores (N,) detection
confidences (a record's "box_score"; MSPN's instance "score" is scaled by joint scores
that exceed 1, so it does not suit thresholds in [0, 1]).

Online use, once per processed frame, in frame order::

    from mspn_cli.tracking import OneEuroSmoother, PoseTracker, load_tracking_config

    config = load_tracking_config()               # configs/tracking.toml, every range checked
    tracker = PoseTracker(config.tracking)
    smoother = OneEuroSmoother(config.smoothing.oneeuro)
    for frame_index, time_s, (keypoints, boxes, scores) in frames:
        track_ids = tracker.update(keypoints, boxes, scores, frame_index)   # (N,) int64
        keypoints = smoother.update(track_ids, keypoints, time_s)           # (N, 17, 3)

`track_ids` are positive, start at 1 and are never reused within a tracker's life
(`tracker.reset()` for a new video); UNTRACKED (0) marks a pose no track took (a
low-score pose that continued nothing, or one too weak to start a track): write it as
null. `frame_index` must increase; skipped frames (`--every`) are motion-predicted and
`track_buffer` counts frames, not updates. `time_s` is pts_ms / 1000 when the container
gives it, else frame_index / fps (`frame_times` does this for saved results).
`tracker.tracks` lists live tracks with their predicted boxes (for key-frame detection).
Options override settings by `dataclasses.replace(config.tracking, track_buffer=N)`.

Offline (`mspn track`): `parse_results(text, name)` reads saved JSONL or JSON results
into frames, and `retrack(frames, config, smooth=..., fill_gaps=N)` returns the output
lines. Building blocks: `savgol_smooth` (score-weighted, both ways in time),
`plan_gap_fills` / `interpolate`, `linear_assignment` (Hungarian), `box_iou`,
`keypoint_similarity` (OKS). Everything is deterministic: the same input gives the same
output.
"""

from mspn_cli.tracking.assignment import linear_assignment, match_with_threshold
from mspn_cli.tracking.gaps import GapFill, interpolate, plan_gap_fills
from mspn_cli.tracking.geometry import box_iou, boxes_from_keypoints, keypoint_similarity
from mspn_cli.tracking.results import ResultFrame, parse_results
from mspn_cli.tracking.retrack import SMOOTHING_METHODS, RetrackSummary, frame_times, retrack
from mspn_cli.config import (
    DEFAULT_TRACKING_CONFIG,
    OneEuroSettings,
    SavgolSettings,
    SmoothingSettings,
    TrackingConfig,
    TrackingSettings,
    load_tracking_config,
)
from mspn_cli.tracking.smoothing import OneEuroFilter, OneEuroSmoother, savgol_coefficients, savgol_smooth
from mspn_cli.tracking.tracker import UNTRACKED, PoseTracker, TrackState

__all__ = [
    "DEFAULT_TRACKING_CONFIG",
    "GapFill",
    "OneEuroFilter",
    "OneEuroSettings",
    "OneEuroSmoother",
    "PoseTracker",
    "ResultFrame",
    "RetrackSummary",
    "SMOOTHING_METHODS",
    "SavgolSettings",
    "SmoothingSettings",
    "TrackState",
    "TrackingConfig",
    "TrackingSettings",
    "UNTRACKED",
    "box_iou",
    "boxes_from_keypoints",
    "frame_times",
    "interpolate",
    "keypoint_similarity",
    "linear_assignment",
    "load_tracking_config",
    "match_with_threshold",
    "parse_results",
    "plan_gap_fills",
    "retrack",
    "savgol_coefficients",
    "savgol_smooth",
]
