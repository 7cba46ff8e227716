"""Append-only, fsync'ed JSONL checkpoints: what makes a run resumable after Ctrl-C, SIGTERM or SIGKILL.

One file beside the run's results: a header line naming the format and the run's
settings, then one line per finished unit of work (an image). `eval-coco` and
`keypoints` each put their own entries in it; the file handling is the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from mspn_cli.errors import InputError, OutputError, UsageError

PathLike = Union[str, Path]

__all__ = ["JsonlCheckpoint", "checkpoint_path_for", "jsonable_roundtrip", "changed_keys", "changes_text"]


def checkpoint_path_for(results_path: PathLike) -> Path:
    """The JSONL checkpoint kept next to RESULTS.json while a run is unfinished."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.name + ".partial.jsonl")


def jsonable_roundtrip(value: Any) -> Any:
    """`value` as a resumed run reads it back from disk, so memory and checkpoint agree."""
    from mspn_cli.io.writers import to_jsonable

    return json.loads(json.dumps(to_jsonable(value)))


_VALUE_CHARS = 24  # a value longer than this is shortened in a refusal line
_CHANGES_CHARS = 110  # the changes part of a refusal line; the rest is "+N more"


def _flat(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts as {'a.b.c': leaf}; a non-dict is one leaf named by `prefix`."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    flat: Dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _short_name(key: str) -> str:
    """'run.settings.flip' -> 'flip': the run's settings are what users changed; other groups keep their name."""
    for wrapper in ("run.settings.", "run.", "settings."):
        if key.startswith(wrapper) and len(key) > len(wrapper):
            return key[len(wrapper):]
    return key or "format"


def _short_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:8] + "…"  # a digest: its first digits tell two apart
    return text if len(text) <= _VALUE_CHARS else "…" + text[-(_VALUE_CHARS - 1):]


def changed_keys(old: Any, new: Any) -> List[str]:
    """'key: old → new' for each setting that differs, nested settings named by their leaf (`flip: on → off`)."""
    old_flat, new_flat = _flat(old), _flat(new)
    keys = sorted(set(old_flat) | set(new_flat))
    missing = object()
    changes = []
    for key in keys:
        before, after = old_flat.get(key, missing), new_flat.get(key, missing)
        if before != after:
            shown = ["absent" if v is missing else _short_value(v) for v in (before, after)]
            changes.append(f"{_short_name(key)}: {shown[0]} → {shown[1]}")
    return changes or ["format"]


def changes_text(old: Any, new: Any) -> str:
    """The changed settings for one error line: as many as fit in about 110 characters, then '+N more'."""
    changes = changed_keys(old, new)
    shown: List[str] = []
    for number, change in enumerate(changes):
        if shown and len(", ".join(shown + [change])) > _CHANGES_CHARS:
            return ", ".join(shown) + f", +{len(changes) - number} more"
        shown.append(change if len(change) <= _CHANGES_CHARS else change[:_CHANGES_CHARS - 1] + "…")
    return ", ".join(shown)


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
        self._good_end = 0
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
        # Only read here: a torn tail is cut off by `open`, once the run has passed every check,
        # so a run refused after loading leaves the checkpoint exactly as it was.
        self._good_end = good_end
        self.dropped_tail_bytes = len(raw) - good_end
        self.found = header_seen
        return entries

    def _check_header(self, entry: Any) -> None:
        if not isinstance(entry, dict) or entry.get("format") != self.format_name:
            raise InputError(f"{self.path} is not an mspn {self.what}; delete it or pass --no-resume")
        if entry.get("settings") != self.settings:
            raise UsageError(
                f"checkpoint {self.path} was written with different settings ({changes_text(entry.get('settings'), self.settings)}); "
                "pass --no-resume to start over"
            )

    def _write_line(self, obj: Any) -> None:
        assert self._handle is not None
        self._handle.write(json.dumps(obj).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def peek_header(self) -> Optional[Dict[str, Any]]:
        """The header of the checkpoint on disk, if it is one of this format; reads only, never refuses."""
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
            header = json.loads(first) if first.endswith(b"\n") else None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return header if isinstance(header, dict) and header.get("format") == self.format_name else None

    def holds_entries(self) -> bool:
        """Whether the file on disk has a complete line after its header (read back, so a stop that
        lands in the middle of an append is judged by what reached the file)."""
        try:
            with open(self.path, "rb") as handle:
                return handle.read().count(b"\n") >= 2
        except OSError:
            return False

    def open(self) -> None:
        """Open for appending: a torn tail found by `load_entries` is cut off, a torn header starts a fresh file."""
        try:
            if self.path.exists() and not self.found:
                self.path.unlink()  # only a torn header (or nothing): start a fresh file
            elif self.dropped_tail_bytes:
                with open(self.path, "r+b") as handle:
                    handle.truncate(self._good_end)
                    handle.flush()
                    os.fsync(handle.fileno())
                self.dropped_tail_bytes = 0
            fresh = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
