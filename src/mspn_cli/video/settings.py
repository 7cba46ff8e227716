"""The per-run choices of a video run (`VideoSettings`); configs/video.toml is `mspn_cli.config.VideoConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mspn_cli.errors import UsageError

SMOOTHING_ONLINE = ("none", "oneeuro")

__all__ = ["SMOOTHING_ONLINE", "VideoSettings"]


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
