"""Inputs: expanding files, folders, globs and path lists; decoding images and video frames.

Nothing here runs a model. Decoding happens ahead of inference on a background thread
(`prefetch`), so the network never waits on disk or JPEG decoding.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

# Refuse absurd image headers before OpenCV tries to allocate them (default is 2^30 px).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mspn_cli.errors import InputError, unreadable_reason  # noqa: E402
from mspn_cli.io.video_source import is_stream_spec  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
LIST_EXTENSIONS = (".txt", ".lst")
# Image formats OpenCV's build cannot decode: left out of folder listings, and said so.
UNREADABLE_IMAGE_EXTENSIONS = (".gif", ".avif", ".heic", ".heif", ".jxl", ".svg", ".ico", ".psd", ".dng", ".cr2", ".nef", ".arw")

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputItem",
    "expand_inputs",
    "is_video",
    "read_image",
    "decode_image_bytes",
    "image_id_for",
    "prefetch",
]


@dataclass(frozen=True)
class InputItem:
    """One input file; `error` is set when it could not even be listed (e.g. missing)."""

    path: Path
    error: Optional[str] = None
    stream: Optional[str] = None  # `cam:N` or a stream URL as given (a Path would mangle "://")

    @property
    def is_video(self) -> bool:
        return self.stream is not None or is_video(self.path)

    @property
    def source(self) -> str:
        """What to open: the stream spec, else the file path."""
        return self.stream if self.stream is not None else str(self.path)


def is_video(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _list_file(path: Path) -> List[InputItem]:
    items = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read path list {path}: {exc}") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line)
        if not entry.is_absolute():
            entry = path.parent / entry
        items.append(InputItem(entry) if entry.exists() else InputItem(entry, "file not found"))
    return items


def expand_inputs(inputs: Sequence[Union[str, Path]], recursive: bool = False,
                  skipped: Optional[List[Path]] = None) -> List[InputItem]:
    """Files, folders (their images, sorted), globs and .txt path lists -> input items.

    A missing path becomes an item carrying an error, so a batch can report it at the
    end instead of stopping. An input that expands to nothing raises InputError.
    Image files of a folder in a format that cannot be decoded (GIF, AVIF, HEIC, ...)
    are left out and appended to `skipped`, for the run's summary.
    """
    items: List[InputItem] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text)
        if is_stream_spec(text) and not path.exists():
            items.append(InputItem(path, stream=text))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file())
            found = [p for p in files if _is_image_name(p) or is_video(p)]
            unreadable = [p for p in files if p.suffix.lower() in UNREADABLE_IMAGE_EXTENSIONS]
            if skipped is not None:
                skipped.extend(unreadable)
            if not found:
                kinds = ", ".join(sorted({p.suffix.lower() for p in unreadable}))
                raise InputError(f"no images found in folder {path}" + (f" (only {kinds} files, which mspn cannot read)" if kinds else ""))
            items.extend(InputItem(p) for p in found)
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            listed = _list_file(path)
            if not listed:
                raise InputError(f"path list {path} names no files")
            items.extend(listed)
        elif path.exists():
            items.append(InputItem(path))
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"no files match {text}")
            items.extend(InputItem(p) for p in found)
        else:
            items.append(InputItem(path, "file not found"))
    return items


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def decode_image_bytes(data: bytes, name: str = "image", allow_truncated: bool = False,
                       notes: Optional[List[str]] = None) -> np.ndarray:
    """Decode encoded image bytes to H x W x 3 uint8 BGR.

    IMREAD_COLOR matches the official `cv2.imread` path: grayscale is replicated,
    alpha is dropped, 16-bit is scaled to 8-bit, EXIF orientation is applied.
    A truncated file (a partial download) is refused unless `allow_truncated`; the
    decoders' own stderr lines are kept off the user's terminal. Remarks that are not
    errors (only page 1 of a multi-page TIFF is used, a truncated file decoded as is)
    are appended to `notes`.
    """
    from mspn_cli.io.image_checks import quiet_imdecode, said_premature_end, tiff_page_count, truncation_of

    if not data:
        raise InputError(f"{name}: empty file")
    truncated = truncation_of(data)
    if truncated and not allow_truncated:
        raise InputError(f"{name}: {truncated}; pass --allow-truncated to use what it holds")
    if truncated and data[:2] == JPEG_START:
        # Ended with an end-of-image marker: OpenCV >= 4.11 refuses a JPEG cut short, and 4.10
        # fills its missing rows otherwise than with the marker; with it, every OpenCV decodes
        # the same rows the same way, so Python 3.10 and 3.11+ give the same image.
        data += JPEG_END
    image, captured = quiet_imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        reason = f"{truncated}, and what it holds cannot be decoded" if truncated else "not a readable image (corrupt, truncated or unsupported format)"
        raise InputError(f"{name}: {reason}")
    if not truncated and said_premature_end(captured):
        truncated = "truncated JPEG: the decoder reached the end of the data early"
        if not allow_truncated:
            raise InputError(f"{name}: {truncated}; pass --allow-truncated to use what it holds")
    if notes is not None:
        if truncated:
            notes.append(f"{name}: {truncated}; decoded as is (--allow-truncated): missing rows are filled in")
        pages = tiff_page_count(data)
        if pages > 1:
            notes.append(f"{name}: a multi-page TIFF ({pages} pages); only page 1 is used")
    return image


def read_image(path: Union[str, Path], allow_truncated: bool = False, notes: Optional[List[str]] = None) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 BGR, or raise InputError with one clear line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {unreadable_reason(exc)}") from None
    return decode_image_bytes(data, str(path), allow_truncated, notes)


def image_id_for(path: Union[str, Path], fallback: int) -> int:
    """COCO-style id: the numeric file stem (000000000785.jpg -> 785), else `fallback`."""
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else fallback


T = TypeVar("T")
R = TypeVar("R")


_END = object()


def prefetch(items: Iterable[T], load: Callable[[T], R], depth: int = 4) -> Iterator[Tuple[T, Optional[R], Optional[BaseException]]]:
    """Yield (item, load(item), error) in order, with `load` running on up to `depth` items ahead.

    `items` is iterated on the calling thread (it may run MegEngine, which is bound to
    the thread that initialised it); only `load` (numpy/cv2 work, which releases the
    GIL) runs on a background thread. Errors from `load` are yielded, not raised, so
    the consumer decides whether a bad file stops the batch. At most `depth` items are
    handed to the loader beyond the one being yielded.

    Stopping early (the consumer breaks, or a signal raises Interrupted while the calling
    thread waits here) tells the loader to skip what it still holds and waits only for the
    load in progress, so no decode is left running (and holding fd 2, io.image_checks) while
    the process exits; a second Ctrl-C interrupts that wait, and the loader, a daemon
    thread, then holds up nothing. The calling thread waits on C-level queues only: an
    exception raised by a signal handler cannot leave a Python-level lock held there for
    the loader to block on (a ThreadPoolExecutor's futures could, and its shutdown then
    waited for ever).
    """
    todo: "queue.SimpleQueue" = queue.SimpleQueue()
    done: "queue.SimpleQueue" = queue.SimpleQueue()
    abandoned = [False]  # a plain flag: setting it takes no lock

    def work() -> None:
        while True:
            item = todo.get()
            if item is _END:
                return
            if abandoned[0]:
                continue
            try:
                done.put((item, load(item), None))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                done.put((item, None, exc))

    loader = threading.Thread(target=work, name="mspn-prefetch", daemon=True)
    loader.start()
    ahead = max(depth, 0) + 1  # items handed to the loader and not yet yielded
    in_flight = 0
    finished = False
    try:
        for item in items:
            todo.put(item)
            in_flight += 1
            if in_flight >= ahead:
                in_flight -= 1
                yield done.get()
        while in_flight:
            in_flight -= 1
            yield done.get()
        finished = True
    finally:
        abandoned[0] = not finished
        todo.put(_END)
        loader.join()
