"""`--labels` and `--csv` of one `keypoints` run: fed image by image (or frame by frame), written at the end.

Both are built from the run's result records, so they follow the same resume rules as
`--json`: a resumed run feeds its finished images from the checkpoint first, then the
new ones, and writes the bytes an uninterrupted run writes. A stopped run writes what
finished (valid files); the checkpoint beside the run's first file output marks them as
unfinished, so the rerun replaces them without --overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mspn_cli.io.csv_rows import CsvRowsWriter
from mspn_cli.io.labels import CocoKeypointLabels, creation_date
from mspn_cli.settings import RunSettings

PathLike = Union[str, Path]

__all__ = ["DatasetOutputs", "labels_info", "frame_file_name"]


def _weights_sha256(spec: Optional[str], weights_config) -> Optional[str]:
    """sha256 of the weights a run used (through the digest index); None when they cannot be found."""
    from mspn_cli.errors import MspnError
    from mspn_cli.weights import indexed_sha256, resolve_weights

    try:
        return indexed_sha256(resolve_weights(spec, weights_config, download=False))
    except MspnError:
        return None


def labels_info(settings: RunSettings, kpt_thr: float, detector_used: bool) -> Dict[str, Any]:
    """The dataset's `info`: what produced it (mspn-cli version, the weights' sha256, the settings, the date)."""
    from mspn_cli import __version__
    from mspn_cli.config import load_detector_config, load_pose_config

    pose_config = load_pose_config(settings.config) if settings.config else load_pose_config()
    weights = {"mspn": _weights_sha256(settings.weights, pose_config.weights)}
    if detector_used:
        detector_config = load_detector_config(settings.detector_config) if settings.detector_config else load_detector_config()
        weights["detector"] = _weights_sha256(settings.detector_weights, detector_config.weights)
    values = settings.to_dict()
    values.pop("progress", None)  # how a run looks, not what it computes
    date = creation_date()
    return {
        "description": "keypoint predictions by mspn-cli (RetinaNet + MSPN)",
        "contributor": "mspn-cli", "version": __version__, "year": int(date[:4]), "date_created": date,
        "weights_sha256": weights, "settings": {**values, "kpt_thr": float(kpt_thr)},
    }


def frame_file_name(video_name: str, frame_index: int) -> str:
    """`clip_000012.jpg`: the name `ffmpeg -i clip.mp4 -start_number 0 clip_%06d.jpg` gives frame 12."""
    return f"{Path(video_name).stem}_{int(frame_index):06d}.jpg"


def _decoded_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image file as the run decodes it (for checkpoints that did not record it)."""
    from mspn_cli.io.sources import read_image

    image = read_image(path, allow_truncated=True)
    return int(image.shape[1]), int(image.shape[0])


class DatasetOutputs:
    """The --labels dataset and the --csv table of one run (either may be absent)."""

    def __init__(self, labels: Optional[PathLike], csv: Optional[PathLike], kpt_thr: float,
                 info: Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None] = None, video: bool = False):
        """`info` may be a function, called when the labels are written: a first run downloads its weights
        only after this object is made, and their sha256 is known only then."""
        self.labels_path = None if labels is None else Path(labels)
        self.info = info
        self.labels = CocoKeypointLabels(kpt_thr) if labels is not None else None
        self.csv = CsvRowsWriter(csv, video=video) if csv is not None else None

    @property
    def active(self) -> bool:
        return self.labels is not None or self.csv is not None

    def add_image(self, file_name: str, path: str, image_id: int, size: Optional[Sequence[int]],
                  records: Sequence[Mapping[str, Any]]) -> None:
        """One finished photo and its result records."""
        if self.labels is not None:
            width, height = size if size is not None else _decoded_size(path)
            self.labels.add_image(file_name, width, height, image_id, records, extra={"path": path})
        if self.csv is not None:
            self.csv.add(records)

    def add_frame(self, video_name: str, path: str, frame_index: int, pts_ms: Optional[float], size: Sequence[int],
                  records: Sequence[Mapping[str, Any]]) -> None:
        """One finished video frame; its image gets a new id and the name of the extracted frame."""
        if self.labels is not None:
            extra = {"path": path, "video": video_name, "frame_index": int(frame_index),
                     "time": None if pts_ms is None else round(float(pts_ms) / 1000.0, 6)}
            self.labels.add_image(frame_file_name(video_name, frame_index), size[0], size[1], 0, records, extra=extra)
        if self.csv is not None:
            self.csv.add(records)

    def finish(self) -> List[str]:
        """Write both; returns one line per file written, for the summary."""
        said = []
        if self.labels is not None:
            self.labels.info = dict((self.info() if callable(self.info) else self.info) or {})
            count = self.labels.write(self.labels_path)
            said.append(f"wrote {count} labelled person(s) in {len(self.labels.images)} image(s) to {self.labels_path}")
        if self.csv is not None:
            self.csv.finish()
            said.append(f"wrote {self.csv.rows} row(s) to {self.csv.path}")
        return said

    def abort(self) -> None:
        if self.csv is not None:
            self.csv.abort()
