"""Constant-velocity Kalman filter on a person box (centre x, centre y, width, height).

The state is the box and its velocity per frame. Noise scales with the box height, as
in DeepSORT and ByteTrack, so near and far people are treated alike. The four box
coordinates move independently (diagonal process and measurement noise), so the 8x8
covariance is four independent 2x2 blocks (a coordinate and its velocity); they are
kept as three arrays of four, which is exact and avoids small-matrix linear algebra.
"""

from __future__ import annotations

import numpy as np

from mspn_cli.config import KalmanSettings

_MIN_SIZE = 1.0  # pixels: a prediction never shrinks a box to nothing


class BoxKalmanFilter:
    """One track's box estimate. `predict` advances it, `update` corrects it with a detection."""

    def __init__(self, box_cxcywh: np.ndarray, settings: KalmanSettings):
        self.settings = settings
        self.position = np.asarray(box_cxcywh, dtype=np.float64).reshape(4).copy()
        self.velocity = np.zeros(4)
        height = max(self.position[3], _MIN_SIZE)
        # A new track's velocity is unknown: start with a wide velocity spread.
        self.var_position = np.full(4, (2 * settings.position_noise * height) ** 2)
        self.var_velocity = np.full(4, (10 * settings.velocity_noise * height) ** 2)
        self.covariance = np.zeros(4)  # between each coordinate and its velocity

    @property
    def box(self) -> np.ndarray:
        """The current estimate (cx, cy, w, h)."""
        return self.position.copy()

    def predict(self, frames: float = 1.0, hold_size: bool = False) -> None:
        """Advance the state by `frames`; `hold_size` stops the size from drifting while unseen."""
        if hold_size:
            self.velocity[2:] = 0.0
        height = max(self.position[3], _MIN_SIZE)
        process_position = (self.settings.position_noise * height) ** 2 * frames
        process_velocity = (self.settings.velocity_noise * height) ** 2 * frames
        self.position = self.position + frames * self.velocity
        self.position[2:] = np.maximum(self.position[2:], _MIN_SIZE)
        self.var_position = (
            self.var_position + 2 * frames * self.covariance + frames**2 * self.var_velocity + process_position
        )
        self.covariance = self.covariance + frames * self.var_velocity
        self.var_velocity = self.var_velocity + process_velocity

    def update(self, box_cxcywh: np.ndarray) -> None:
        measured = np.asarray(box_cxcywh, dtype=np.float64).reshape(4)
        height = max(self.position[3], _MIN_SIZE)
        innovation_var = self.var_position + (self.settings.measurement_noise * height) ** 2
        gain_position = self.var_position / innovation_var
        gain_velocity = self.covariance / innovation_var
        innovation = measured - self.position
        self.position = self.position + gain_position * innovation
        self.position[2:] = np.maximum(self.position[2:], _MIN_SIZE)
        self.velocity = self.velocity + gain_velocity * innovation
        # P - K S K^T, block by block.
        self.var_velocity = self.var_velocity - self.covariance**2 / innovation_var
        self.covariance = self.covariance - self.var_position * self.covariance / innovation_var
        self.var_position = self.var_position - self.var_position**2 / innovation_var
