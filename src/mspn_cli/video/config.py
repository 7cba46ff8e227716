"""Video settings: the per-run choices (`VideoSettings`) and configs/video.toml (`VideoConfig`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

from mspn_cli.config import build_section, read_toml
from mspn_cli.errors import ConfigError, UsageError

DEFAULT_VIDEO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "video.toml"
SMOOTHING_ONLINE = ("none", "oneeuro")

__all__ = ["DEFAULT_VIDEO_CONFIG", "SMOOTHING_ONLINE", "KeyFrameConfig", "OutputConfig", "VideoConfig",
           "VideoSettings", "load_video_config"]


@dataclass(frozen=True)
class KeyFrameConfig:
    det_every: int
    keypoint_confidence: float
    min_keypoints: int
    duplicate_iou: float


@dataclass(frozen=True)
class OutputConfig:
    default_fps: float
    folder_extension: str
    suffix: str
    fourcc: Dict[str, str] = field(default_factory=dict)  # container extension (no dot) -> fourcc


@dataclass(frozen=True)
class VideoConfig:
    keyframes: KeyFrameConfig
    output: OutputConfig
    source: str = ""

    def fourcc_for(self, path: Union[str, Path]) -> Optional[str]:
        """The default fourcc of an output file's container, None when it is not a video container."""
        return self.output.fourcc.get(Path(path).suffix.lower().lstrip("."))


def load_video_config(path: Optional[Union[str, Path]] = None) -> VideoConfig:
    """configs/video.toml (or `path`), every value range-checked; ConfigError names the key."""
    path = Path(path) if path else DEFAULT_VIDEO_CONFIG
    data = read_toml(path)
    fourcc = data.get("output", {}).pop("fourcc", {}) if isinstance(data.get("output"), dict) else {}
    config = build_section(VideoConfig, data, "")
    if not isinstance(fourcc, dict) or not fourcc:
        raise ConfigError(f"{path}: [output.fourcc] must map container extensions to fourcc codes")
    for extension, code in fourcc.items():
        if not isinstance(code, str) or len(code) != 4:
            raise ConfigError(f"{path}: output.fourcc.{extension} must be a 4-character code, got {code!r}")
    keys, out = config.keyframes, config.output
    checks = (
        (keys.det_every >= 1, "keyframes.det_every must be at least 1"),
        (0.0 <= keys.keypoint_confidence <= 1.0, "keyframes.keypoint_confidence must be in [0, 1]"),
        (2 <= keys.min_keypoints <= 17, "keyframes.min_keypoints must be in [2, 17]"),
        (0.0 < keys.duplicate_iou <= 1.0, "keyframes.duplicate_iou must be in (0, 1]"),
        (math.isfinite(out.default_fps) and 0 < out.default_fps <= 1000, "output.default_fps must be in (0, 1000]"),
        (out.folder_extension.lstrip(".").lower() in fourcc, "output.folder_extension must be one of the [output.fourcc] containers"),
    )
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{path}: {message}")
    output = dataclasses.replace(out, fourcc={k.lower(): v for k, v in fourcc.items()},
                                 folder_extension="." + out.folder_extension.lstrip(".").lower())
    return dataclasses.replace(config, output=output, source=str(path))


@dataclass(frozen=True)
class VideoSettings:
    """How one video run treats its frames (the networks are `RunSettings`)."""

    every: int = 1  # process every N-th frame of the source
    det_every: Optional[int] = None  # detector on every N-th processed frame; None = the config's
    track: bool = True
    track_buffer: Optional[int] = None  # None = tracking.track_buffer of the tracking config
    smooth: str = "none"  # none | oneeuro (online)
    max_frames: Optional[int] = None  # processed frames per video; None = all
    tracking_config: Optional[str] = None  # None = the packaged configs/tracking.toml

    def __post_init__(self) -> None:
        if self.every < 1:
            raise UsageError("--every must be at least 1")
        if self.det_every is not None and self.det_every < 1:
            raise UsageError("--det-every must be at least 1")
        if self.track_buffer is not None and self.track_buffer < 0:
            raise UsageError("--track-buffer must be at least 0")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("--max-frames must be at least 1")
        smooth = str(self.smooth).lower()
        if smooth not in SMOOTHING_ONLINE:
            raise UsageError(f"--smooth must be one of {', '.join(SMOOTHING_ONLINE)} for a live run, got {self.smooth!r} "
                             "(savgol looks ahead in time: use `mspn track --smooth savgol` on the saved results)")
        object.__setattr__(self, "smooth", smooth)
        if smooth != "none" and not self.track:
            raise UsageError("--smooth filters each tracked person: it needs tracking (drop --no-track)")
