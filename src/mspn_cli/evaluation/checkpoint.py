"""The per-image checkpoint that makes an evaluation run resumable after Ctrl-C, SIGTERM or SIGKILL.

The file handling (header, fsync'ed lines, torn tails, settings check) is the generic
`io.checkpoint.JsonlCheckpoint`, shared with `mspn keypoints`; entries here are keyed
by COCO image id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from mspn_cli.io.checkpoint import JsonlCheckpoint, changed_keys, checkpoint_path_for, jsonable_roundtrip
from mspn_cli.io.jsonio import is_json_int

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "checkpoint_path_for", "jsonable_roundtrip", "changed_keys"]

# Written into the header line so that a file from another tool or an older format is
# recognised instead of being half-understood.
CHECKPOINT_FORMAT = "mspn-eval-checkpoint/1"


def _is_eval_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and is_json_int(entry.get("image_id")) and isinstance(entry.get("records"), list)


class Checkpoint(JsonlCheckpoint):
    """Header with the run settings, then `{"image_id", "records"}` per finished image."""

    def __init__(self, path: Path, settings: Dict[str, Any]):
        super().__init__(path, CHECKPOINT_FORMAT, settings, what="eval checkpoint")

    def load(self) -> Dict[int, List[Dict[str, Any]]]:
        """Finished images of an earlier run with the same settings; {} if there is none."""
        return {entry["image_id"]: entry["records"] for entry in self.load_entries(_is_eval_entry)}

    def append(self, image_id: int, records: List[Dict[str, Any]]) -> None:
        self.append_entry({"image_id": int(image_id), "records": records})
