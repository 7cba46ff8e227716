"""Provenance (file and image-set fingerprints) and the --summary JSON of an evaluation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from mspn_cli.evaluation.cocoeval import STAT_NAMES, EvalReport, published_stats
from mspn_cli.evaluation.selection import DetectionSelection

PathLike = Union[str, Path]

__all__ = ["file_sha256", "image_set_digest", "run_counts", "build_summary"]


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_set_digest(image_ids: Iterable[int]) -> str:
    """A short fingerprint of an image-id set (shards of one run must agree on it)."""
    text = ",".join(str(i) for i in sorted(image_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_counts(
    selection: DetectionSelection,
    images_with_detections: int,
    detections_used: int,
    images: int,
    instances: int,
    missing: List[Tuple[int, str]],
) -> Dict[str, Any]:
    """The `counts` of a run's summary: what the detections file held, what was used and dropped."""
    return {
        "images": images,
        "images_with_detections": images_with_detections,
        "detections_in_file": selection.total,
        "detections_used": detections_used,
        "detections_dropped_not_person": selection.dropped_not_person,
        "detections_dropped_unknown_image": selection.dropped_unknown_image,
        "instances": instances,
        "missing_images": len(missing),
        "missing_image_ids": [image_id for image_id, _ in missing],
    }


def _rounded(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)


def build_summary(
    report: EvalReport,
    settings: Dict[str, Any],
    counts: Dict[str, Any],
    *,
    results_path: Optional[PathLike] = None,
    annotations_path: Optional[PathLike] = None,
    log_path: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """The --summary JSON: stats, the published row and the difference, settings, counts.

    A stat without ground truth (pycocotools' -1) is null.
    """
    from mspn_cli import __version__

    return {
        "stats": {name: _rounded(report.stats[name]) for name in STAT_NAMES},
        "published_mspn_4stage": dict(published_stats()),
        "difference_to_published": {name: _rounded(v) for name, v in report.differences().items()},
        "settings": settings,
        "counts": counts,
        "results": str(results_path) if results_path is not None else None,
        "annotations": str(annotations_path) if annotations_path is not None else None,
        "eval_log": str(log_path) if log_path is not None else None,
        "mspn_cli_version": __version__,
    }
