"""Online multi-person pose tracking: ByteTrack's two passes with an OKS + IoU match cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from mspn_cli.errors import InputError
from mspn_cli.skeleton import NUM_KEYPOINTS
from mspn_cli.tracking.assignment import match_with_threshold
from mspn_cli.tracking.geometry import box_iou, boxes_from_keypoints, cxcywh_to_xyxy, keypoint_similarity, xyxy_to_cxcywh
from mspn_cli.tracking.kalman import BoxKalmanFilter
from mspn_cli.config import TrackingSettings

UNTRACKED = 0  # the id of a pose that belongs to no track (a low-score pose nothing continues)


@dataclass
class _Track:
    track_id: int
    kalman: BoxKalmanFilter
    keypoints: np.ndarray  # (17, 3) of the last matched pose
    reference_box: np.ndarray  # (cx, cy, w, h) estimate when `keypoints` were seen
    last_frame: int
    active: bool = True  # matched at the previous update (ByteTrack's "tracked" state)

    def predicted_keypoints(self) -> np.ndarray:
        """The last pose moved and scaled with the box from where it was seen to the prediction."""
        box = self.kalman.box
        scale = box[2:4] / np.maximum(self.reference_box[2:4], 1e-6)
        moved = self.keypoints.copy()
        moved[:, :2] = (self.keypoints[:, :2] - self.reference_box[:2]) * scale + box[:2]
        return moved


@dataclass(frozen=True)
class TrackState:
    """A read-only view of one live track, for callers that draw or predict boxes."""

    track_id: int
    box: np.ndarray  # predicted (or just corrected) xyxy box
    keypoints: np.ndarray  # last matched pose, (17, 3)
    last_frame: int
    lost: bool


class PoseTracker:
    """Give each pose of each frame a track id; call `update` once per frame, in frame order.

    First pass: poses scoring at least `high_score` are matched to every track kept
    (active or lost for at most `track_buffer` frames). Second pass: poses scoring in
    [low_score, high_score) are matched only to tracks that were active until now and
    are still unmatched, with the stricter `low_match_threshold`; they never start a
    track. A pose left over starts a new track if it scores at least `new_track_score`.
    Ids start at 1 and are never reused; UNTRACKED (0) marks a pose that got none.
    """

    def __init__(self, settings: TrackingSettings):
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video); ids start again from 1."""
        self._tracks: List[_Track] = []
        self._next_id = 1
        self._last_frame: Optional[int] = None

    @property
    def tracks(self) -> List[TrackState]:
        return [
            TrackState(t.track_id, cxcywh_to_xyxy(t.kalman.box)[0], t.keypoints.copy(), t.last_frame, not t.active)
            for t in self._tracks
        ]

    def update(
        self,
        keypoints: np.ndarray,
        boxes: Optional[np.ndarray],
        scores: np.ndarray,
        frame_index: Optional[int] = None,
    ) -> np.ndarray:
        """Track ids (N,) for the poses of one frame: keypoints (N, 17, 3) as x, y, score,
        boxes (N, 4) xyxy (None: the box of each pose's joints), scores (N,) detection confidences.
        `frame_index` (default: the previous one + 1) must increase; gaps are motion-predicted.
        """
        keypoints, boxes, scores = _checked_frame(keypoints, boxes, scores)
        frame_index = self._advance(frame_index)
        settings = self.settings
        ids = np.full(len(scores), UNTRACKED, dtype=np.int64)

        high = np.flatnonzero(scores >= settings.high_score)
        low = np.flatnonzero((scores >= settings.low_score) & (scores < settings.high_score))

        candidates = list(range(len(self._tracks)))
        pairs, left_tracks, left_high = self._match(candidates, high, keypoints, boxes, settings.match_threshold)
        was_active = [t for t in left_tracks if self._tracks[t].active]
        low_pairs, _, _ = self._match(was_active, low, keypoints, boxes, settings.low_match_threshold)

        for track_index, pose_index in pairs + low_pairs:
            track = self._tracks[track_index]
            track.kalman.update(xyxy_to_cxcywh(boxes[pose_index])[0])
            track.keypoints = keypoints[pose_index].copy()
            track.reference_box = track.kalman.box
            track.last_frame = frame_index
            track.active = True
            ids[pose_index] = track.track_id
        matched = {track_index for track_index, _ in pairs + low_pairs}
        for track_index, track in enumerate(self._tracks):
            if track_index not in matched:
                track.active = False

        for pose_index in left_high:
            if scores[pose_index] >= settings.new_track_score:
                ids[pose_index] = self._start_track(keypoints[pose_index], boxes[pose_index], frame_index)
        return ids

    # ------------------------------------------------------------------ internals

    def _advance(self, frame_index: Optional[int]) -> int:
        """Move every track's prediction to `frame_index`; drop tracks lost for too long."""
        previous = self._last_frame
        if frame_index is None:
            frame_index = 0 if previous is None else previous + 1
        frame_index = int(frame_index)
        if previous is not None and frame_index <= previous:
            raise InputError(f"frame {frame_index} comes after frame {previous}; frames must be given in increasing order")
        self._last_frame = frame_index
        if previous is None:
            return frame_index
        step = frame_index - previous
        # Lost for at most `track_buffer` frames, counted in frames, not in (possibly sparse) updates.
        self._tracks = [t for t in self._tracks if frame_index - t.last_frame - step <= self.settings.track_buffer]
        for track in self._tracks:
            track.kalman.predict(step, hold_size=not track.active)
        return frame_index

    def _match(
        self, track_indices: List[int], pose_indices: np.ndarray, keypoints, boxes, threshold: float
    ) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
        """Match tracks to poses (both given as indices); returns pairs and leftovers as indices."""
        if not track_indices or not len(pose_indices):
            return [], list(track_indices), [int(p) for p in pose_indices]
        tracks = [self._tracks[t] for t in track_indices]
        predicted_boxes = cxcywh_to_xyxy(np.stack([t.kalman.box for t in tracks]))
        predicted_poses = np.stack([t.predicted_keypoints() for t in tracks])
        cost = 1.0 - self._similarity(predicted_poses, predicted_boxes, keypoints[pose_indices], boxes[pose_indices])
        pairs, rows, cols = match_with_threshold(cost, threshold)
        return (
            [(track_indices[r], int(pose_indices[c])) for r, c in pairs],
            [track_indices[r] for r in rows],
            [int(pose_indices[c]) for c in cols],
        )

    def _similarity(self, track_poses, track_boxes, poses, boxes) -> np.ndarray:
        oks_weight, iou_weight = self.settings.oks_weight, self.settings.iou_weight
        iou = box_iou(track_boxes, boxes)
        if oks_weight == 0:
            return iou
        oks = keypoint_similarity(track_poses, track_boxes, poses)
        combined = (oks_weight * np.nan_to_num(oks) + iou_weight * iou) / (oks_weight + iou_weight)
        # Without a joint both poses are sure of, OKS says nothing: fall back to the boxes.
        return np.where(np.isnan(oks), iou if iou_weight > 0 else 0.0, combined)

    def _start_track(self, keypoints: np.ndarray, box: np.ndarray, frame_index: int) -> int:
        kalman = BoxKalmanFilter(xyxy_to_cxcywh(box)[0], self.settings.kalman)
        track = _Track(self._next_id, kalman, keypoints.copy(), kalman.box, frame_index)
        self._tracks.append(track)
        self._next_id += 1
        return track.track_id


def _checked_frame(keypoints, boxes, scores) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.size == 0:
        keypoints = keypoints.reshape(0, NUM_KEYPOINTS, 3)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise InputError(f"keypoints must have shape (N, {NUM_KEYPOINTS}, 3), got {keypoints.shape}")
    count = len(keypoints)
    boxes = boxes_from_keypoints(keypoints) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != count or len(scores) != count:
        raise InputError(f"{count} poses but {len(boxes)} boxes and {len(scores)} scores")
    if not (np.isfinite(keypoints).all() and np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise InputError("poses, boxes and scores must be finite numbers")
    return keypoints, boxes, scores
