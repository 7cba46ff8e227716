"""Append-only, fsync'ed JSONL checkpoints: what makes a run resumable after Ctrl-C, SIGTERM or SIGKILL.

One file beside the run's results: a header line naming the format and the run's
settings, then one line per finished unit of work (an image). `eval-coco` and
`keypoints` each put their own entries in it; the file handling is the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

from mspn_cli.errors import InputError, OutputError, UsageError

PathLike = Union[str, Path]

__all__ = ["JsonlCheckpoint", "checkpoint_path_for", "jsonable_roundtrip", "changed_keys"]


def checkpoint_path_for(results_path: PathLike) -> Path:
    """The JSONL checkpoint kept next to RESULTS.json while a run is unfinished."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.name + ".partial.jsonl")


def jsonable_roundtrip(value: Any) -> Any:
    """`value` as a resumed run reads it back from disk, so memory and checkpoint agree."""
    from mspn_cli.io.writers import to_jsonable

    return json.loads(json.dumps(to_jsonable(value)))


def changed_keys(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """'key: old -> new' for each setting that differs (for one error line)."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)] or ["format"]


class JsonlCheckpoint:
    """A header line `{"format": FORMAT, "settings": {...}}`, then one JSON object per line.

    Each line is flushed and fsync'ed as it is written, so after SIGKILL or a power cut
    at most the last line is torn; `load` truncates a torn tail. A file of another format
    or written with other settings is refused with one line.
    """

    def __init__(self, path: PathLike, format_name: str, settings: Dict[str, Any], what: str = "checkpoint"):
        self.path = Path(path)
        self.format_name = format_name
        self.settings = jsonable_roundtrip(settings)
        self.what = what
        self.found = False  # load() found a header of this run: an earlier run of it was interrupted
        self.dropped_tail_bytes = 0
        self._handle = None

    def load_entries(self, is_entry: Callable[[Any], bool]) -> List[Dict[str, Any]]:
        """The entries of an earlier run with the same settings, in file order; [] if there is none."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise InputError(f"cannot read checkpoint {self.path}: {exc.strerror}") from None
        entries: List[Dict[str, Any]] = []
        good_end = 0
        header_seen = False
        position = 0
        while position < len(raw):
            newline = raw.find(b"\n", position)
            if newline < 0:
                break  # torn last line: no newline was written
            try:
                entry = json.loads(raw[position:newline])
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not header_seen:
                self._check_header(entry)
                header_seen = True
            elif is_entry(entry):
                entries.append(entry)
            else:
                break
            position = newline + 1
            good_end = position
        self.dropped_tail_bytes = len(raw) - good_end
        if self.dropped_tail_bytes:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        if not header_seen:
            self.path.unlink()  # only a torn header: start a fresh file
        self.found = header_seen
        return entries

    def _check_header(self, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("format") != self.format_name:
            raise InputError(f"{self.path} is not an mspn {self.what}; delete it or pass --no-resume")
        if entry.get("settings") != self.settings:
            changed = changed_keys(entry.get("settings") or {}, self.settings)
            raise UsageError(
                f"checkpoint {self.path} was written with different settings ({', '.join(changed)}); "
                "pass --no-resume to start over"
            )

    def _write_line(self, obj: Any) -> None:
        assert self._handle is not None
        self._handle.write(json.dumps(obj).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def open(self) -> None:
        fresh = not self.path.exists()
        try:
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise OutputError(f"cannot write checkpoint {self.path}: {exc.strerror}") from None
        if fresh:
            self._write_line({"format": self.format_name, "settings": self.settings})

    def append_entry(self, entry: Dict[str, Any]) -> None:
        self._write_line(entry)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
