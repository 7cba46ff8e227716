"""Constant-velocity Kalman filter on a person box (centre x, centre y, width, height).

The state is the box and its velocity per frame. Noise scales with the box height, as
in DeepSORT and ByteTrack, so near and far people are treated alike.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from mspn_cli.tracking.settings import KalmanSettings

_DIM = 4  # cx, cy, w, h
_MEASURE = np.hstack([np.eye(_DIM), np.zeros((_DIM, _DIM))])
_MIN_SIZE = 1.0  # pixels: a prediction never shrinks a box to nothing


class BoxKalmanFilter:
    """One track's box estimate. `predict` advances it, `update` corrects it with a detection."""

    def __init__(self, box_cxcywh: np.ndarray, settings: KalmanSettings):
        self.settings = settings
        box = np.asarray(box_cxcywh, dtype=np.float64).reshape(_DIM)
        self.mean = np.concatenate([box, np.zeros(_DIM)])
        height = max(box[3], _MIN_SIZE)
        # A new track's velocity is unknown: start with a wide velocity spread.
        std = np.concatenate(
            [np.full(_DIM, 2 * settings.position_noise * height), np.full(_DIM, 10 * settings.velocity_noise * height)]
        )
        self.covariance = np.diag(std**2)

    @property
    def box(self) -> np.ndarray:
        """The current estimate (cx, cy, w, h)."""
        return self.mean[:_DIM].copy()

    def predict(self, frames: float = 1.0, hold_size: bool = False) -> None:
        """Advance the state by `frames`; `hold_size` stops the size from drifting while unseen."""
        if hold_size:
            self.mean[6:] = 0.0
        transition = np.eye(2 * _DIM)
        transition[:_DIM, _DIM:] = frames * np.eye(_DIM)
        height = max(self.mean[3], _MIN_SIZE)
        std = np.concatenate(
            [np.full(_DIM, self.settings.position_noise * height), np.full(_DIM, self.settings.velocity_noise * height)]
        )
        self.mean = transition @ self.mean
        self.mean[2:4] = np.maximum(self.mean[2:4], _MIN_SIZE)
        self.covariance = transition @ self.covariance @ transition.T + np.diag(std**2) * frames

    def update(self, box_cxcywh: np.ndarray) -> None:
        measured = np.asarray(box_cxcywh, dtype=np.float64).reshape(_DIM)
        height = max(self.mean[3], _MIN_SIZE)
        noise = np.diag(np.full(_DIM, (self.settings.measurement_noise * height) ** 2))
        projected_mean, projected_cov = self._project(noise)
        gain = np.linalg.solve(projected_cov, _MEASURE @ self.covariance).T  # covariances are symmetric
        self.mean = self.mean + gain @ (measured - projected_mean)
        self.mean[2:4] = np.maximum(self.mean[2:4], _MIN_SIZE)
        self.covariance = self.covariance - gain @ projected_cov @ gain.T

    def _project(self, noise: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return _MEASURE @ self.mean, _MEASURE @ self.covariance @ _MEASURE.T + noise
