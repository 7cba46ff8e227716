"""Keypoint smoothing per track: One-Euro online, Savitzky-Golay offline."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from mspn_cli.errors import InputError
from mspn_cli.skeleton import NUM_KEYPOINTS
from mspn_cli.config import OneEuroSettings

_NO_WEIGHT = 1e-9  # below this total score a joint has no trustworthy sample in the window


class OneEuroFilter:
    """The 1€ filter (Casiez, Roussel, Vogel, CHI 2012) on an array of signals at once.

    A first-order low-pass filter whose cutoff rises with the signal's speed: still joints
    are smoothed hard (no jitter), fast ones follow closely (little lag). Per element:
        alpha(f, dt) = 1 / (1 + 1 / (2 pi f dt))
        speed = alpha(d_cutoff) * (x - x_hat_prev) / dt + (1 - alpha(d_cutoff)) * speed_prev
        x_hat = alpha(min_cutoff + beta |speed| / speed_scale) * x + (1 - alpha) * x_hat_prev
    The first sample passes through unchanged with speed 0. Times are in seconds;
    `speed_scale` (default 1) expresses speed in other units, e.g. person sizes.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise InputError("One-Euro needs min_cutoff > 0, d_cutoff > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._estimate: Optional[np.ndarray] = None
        self._speed: Optional[np.ndarray] = None
        self._time = 0.0

    def __call__(self, values: np.ndarray, time_s: float, speed_scale: float = 1.0) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self._estimate is None:
            self._estimate, self._speed, self._time = values.copy(), np.zeros_like(values), float(time_s)
            return values.copy()
        if values.shape != self._estimate.shape:
            raise InputError(f"One-Euro filter got shape {values.shape} after {self._estimate.shape}")
        dt = float(time_s) - self._time
        if not dt > 0:
            raise InputError(f"One-Euro filter: time {time_s} s does not come after {self._time} s")
        speed_alpha = _alpha(self.d_cutoff, dt)
        self._speed = speed_alpha * (values - self._estimate) / dt + (1 - speed_alpha) * self._speed
        alpha = _alpha(self.min_cutoff + self.beta * np.abs(self._speed) / speed_scale, dt)
        self._estimate = alpha * values + (1 - alpha) * self._estimate
        self._time = float(time_s)
        return self._estimate.copy()


def _alpha(cutoff, dt: float):
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


class OneEuroSmoother:
    """One-Euro filtering of each track's joints; scores pass through.

    `update(track_ids, keypoints, t)` takes one frame's ids (N,), poses (N, 17, 3) and
    time in seconds, and returns the smoothed poses. Untracked poses (id 0) come back
    as given. Each joint coordinate is filtered relative to the pose's centre (the mean
    of its joints), and the centre by a filter of its own: a walking person's joints
    then move slowly and are smoothed hard, while the centre, the mean of 17 noisy
    joints, is steady enough to follow the walk closely. Filtering image coordinates
    directly lags a walking person by several pixels, more error than the jitter it
    removes. Speeds count in pose sizes per second (the larger side of the joints' box),
    so one `beta` suits near and far people and any resolution. A track not seen for
    `forget_after` updates loses its state, so a long live run keeps memory flat.
    """

    def __init__(self, settings: OneEuroSettings):
        self.settings = settings
        self._filters: Dict[int, Tuple[OneEuroFilter, OneEuroFilter, int]] = {}
        self._updates = 0

    def reset(self) -> None:
        self._filters.clear()
        self._updates = 0

    def update(self, track_ids: np.ndarray, keypoints: np.ndarray, time_s: float) -> np.ndarray:
        track_ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        if len(track_ids) != len(keypoints):
            raise InputError(f"{len(track_ids)} track ids for {len(keypoints)} poses")
        tracked = track_ids[track_ids > 0]
        if len(np.unique(tracked)) != len(tracked):
            raise InputError("a track id appears twice in one frame")
        self._updates += 1
        smoothed = keypoints.copy()
        for index, track_id in enumerate(track_ids.tolist()):
            if track_id <= 0:
                continue
            centre_filter, offset_filter = self._filters_for(track_id)
            joints = keypoints[index, :, :2]
            centre = joints.mean(axis=0)
            size = max(float((joints.max(axis=0) - joints.min(axis=0)).max()), 1.0)
            smoothed[index, :, :2] = centre_filter(centre, time_s, size) + offset_filter(joints - centre, time_s, size)
        forget_after = self.settings.forget_after
        for track_id in [tid for tid, (_, _, seen) in self._filters.items() if self._updates - seen >= forget_after]:
            del self._filters[track_id]
        return smoothed

    def _filters_for(self, track_id: int) -> Tuple[OneEuroFilter, OneEuroFilter]:
        found = self._filters.get(track_id)
        if found is None:
            s = self.settings
            found = (OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff), OneEuroFilter(s.min_cutoff, s.beta, s.d_cutoff), 0)
        self._filters[track_id] = (found[0], found[1], self._updates)
        return found[0], found[1]


# --------------------------------------------------------------------------- Savitzky-Golay


def savgol_coefficients(window: int, order: int) -> np.ndarray:
    """Weights (window,) that give a centred window's least-squares polynomial value at its centre.

    Savitzky-Golay smoothing at evenly spaced, equally trusted samples is this fixed
    convolution (window 5, order 2: [-3, 12, 17, 12, -3] / 35).
    """
    if window < 1 or window % 2 != 1 or not 0 <= order < window:
        raise InputError(f"Savitzky-Golay needs an odd window > order >= 0, got window {window}, order {order}")
    offsets = np.arange(window, dtype=np.float64) - window // 2
    design = offsets[:, None] ** np.arange(order + 1)[None, :]
    return np.linalg.pinv(design)[0]


def savgol_smooth(
    positions: Sequence[int],
    times: Sequence[float],
    coordinates: np.ndarray,
    weights: np.ndarray,
    window: int,
    order: int,
) -> np.ndarray:
    """Smooth one track's joints offline, looking both ways in time.

    positions (T,): the frame numbers (in the sequence) where the track was seen,
    increasing; times (T,) their times; coordinates (T, J, 2); weights (T, J), e.g.
    keypoint scores. At each sample, every joint's x and y are fitted with a polynomial
    of `order` in time by weighted least squares over the samples within window // 2
    frames either side (fewer near the ends and around gaps), and replaced by the fit's
    value there. A joint whose window carries no weight keeps its coordinates.
    """
    savgol_coefficients(window, order)  # checks the window and order
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    coordinates = np.asarray(coordinates, dtype=np.float64)
    weights = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    count = len(positions)
    if times.shape != (count,) or coordinates.shape[:1] != (count,) or weights.shape != coordinates.shape[:2]:
        raise InputError("savgol_smooth: positions, times, coordinates and weights disagree in length")
    half = window // 2
    smoothed = coordinates.copy()
    powers = np.arange(order + 1)
    for centre in range(count):
        start = int(np.searchsorted(positions, positions[centre] - half, side="left"))
        stop = int(np.searchsorted(positions, positions[centre] + half, side="right"))
        offsets = times[start:stop] - times[centre]
        scale = np.abs(offsets).max() or 1.0  # unit-range abscissae keep the fit well conditioned
        design = (offsets / scale)[:, None] ** powers[None, :]  # (W, order + 1)
        window_weights = weights[start:stop]  # (W, J)
        # A joint seen with weight in only k samples gets a polynomial of order k - 1 at most:
        # a higher one is underdetermined and would extrapolate from too few points.
        usable = np.minimum(order, (window_weights > _NO_WEIGHT).sum(axis=0) - 1)  # (J,)
        for joint_order in np.unique(usable[usable >= 0]).tolist():
            joints = np.flatnonzero(usable == joint_order)
            smoothed[centre, joints] = _weighted_fit_at_zero(
                design[:, : joint_order + 1], window_weights[:, joints], coordinates[start:stop, joints]
            )
    return smoothed


def _weighted_fit_at_zero(design: np.ndarray, weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted least-squares polynomial value at abscissa 0, per joint: design (W, P),
    weights (W, J), values (W, J, 2) -> (J, 2)."""
    root_weight = np.sqrt(weights).T  # (J, W)
    weighted_design = root_weight[:, :, None] * design[None, :, :]  # (J, W, P)
    weighted_values = root_weight[:, :, None] * values.transpose(1, 0, 2)  # (J, W, 2)
    fitted = np.linalg.pinv(weighted_design) @ weighted_values  # (J, P, 2)
    return fitted[:, 0, :]
