"""Outputs, written atomically: an interrupted run never leaves half a file behind.

Each writer goes to a temporary file in the destination folder and renames it into
place, and refuses to replace an existing file unless asked to.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

import cv2
import numpy as np

from mspn_cli.errors import OutputError, OutputExistsError

__all__ = [
    "check_output_path",
    "creatable_folder_problem",
    "refuse_output_onto_inputs",
    "atomic_write",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_image_atomic",
    "JsonlWriter",
    "VideoWriterAtomic",
    "to_jsonable",
]


def creatable_folder_problem(folder: Union[str, Path]) -> Optional[str]:
    """Why `folder` cannot hold outputs, or None when it can (it exists, or can be created).

    A missing output folder is created on the first write (`atomic_write`, the checkpoint),
    as most tools do for results folders; this only says, before any work, whether that
    will work: an existing ancestor that is a file, or not writable, is named.
    """
    folder = Path(folder) if str(folder) else Path(".")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent if str(probe.parent) else Path(".")
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK):
        return f"folder {probe} is not writable"
    return None


def check_output_path(path: Union[str, Path], overwrite: bool = False, what: str = "output") -> Path:
    """Fail early (before any work) when `path` cannot or must not be written.

    Missing folders on the way are fine: they are created when the file is written.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    problem = creatable_folder_problem(parent)
    if problem is not None:
        raise OutputExistsError(f"cannot write {what} {path}: {problem}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {path} already exists; pass --overwrite to replace it")
    return path


def refuse_output_onto_inputs(outputs, inputs) -> None:
    """No output of a run may be one of its inputs, with or without --overwrite."""
    def identity(p):
        p = Path(p)
        try:
            st = p.stat()
            return ("inode", st.st_dev, st.st_ino)
        except OSError:
            return ("path", str(p.resolve()))

    known = {}
    for item in inputs:
        if item is not None and str(item) != "-":
            known.setdefault(identity(item), str(item))
    for output in outputs:
        if output is None or str(output) == "-":
            continue
        clash = known.get(identity(output))
        if clash is not None:
            raise OutputExistsError(f"output {output} is one of the inputs ({clash}); choose another output path")


@contextmanager
def atomic_write(path: Union[str, Path], mode: str = "w", *, overwrite: bool = True, fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file next to `path`; move it to `path` only when the block succeeds.

    The project's one temp-file-and-rename: outputs, downloads, weights and graphs all
    use it. With `overwrite=False` an existing `path` (even one that appeared meanwhile)
    is left alone and OutputError is raised. `fsync` makes the bytes durable before the
    rename, so a crash never leaves a complete-looking but empty file.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)  # a missing output folder is created (checked beforehand)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp creates 0600; use the usual mode
        if overwrite:
            os.replace(tmp_name, path)
        else:
            _move_no_clobber(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise


def _move_no_clobber(tmp_name: str, path: Path) -> None:
    # A hard link fails if the target appeared since any earlier check; os.replace would not.
    try:
        os.link(tmp_name, path)
    except FileExistsError:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputError(f"{path} already exists; pass --overwrite to replace it") from None
        os.replace(tmp_name, path)
        return
    os.unlink(tmp_name)


def write_bytes_atomic(path: Union[str, Path], data: bytes, *, overwrite: bool = True) -> Path:
    """`data` to `path` through `atomic_write`; returns the path."""
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python; non-finite floats -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Union[str, Path], obj: Any, indent: Optional[int] = None) -> None:
    """Write JSON to `path` atomically, or to stdout when `path` is "-"."""
    text = json.dumps(to_jsonable(obj), indent=indent)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    with atomic_write(path) as handle:
        handle.write(text)


def write_image_atomic(path: Union[str, Path], image: np.ndarray, jpeg_quality: int = 92) -> None:
    path = Path(path)
    extension = path.suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if extension in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(extension, image, params)
    if not ok:
        raise OutputError(f"cannot encode image as {extension}: {path}")
    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())


class JsonlWriter:
    """One JSON record per line, flushed as each arrives (to a file or stdout)."""

    def __init__(self, path: Union[str, Path]):
        self.path = str(path)
        if self.path == "-":
            self._handle: IO = sys.stdout
            self._owned = False
        else:
            self._handle = open(self.path, "w")
            self._owned = True

    def write(self, record: Any) -> None:
        self._handle.write(json.dumps(to_jsonable(record)) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._owned:
            self._handle.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VideoWriterAtomic:
    """A video written to a hidden temporary file next to `path` and renamed into place by `close`.

    `close` after an interruption still renames, so the frames written so far form a
    valid, playable file; `abort` (on an error) removes the temporary file. A video
    with no frame is not written at all. `fourcc` is the codec (e.g. "VP90"; callers
    take the container's default from configs/video.toml). With `overwrite` False an
    existing `path`, even one that appeared meanwhile, is left alone (OutputError).
    """

    def __init__(self, path: Union[str, Path], fps: float, size, fourcc: str, overwrite: bool = False):
        from mspn_cli._mge import silenced_stderr

        self.path = Path(path)
        self.overwrite = overwrite
        self.fourcc = fourcc
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp{self.path.suffix}")
        if len(fourcc) != 4:
            raise OutputError(f"--fourcc must be 4 characters (such as VP90, MJPG, mp4v), got {fourcc!r}")
        # FFmpeg prints tag-fallback notes ("VP90 is not supported ... fallback to vp09") on fd 2.
        with silenced_stderr():
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), float(max(fps, 1.0)),
                                           (int(size[0]), int(size[1])))
        if not self._writer.isOpened():
            self._writer.release()
            self._unlink_tmp()
            raise OutputError(f"cannot write {self.path}: OpenCV has no encoder for fourcc {fourcc!r} in a "
                              f"{self.path.suffix or 'suffix-less'} file")
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:  # OpenCV drops such frames silently
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> Optional[Path]:
        """Finish the file and move it into place; returns its path, or None when no frame was written."""
        self._writer.release()
        if self.frames == 0:
            self._unlink_tmp()
            return None
        os.chmod(self._tmp, 0o666 & ~_current_umask())
        try:
            if self.overwrite:
                os.replace(self._tmp, self.path)
            else:
                _move_no_clobber(str(self._tmp), self.path)
        except BaseException:
            self._unlink_tmp()
            raise
        return self.path

    def abort(self) -> None:
        self._writer.release()
        self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except OSError:
            pass
