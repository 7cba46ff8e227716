"""Video inputs read through OpenCV: files, cameras (`cam:0`) and stream URLs (rtsp, http).

Frames come one at a time with their index in the source and their timestamp from
the container (`pts_ms`, CAP_PROP_POS_MSEC), so `--every` and variable frame rates
stay aligned with the video's own clock. Nothing here runs a model or prints.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import urlsplit

import cv2
import numpy as np

from mspn_cli._mge import silenced_stderr
from mspn_cli.errors import InputError

__all__ = ["STREAM_SCHEMES", "VideoFrame", "VideoSource", "is_stream_spec", "stream_display_name"]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
_CAMERA = re.compile(r"^cam:(\d+)$", re.IGNORECASE)


def is_stream_spec(text: str) -> bool:
    """`cam:N` or a URL OpenCV's FFmpeg opens as a stream (rtsp://, http(s)://, ...)."""
    text = str(text)
    if _CAMERA.match(text):
        return True
    return "://" in text and urlsplit(text).scheme.lower() in STREAM_SCHEMES


def stream_display_name(spec: str) -> str:
    """The `file_name` of a stream's records: `cam0`, or the URL's last path segment."""
    camera = _CAMERA.match(spec)
    if camera:
        return f"cam{camera.group(1)}"
    segment = urlsplit(spec).path.rstrip("/").rsplit("/", 1)[-1]
    return segment or urlsplit(spec).hostname or "stream"


@dataclass
class VideoFrame:
    """One decoded frame: its index in the source (0-based), timestamp in ms (None if unknown)."""

    index: int
    pts_ms: Optional[float]
    image: np.ndarray


class VideoSource:
    """An open video: a file path, `cam:N`, or a stream URL. Use as a context manager.

    `fps` is None when the source does not say (some cameras and streams); `frame_count`
    is None for live sources and when the container does not know it.
    """

    def __init__(self, spec: Union[str, Path]):
        self.spec = str(spec)
        camera = _CAMERA.match(self.spec)
        self._camera = bool(camera)
        self.live = self._camera or is_stream_spec(self.spec)
        self.name = stream_display_name(self.spec) if self.live else Path(self.spec).name
        if camera:
            opener, what = (lambda: cv2.VideoCapture(int(camera.group(1)))), f"cannot open camera {camera.group(1)}"
        elif self.live:
            opener = lambda: cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG)  # noqa: E731
            what = "cannot open the stream (unreachable, or not a video OpenCV can read)"
        else:
            path = Path(self.spec)
            if path.is_dir():
                raise InputError(f"{path}: is a folder, not a video")
            if not path.is_file():
                raise InputError(f"{path}: file not found")
            opener, what = (lambda: cv2.VideoCapture(str(path))), "not a readable video"
        # OpenCV and FFmpeg print their own lines on fd 2 ("moov atom not found", "can't open
        # camera by index"); the one line the user gets is ours.
        with silenced_stderr():
            capture = opener()
        if not capture.isOpened():
            capture.release()
            raise InputError(f"{self.spec}: {what}")
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps: Optional[float] = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count: Optional[int] = count if count > 0 and not self.live else None

    def frames(self, every: int = 1, max_frames: Optional[int] = None) -> Iterator[VideoFrame]:
        """Every `every`-th frame (the others are grabbed, not decoded), at most `max_frames` of them.

        A file that yields no frame at all raises InputError; a stream that ends is simply over.
        """
        if every < 1:
            raise ValueError("every must be at least 1")
        capture = self._capture
        index = produced = 0
        started = time.monotonic()
        last_pts: Optional[float] = None
        while max_frames is None or produced < max_frames:
            if index % every:
                if not capture.grab():
                    break
                index += 1
                continue
            ok, image = capture.read()
            if not ok or image is None:
                break
            pts = self._timestamp(started)
            # A source whose clock stands still or runs back (some cameras) has no usable timestamp.
            if pts is not None and last_pts is not None and pts <= last_pts:
                pts = None
            if pts is not None:
                last_pts = pts
            produced += 1
            yield VideoFrame(index, pts, image)
            index += 1
        if index == 0 and not self.live:
            raise InputError(f"{self.spec}: video has no readable frames")

    def _timestamp(self, started: float) -> Optional[float]:
        if self._camera:
            # A camera has no container clock (V4L2 reports driver-specific values): the time since the run started stands in.
            return round((time.monotonic() - started) * 1000.0, 3)
        pts = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        return round(float(pts), 3) if pts is not None and np.isfinite(pts) and pts >= 0 else None

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
