"""Tracking and smoothing settings, loaded from `configs/tracking.toml` with every range checked."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, TypeVar, Union

from mspn_cli.config import build_section, read_toml
from mspn_cli.errors import ConfigError

DEFAULT_TRACKING_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tracking.toml"

INF = math.inf


def _bounded(low: float, high: float = INF, *, open_low: bool = False, integer: bool = False) -> Dict[str, Any]:
    """Field metadata: the value must lie in [low, high] (or (low, high] with open_low)."""
    return {"low": low, "high": high, "open_low": open_low, "integer": integer}


@dataclass(frozen=True)
class KalmanSettings:
    position_noise: float = field(metadata=_bounded(0.0, open_low=True))
    velocity_noise: float = field(metadata=_bounded(0.0, open_low=True))
    measurement_noise: float = field(metadata=_bounded(0.0, open_low=True))


@dataclass(frozen=True)
class TrackingSettings:
    high_score: float = field(metadata=_bounded(0.0, 1.0))
    low_score: float = field(metadata=_bounded(0.0, 1.0))
    new_track_score: float = field(metadata=_bounded(0.0, 1.0))
    match_threshold: float = field(metadata=_bounded(0.0, 1.0))
    low_match_threshold: float = field(metadata=_bounded(0.0, 1.0))
    track_buffer: int = field(metadata=_bounded(0, 100_000, integer=True))
    oks_weight: float = field(metadata=_bounded(0.0))
    iou_weight: float = field(metadata=_bounded(0.0))
    kalman: KalmanSettings


@dataclass(frozen=True)
class OneEuroSettings:
    min_cutoff: float = field(metadata=_bounded(0.0, open_low=True))
    beta: float = field(metadata=_bounded(0.0))
    d_cutoff: float = field(metadata=_bounded(0.0, open_low=True))
    forget_after: int = field(metadata=_bounded(1, 100_000, integer=True))


@dataclass(frozen=True)
class SavgolSettings:
    window: int = field(metadata=_bounded(3, 1001, integer=True))
    order: int = field(metadata=_bounded(0, 10, integer=True))


@dataclass(frozen=True)
class SmoothingSettings:
    default_fps: float = field(metadata=_bounded(0.0, 10_000.0, open_low=True))
    oneeuro: OneEuroSettings
    savgol: SavgolSettings


@dataclass(frozen=True)
class TrackingConfig:
    tracking: TrackingSettings
    smoothing: SmoothingSettings
    source: str = ""


T = TypeVar("T")


def load_tracking_config(path: Optional[Union[str, Path]] = None) -> TrackingConfig:
    """Load and check a tracking config; the packaged default when `path` is None.

    Raises ConfigError naming the file and the key for a missing, mistyped or out-of-range value.
    """
    path = Path(path) if path else DEFAULT_TRACKING_CONFIG
    data = read_toml(path)
    try:
        config = build_section(TrackingConfig, data, "")
        _check_bounds(config)
        _check_relations(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return dataclasses.replace(config, source=str(path))


def _check_relations(config: TrackingConfig) -> None:
    track = config.tracking
    if track.low_score > track.high_score:
        raise ConfigError(f"tracking.low_score ({track.low_score}) must not exceed tracking.high_score ({track.high_score})")
    if track.oks_weight + track.iou_weight <= 0:
        raise ConfigError("tracking.oks_weight + tracking.iou_weight must be positive")
    savgol = config.smoothing.savgol
    if savgol.window % 2 != 1:
        raise ConfigError(f"smoothing.savgol.window must be odd, got {savgol.window}")
    if savgol.order >= savgol.window:
        raise ConfigError(f"smoothing.savgol.order ({savgol.order}) must be below smoothing.savgol.window ({savgol.window})")


def _check_bounds(section: Any, where: str = "") -> None:
    """Every number against the interval its field declares (nested sections recursively)."""
    for spec in dataclasses.fields(section):
        if spec.name == "source":
            continue
        value, key = getattr(section, spec.name), _key(where, spec.name)
        if dataclasses.is_dataclass(value):
            _check_bounds(value, key)
        elif spec.metadata:
            _checked_number(value, spec.metadata, key)


def _checked_number(value: Any, bounds: Any, key: str) -> Union[int, float]:
    integer = bounds["integer"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    low, high = bounds["low"], bounds["high"]
    below = value <= low if bounds["open_low"] else value < low
    if below or value > high or (isinstance(value, float) and not math.isfinite(value)):
        interval = f"{'(' if bounds['open_low'] else '['}{low}, {high if high != INF else 'inf'}]"
        raise ConfigError(f"{key} must be in {interval}, got {value!r}")
    return value if integer else float(value)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
