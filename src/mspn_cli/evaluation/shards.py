"""Shards of an evaluation (`--shard K/N`, `--workers N`) and merging them into one result.

A merged result is byte-identical to a single run's: images are assigned in sorted-id
order, results are kept per image, and the final list is assembled in sorted-id order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from mspn_cli.errors import InputError, UsageError
from mspn_cli.evaluation.annotations import CocoKeypointAnnotations, load_annotations
from mspn_cli.io.shards import check_complete_shard_set, parse_shard, read_shard_header
from mspn_cli.evaluation.cocoeval import SHARD_FORMAT
from mspn_cli.evaluation.selection import DetectionSelection
from mspn_cli.io.jsonio import is_json_int

PathLike = Union[str, Path]

__all__ = [
    "SHARD_FORMAT",
    "ShardPart",
    "MergedResults",
    "parse_shard",
    "select_shard",
    "shard_results_path",
    "write_shard",
    "read_shard_file",
    "merge_results",
    "merged_counts",
]


def select_shard(image_ids: Iterable[int], index: int, count: int) -> List[int]:
    """The image ids of shard `index` of `count`: the i-th sorted id goes to shard i % count.

    Interleaving (rather than contiguous blocks) balances the shards when the
    annotation file is ordered by something that correlates with crowd size.
    """
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    return [image_id for position, image_id in enumerate(sorted(image_ids)) if position % count == index]


def shard_results_path(results_path: PathLike, index: int, count: int) -> Path:
    """Where `--workers` puts shard `index` of `count` for RESULTS.json."""
    results_path = Path(results_path)
    return results_path.with_name(f"{results_path.stem}.shard-{index}-of-{count}{results_path.suffix or '.json'}")


@dataclass
class ShardPart:
    """A shard results file: which shard it is, what it was responsible for, its results."""

    path: Path
    index: int
    count: int
    image_ids: List[int]
    results: List[Dict[str, Any]]
    missing_images: List[Tuple[int, str]]
    settings: Dict[str, Any]
    counts: Dict[str, Any]
    info: Dict[str, Any] = field(default_factory=dict)


def write_shard(
    path: Path,
    shard: Tuple[int, int],
    image_ids: List[int],
    records: List[Dict[str, Any]],
    missing: List[Tuple[int, str]],
    settings: Dict[str, Any],
    info: Dict[str, Any],
    selection: DetectionSelection,
) -> None:
    """A shard file: its results plus what `merge_results` checks (settings, images, counts)."""
    from mspn_cli.io.writers import write_json_atomic

    write_json_atomic(
        path,
        {
            "format": SHARD_FORMAT,
            "shard": [shard[0], shard[1]],
            "settings": settings,
            "info": info,
            "counts": {
                "detections_in_file": selection.total,
                "detections_dropped_not_person": selection.dropped_not_person,
                "detections_dropped_unknown_image": selection.dropped_unknown_image,
                "detections_used": selection.count_for(image_ids),
                "images_with_detections": sum(1 for i in image_ids if selection.has(i)),
            },
            "image_ids": image_ids,
            "missing_images": [[image_id, reason] for image_id, reason in sorted(missing)],
            "results": records,
        },
    )


def read_shard_file(path: PathLike) -> ShardPart:
    """Load and check one shard file written by `mspn eval-coco --shard K/N`."""
    path = Path(path)
    data, shard = read_shard_header(path, SHARD_FORMAT, "mspn eval-coco")
    image_ids = data.get("image_ids")
    results = data.get("results")
    if not isinstance(image_ids, list) or not all(is_json_int(i) for i in image_ids) or not isinstance(results, list):
        raise InputError(f"shard file {path}: 'image_ids' and 'results' must be lists")
    own = set(image_ids)
    for index, record in enumerate(results):
        if not isinstance(record, dict) or record.get("image_id") not in own:
            raise InputError(f"shard file {path}: results[{index}] is for an image outside the shard")
    missing = [(int(m[0]), str(m[1])) for m in data.get("missing_images") or []]
    return ShardPart(
        path,
        shard[0],
        shard[1],
        image_ids,
        results,
        missing,
        data.get("settings") or {},
        data.get("counts") or {},
        data.get("info") or {},
    )


@dataclass
class MergedResults:
    records: List[Dict[str, Any]]
    image_ids: List[int]
    count: int
    missing_images: List[Tuple[int, str]]
    settings: Dict[str, Any]
    counts: Dict[str, Any]
    info: Dict[str, Any] = field(default_factory=dict)


def merge_results(
    parts: Sequence[Union[PathLike, ShardPart]],
    annotations: Optional[Union[PathLike, CocoKeypointAnnotations]] = None,
) -> MergedResults:
    """Combine the shard files of one run into the results list a single run would give.

    Refuses: shards of different N or settings, the same shard twice, an image claimed
    by two shards, a missing shard, and (with `annotations`) shards that do not cover
    exactly the annotated images.
    """
    if not parts:
        raise UsageError("no shard files given")
    loaded = [p if isinstance(p, ShardPart) else read_shard_file(p) for p in parts]
    check_complete_shard_set(loaded)
    first = loaded[0]
    owner: Dict[int, int] = {}
    for part in loaded:
        for image_id in part.image_ids:
            if image_id in owner:
                raise InputError(f"image_id {image_id} is in shard {owner[image_id]} and shard {part.index}: duplicate images")
            owner[image_id] = part.index
    image_ids = sorted(owner)
    if annotations is not None:
        annotated = annotations.image_ids if isinstance(annotations, CocoKeypointAnnotations) else load_annotations(annotations).image_ids
        if set(annotated) != set(image_ids):
            lacking = sorted(set(annotated) - set(image_ids))
            extra = sorted(set(image_ids) - set(annotated))
            detail = f"{len(lacking)} annotated images in no shard" if lacking else f"{len(extra)} shard images not annotated"
            raise InputError(f"the shards do not cover the annotation file: {detail}")
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    for part in loaded:
        for record in part.results:
            by_image.setdefault(record["image_id"], []).append(record)
    records = [record for image_id in sorted(by_image) for record in by_image[image_id]]
    counts = dict(first.counts)
    for key in ("detections_used", "images_with_detections"):
        counts[key] = sum(int(p.counts.get(key, 0)) for p in loaded)
    missing = sorted(m for p in loaded for m in p.missing_images)
    return MergedResults(records, image_ids, first.count, missing, first.settings, counts, dict(first.info))


def merged_counts(merged: MergedResults) -> Dict[str, Any]:
    """The `counts` of a merged run's summary."""
    counts = dict(merged.counts)
    counts.update(
        images=len(merged.image_ids),
        instances=len(merged.records),
        missing_images=len(merged.missing_images),
        missing_image_ids=[image_id for image_id, _ in merged.missing_images],
        shards=merged.count,
    )
    return counts
