"""Shards of one run (`--shard K/N`): which share of the work is whose, and checking a set of shard files.

Shared by `eval-coco` (images in sorted-id order) and `keypoints` (tasks in input
order): the i-th unit of work goes to shard i % N, so shards stay balanced when the
inputs are ordered by something that correlates with crowd size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Protocol, Sequence, Tuple

from mspn_cli.errors import InputError, UsageError
from mspn_cli.io.checkpoint import changes_text

__all__ = ["parse_shard", "in_shard", "check_complete_shard_set"]


def parse_shard(text: str) -> Tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (K is 0-based, like $SLURM_ARRAY_TASK_ID)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"--shard must look like K/N (e.g. 0/8), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text}: need N >= 1 and 0 <= K < N (K counts from 0)")
    return index, count


def read_shard_header(path, shard_format: str, command: str) -> Tuple[Dict[str, Any], Tuple[int, int]]:
    """A shard file's JSON object and its (K, N), checked; `command` names what writes that format."""
    from mspn_cli.io.jsonio import is_json_int, read_json_file

    path = Path(path)
    data = read_json_file(path, "shard file")
    if isinstance(data, list):
        raise InputError(f"{path} is a complete results list, not a shard file (written by `{command} --shard K/N`)")
    if not isinstance(data, dict) or data.get("format") != shard_format:
        raise InputError(f"{path} is not a shard file written by `{command} --shard K/N`")
    shard = data.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(is_json_int(v) for v in shard) and 0 <= shard[0] < shard[1]):
        raise InputError(f"shard file {path}: bad 'shard' field {shard!r}")
    return data, (shard[0], shard[1])


def in_shard(position: int, index: int, count: int) -> bool:
    """Whether the unit of work at `position` (0-based, in the run's order) belongs to shard `index` of `count`."""
    return position % count == index


class ShardFile(Protocol):
    path: Path
    index: int
    count: int
    settings: Dict[str, Any]


def check_complete_shard_set(loaded: Sequence[ShardFile]) -> Dict[int, ShardFile]:
    """Shard index -> file, after refusing mixed N, mixed settings, a shard twice or a missing shard."""
    first = loaded[0]
    by_index: Dict[int, ShardFile] = {}
    for part in loaded:
        if part.count != first.count:
            raise InputError(f"{part.path} is shard {part.index}/{part.count} but {first.path} is one of {first.count}")
        if part.settings != first.settings:
            raise InputError(f"{part.path} and {first.path} come from runs with different settings "
                             f"({changes_text(first.settings, part.settings)})")
        if part.index in by_index:
            raise InputError(f"shard {part.index}/{part.count} given twice: {by_index[part.index].path} and {part.path}")
        by_index[part.index] = part
    absent = [k for k in range(first.count) if k not in by_index]
    if absent:
        names = ", ".join(f"{k}/{first.count}" for k in absent)
        raise InputError(f"missing shard(s) {names}: all {first.count} shards are needed for a complete result")
    return by_index
