"""What a `keypoints` run keeps besides its results: its identity, its checkpoint and its shard files.

The identity of a run (settings, and a digest of every planned task with its file's
size and modification time) decides whether a checkpoint may be resumed and whether
shard files belong together. Checkpoint lines and shard files hold result rows
(`io.result_rows`), so a resumed, sharded or Ray run writes the bytes a single local
run writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from mspn_cli.errors import InputError, UsageError
from mspn_cli.io.checkpoint import JsonlCheckpoint, checkpoint_path_for
from mspn_cli.io.result_rows import is_result_row
from mspn_cli.io.shards import check_complete_shard_set, in_shard, read_shard_header
from mspn_cli.io.tasks import ImageTask
from mspn_cli.settings import RunSettings

PathLike = Union[str, Path]

__all__ = [
    "KEYPOINTS_CHECKPOINT_FORMAT", "KEYPOINTS_SHARD_FORMAT", "run_identity", "KeypointCheckpoint",
    "write_keypoint_shard", "is_keypoint_shard", "merge_keypoint_shards", "MergedKeypoints",
]

KEYPOINTS_CHECKPOINT_FORMAT = "mspn-keypoints-checkpoint/1"
KEYPOINTS_SHARD_FORMAT = "mspn-keypoints-shard/1"


def _file_stamp(path: Optional[str]) -> Optional[List[int]]:
    """[size, mtime_ns] of a regular local file, None for anything else (a URL, a missing file, a pipe)."""
    if not path:
        return None
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return [int(info.st_size), int(info.st_mtime_ns)]


def run_identity(settings: RunSettings, tasks: Sequence[ImageTask]) -> Dict[str, Any]:
    """What must be equal for a checkpoint to be resumed or for shards to be merged.

    `tasks` are all the tasks of the run (before sharding): a changed, added or removed
    input, or other boxes for it, give another digest.
    """
    values = settings.to_dict()
    values.pop("progress", None)  # how a run looks, not what it computes
    if values.get("precision") == "fp32":  # the default: checkpoints from before --precision existed stay resumable
        values.pop("precision")
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(json.dumps([task.to_row(), _file_stamp(task.path)], sort_keys=True).encode())
        digest.update(b"\n")
    return {
        "settings": values,
        "weights_files": {"weights": _file_stamp(settings.weights), "detector_weights": _file_stamp(settings.detector_weights)},
        "inputs": {"tasks": len(tasks), "sha256": digest.hexdigest()},
    }


class KeypointCheckpoint(JsonlCheckpoint):
    """`RESULTS.json.partial.jsonl`: a header with the run's identity, then one result row per finished image."""

    def __init__(self, results_path: PathLike, settings: Dict[str, Any]):
        super().__init__(checkpoint_path_for(results_path), KEYPOINTS_CHECKPOINT_FORMAT, settings, what="keypoints checkpoint")

    def load(self) -> Dict[int, Dict[str, Any]]:
        """Task index -> result row of the images an earlier run of these settings finished."""
        return {row["index"]: row for row in self.load_entries(is_result_row) if row.get("error") is None}

    def append(self, row: Dict[str, Any]) -> None:
        self.append_entry(row)


def write_keypoint_shard(path: PathLike, shard: Tuple[int, int], identity: Dict[str, Any], rows: Iterable[Dict[str, Any]]) -> None:
    """A shard file: every task of the shard as a result row (failed ones with their error), in task order."""
    from mspn_cli.io.writers import write_json_atomic

    write_json_atomic(path, {
        "format": KEYPOINTS_SHARD_FORMAT, "shard": [shard[0], shard[1]], "settings": identity,
        "rows": sorted(rows, key=lambda row: row["index"]),
    })


def is_keypoint_shard(path: PathLike) -> bool:
    """Whether `path` starts like a keypoints shard file (cheap: reads the first bytes only)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return head.startswith(b'{"format": "' + KEYPOINTS_SHARD_FORMAT.encode() + b'"')


@dataclass
class _KeypointShard:
    path: Path
    index: int
    count: int
    settings: Dict[str, Any]
    rows: List[Dict[str, Any]] = field(default_factory=list)


def _read_keypoint_shard(path: PathLike) -> _KeypointShard:
    path = Path(path)
    data, shard = read_shard_header(path, KEYPOINTS_SHARD_FORMAT, "mspn keypoints")
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(is_result_row(row) for row in rows):
        raise InputError(f"shard file {path}: 'rows' must be a list of result rows")
    settings = data.get("settings")
    if not isinstance(settings, dict):
        raise InputError(f"shard file {path}: no 'settings'")
    return _KeypointShard(path, shard[0], shard[1], settings, rows)


@dataclass
class MergedKeypoints:
    records: List[Dict[str, Any]]  # in task order: the list a single run writes
    images: int  # images that were processed
    failures: List[Tuple[str, str]]  # (path, reason), in task order
    notes: List[str]
    shards: int


def merge_keypoint_shards(paths: Sequence[PathLike]) -> MergedKeypoints:
    """All shard files of one `keypoints --shard K/N` run -> what a single run gives.

    Refuses shards of different N or settings, a shard twice, a missing shard, and a
    shard that lacks any of its tasks or holds another shard's.
    """
    if not paths:
        raise UsageError("no shard files given")
    loaded = [_read_keypoint_shard(p) for p in paths]
    check_complete_shard_set(loaded)
    total = int(loaded[0].settings.get("inputs", {}).get("tasks", -1))
    rows: List[Dict[str, Any]] = []
    for part in loaded:
        indices = [row["index"] for row in part.rows]
        expected = [i for i in range(total) if in_shard(i, part.index, part.count)]
        if indices != expected:
            raise InputError(f"shard file {part.path} does not hold exactly the tasks of shard {part.index}/{part.count}")
        rows.extend(part.rows)
    rows.sort(key=lambda row: row["index"])
    done = [row for row in rows if row["error"] is None]
    return MergedKeypoints(
        records=[record for row in done for record in row["records"]],
        images=len(done),
        failures=[(str(row.get("path", row.get("file_name"))), row["error"]) for row in rows if row["error"] is not None],
        notes=[note for row in done for note in row["notes"]],
        shards=loaded[0].count,
    )
