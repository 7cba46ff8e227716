"""Result rows: one finished image task as a plain JSON-able dict.

`{index, path, image_id, file_name, records, error, notes}` (and `image_size`, [width, height],
when the image was decoded) is what a Ray actor sends back,
what a keypoints checkpoint line and a keypoints shard file hold, so that whichever
engine ran a task and whenever it ran, the driver writes the same bytes.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from mspn_cli.io.checkpoint import jsonable_roundtrip
from mspn_cli.io.tasks import ImageOutcome, ImageTask

__all__ = ["outcome_to_row", "outcome_from_row", "is_result_row"]


def outcome_to_row(outcome: ImageOutcome) -> Dict[str, Any]:
    """The row of an outcome, with records exactly as they read back from JSON."""
    task = outcome.task
    return {
        "index": task.index, "path": task.path, "image_id": task.image_id, "file_name": task.file_name,
        "records": jsonable_roundtrip(outcome.records), "error": outcome.error, "notes": list(outcome.notes),
        **({"image_size": [int(v) for v in outcome.image_size]} if outcome.image_size is not None else {}),
    }


def outcome_from_row(row: Mapping[str, Any], task: ImageTask) -> ImageOutcome:
    """The outcome of `task` from its row (no decoded image or PoseResult: those stay where it ran)."""
    size = row.get("image_size")
    return ImageOutcome(task, records=list(row.get("records") or []), error=row.get("error"), notes=list(row.get("notes") or []),
                        image_size=tuple(int(v) for v in size) if isinstance(size, list) and len(size) == 2 else None)


def is_result_row(row: Any) -> bool:
    return (
        isinstance(row, dict) and isinstance(row.get("index"), int) and not isinstance(row.get("index"), bool)
        and isinstance(row.get("records"), list) and (row.get("error") is None or isinstance(row.get("error"), str))
        and isinstance(row.get("notes", []), list)
    )
