"""Filling short gaps in a track with linearly interpolated poses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass(frozen=True)
class GapFill:
    """A missing frame of a track: at `position`, `fraction` of the way from sample `before` to `after`."""

    position: int  # frame position in the sequence
    before: int  # index of the track's sample just before the gap
    after: int  # index of the sample just after it
    fraction: float  # 0 at `before`, 1 at `after`, measured in time


def plan_gap_fills(positions: Sequence[int], frame_times: Sequence[float], max_gap: int) -> List[GapFill]:
    """The frames to fill in one track seen at `positions` (increasing frame positions of the
    sequence, whose times are `frame_times`): every frame of each gap of 1..max_gap frames."""
    fills: List[GapFill] = []
    positions = [int(p) for p in positions]
    for sample, (before, after) in enumerate(zip(positions, positions[1:])):
        if not 1 <= after - before - 1 <= max_gap:
            continue
        start, stop = frame_times[before], frame_times[after]
        for position in range(before + 1, after):
            fraction = (frame_times[position] - start) / (stop - start) if stop > start else (position - before) / (after - before)
            fills.append(GapFill(position, sample, sample + 1, float(fraction)))
    return fills


def interpolate(before: np.ndarray, after: np.ndarray, fraction: float) -> np.ndarray:
    """The point `fraction` of the way along the straight line from `before` to `after`."""
    before = np.asarray(before, dtype=np.float64)
    return before + fraction * (np.asarray(after, dtype=np.float64) - before)
