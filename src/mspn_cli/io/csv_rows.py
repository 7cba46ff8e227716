"""One CSV row per person (`--csv OUT.csv`), for pandas and spreadsheets, streamed as images finish.

Rows go to `OUT.csv.partial` (flushed after every image, so `tail -f` and a reader of
the partial file see finished images only) and the file is renamed to OUT when the run
ends, also when it is stopped: what finished is valid CSV. A resumed run rewrites the
partial file from its checkpoint's finished images, then goes on appending, so its OUT
holds the bytes an uninterrupted run writes.

Columns: the image (file_name, path, image_id), for video also frame_index, time (s)
and track_id, then the person box (x, y, w, h), box_score, the official instance score,
and `<joint>_x`, `<joint>_y`, `<joint>_conf` for the 17 named joints (confidence on
the 0-to-1 scale of --kpt-thr).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from mspn_cli.errors import OutputError
from mspn_cli.io.labels import joint_confidence
from mspn_cli.skeleton import KEYPOINT_NAMES

__all__ = ["csv_columns", "person_rows", "CsvRowsWriter", "partial_path_for"]

IMAGE_COLUMNS = ("file_name", "path", "image_id")
VIDEO_COLUMNS = ("frame_index", "time", "track_id")
PERSON_COLUMNS = ("box_x", "box_y", "box_w", "box_h", "box_score", "score")


def csv_columns(video: bool) -> List[str]:
    """The header: image columns, video columns when the run has videos, person and joint columns."""
    joints = [f"{name}_{part}" for name in KEYPOINT_NAMES for part in ("x", "y", "conf")]
    return [*IMAGE_COLUMNS, *(VIDEO_COLUMNS if video else ()), *PERSON_COLUMNS, *joints]


def partial_path_for(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _time_seconds(record: Mapping[str, Any]) -> Optional[float]:
    pts_ms = record.get("pts_ms")
    return None if pts_ms is None else round(float(pts_ms) / 1000.0, 6)


def person_rows(records: Sequence[Mapping[str, Any]], video: bool) -> List[List[Any]]:
    """The CSV rows (values in `csv_columns(video)` order) of one image's result records."""
    rows = []
    for record in records:
        row: List[Any] = [record.get("file_name", ""), record.get("path", ""), record["image_id"]]
        if video:
            row.extend([record.get("frame_index"), _time_seconds(record), record.get("track_id")])
        row.extend([*record["det_bbox"], record["box_score"], record["score"]])
        flat = record["keypoints"]
        for joint, score in enumerate(record["keypoint_scores"]):
            row.extend([flat[3 * joint], flat[3 * joint + 1], round(joint_confidence(score), 5)])
        rows.append(row)
    return rows


def _line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if value is None else value for value in values])
    return buffer.getvalue()


class CsvRowsWriter:
    """Streams person rows to OUT.partial; `finish` renames it to OUT, `abort` removes it.

    Opening truncates any partial file an earlier run left: a resumed run feeds its
    finished images again, in order, before new ones.
    """

    def __init__(self, path: Union[str, Path], video: bool = False):
        self.path = Path(path)
        self.partial = partial_path_for(self.path)
        self.video = video
        self.rows = 0
        self._handle = None

    def open(self) -> None:
        try:
            self._handle = open(self.partial, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise OutputError(f"cannot write CSV {self.partial}: {exc.strerror}") from None
        self._handle.write(_line(csv_columns(self.video)))
        self._handle.flush()

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """The rows of one finished image, flushed together."""
        if self._handle is None:
            self.open()
        rows = person_rows(records, self.video)
        self._handle.write("".join(_line(row) for row in rows))
        self._handle.flush()
        self.rows += len(rows)

    def finish(self) -> Path:
        """Make the rows durable and move them to OUT (replacing it: the caller checked OUT before the run)."""
        if self._handle is None:
            self.open()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        try:
            self.partial.unlink()
        except FileNotFoundError:
            pass

