"""Tracking and smoothing settings, loaded from `configs/tracking.toml` with every range checked."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Type, TypeVar, Union

from mspn_cli.errors import ConfigError

if sys.version_info >= (3, 11):  # pragma: no cover
    import tomllib
else:
    import tomli as tomllib

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
    data = _read_toml(path)
    try:
        config = _build(TrackingConfig, data, "")
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


def _read_toml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _build(cls: Type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(_key(where, name) for name in unknown)}")
    values = {}
    for name, spec in fields.items():
        key = _key(where, name)
        if name not in data:
            raise ConfigError(f"missing key {key}")
        if name in _SECTIONS:
            values[name] = _build(_SECTIONS[name], data[name], key)
        else:
            values[name] = _checked_number(data[name], spec.metadata, key)
    return cls(**values)


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


# Nested tables by field name (the annotations are strings under `from __future__ import annotations`).
_SECTIONS: Dict[str, type] = {
    "tracking": TrackingSettings,
    "kalman": KalmanSettings,
    "smoothing": SmoothingSettings,
    "oneeuro": OneEuroSettings,
    "savgol": SavgolSettings,
}
