"""Scoring keypoint results with pycocotools' COCOeval, as the official test does (reference §4.4)."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from mspn_cli.errors import InputError
from mspn_cli.evaluation.annotations import CocoKeypointAnnotations, as_coco
from mspn_cli.io.detections import PERSON_CATEGORY_ID
from mspn_cli.io.jsonio import is_finite_number, is_json_int, json_type_name, read_json_file

PathLike = Union[str, Path]

__all__ = ["STAT_NAMES", "STAT_LABELS", "EvalReport", "published_stats", "load_results", "evaluate_keypoints"]

# COCOeval keypoint stats 0..9, in pycocotools' order.
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# Column labels as the MSPN/HRNet papers and pycocotools' summary print them.
STAT_LABELS = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")

# Written into shard files (shards.py); a results file in that format is refused here.
SHARD_FORMAT = "mspn-eval-shard/1"


@functools.lru_cache(maxsize=1)
def published_stats() -> Dict[str, float]:
    """The published row the stats are compared with (configs/coco_eval.toml, [published])."""
    from mspn_cli.config import load_eval_config

    published = load_eval_config().published
    return {name: float(getattr(published, name)) for name in STAT_NAMES}


@dataclass
class EvalReport:
    """The 10 COCOeval keypoint stats and pycocotools' own printout (for a log).

    A stat is None where pycocotools reports -1: no ground truth in that area range
    (e.g. no medium-sized person in a small subset).
    """

    stats: Dict[str, Optional[float]]
    log: str
    num_results: int
    num_images: int

    def differences(self, reference: Optional[Dict[str, float]] = None) -> Dict[str, Optional[float]]:
        reference = published_stats() if reference is None else reference
        return {
            name: None if self.stats[name] is None else self.stats[name] - reference[name]  # type: ignore[operator]
            for name in STAT_NAMES
        }


def _result_problem(entry: Any, num_keypoints: int) -> Optional[str]:
    if not isinstance(entry, dict):
        return f"expected an object, got {json_type_name(entry)}"
    for key in ("image_id", "keypoints", "score"):
        if key not in entry:
            return f"missing '{key}'"
    if not is_json_int(entry["image_id"]):
        return f"'image_id' must be an integer, got {entry['image_id']!r}"
    if "category_id" in entry and not is_json_int(entry["category_id"]):
        return f"'category_id' must be an integer, got {entry['category_id']!r}"
    keypoints = entry["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
        length = len(keypoints) if isinstance(keypoints, list) else json_type_name(keypoints)
        return f"'keypoints' must be a list of {3 * num_keypoints} numbers (x, y, v per joint), got {length}"
    if not all(is_finite_number(v) for v in keypoints):
        return "'keypoints' must hold finite numbers"
    if not is_finite_number(entry["score"]):
        return f"'score' must be a finite number, got {entry['score']!r}"
    return None


def load_results(source: Union[PathLike, List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """A keypoint results list from a file or a list; a shard file is refused (merge first)."""
    if isinstance(source, (str, Path)):
        data = read_json_file(source, "results file")
        if isinstance(data, dict) and data.get("format") == SHARD_FORMAT:
            index, count = data.get("shard", ["?", "?"])
            raise InputError(
                f"results file {source} is shard {index}/{count}; combine all shards with `mspn merge-results` first"
            )
        if not isinstance(data, list):
            raise InputError(f"results file {source}: expected a JSON list of keypoint results, got {json_type_name(data)}")
        return data
    return list(source)


def evaluate_keypoints(
    annotations: Union[PathLike, CocoKeypointAnnotations, Any],
    results: Union[PathLike, List[Dict[str, Any]]],
    image_ids: Optional[Iterable[int]] = None,
) -> EvalReport:
    """COCOeval(gt, dt, "keypoints") -> the 10 stats, with pycocotools' prints captured.

    Only image_id, category_id, keypoints and score of each result are passed on: an
    extra `bbox` would make pycocotools' loadRes take its box branch and compute the
    result areas from the box instead of the keypoint extent (as the official test
    does), which changes the medium/large split.
    `image_ids` restricts the evaluation to those images (default: all annotated).
    """
    from pycocotools.cocoeval import COCOeval

    source = str(results) if isinstance(results, (str, Path)) else "results"
    records = load_results(results)
    gt = as_coco(annotations)
    known = set(gt.getImgIds())
    num_keypoints = len(gt.loadCats(PERSON_CATEGORY_ID)[0].get("keypoints", [])) if PERSON_CATEGORY_ID in gt.cats else 17
    cleaned = []
    for index, entry in enumerate(records):
        problem = _result_problem(entry, num_keypoints)
        if problem:
            raise InputError(f"{source}: entry {index} is not a valid keypoint result: {problem}")
        if entry["image_id"] not in known:
            raise InputError(
                f"{source}: entry {index} is for image_id {entry['image_id']}, which is not in the annotations "
                "(results and annotations are from different image sets)"
            )
        cleaned.append(
            {
                "image_id": entry["image_id"],
                "category_id": entry.get("category_id", PERSON_CATEGORY_ID),
                "keypoints": list(entry["keypoints"]),
                "score": entry["score"],
            }
        )
    selected = sorted(known if image_ids is None else set(int(i) for i in image_ids) & known)
    if not cleaned:
        # pycocotools cannot load an empty result list; nothing found scores 0.
        stats: Dict[str, Optional[float]] = {name: 0.0 for name in STAT_NAMES}
        return EvalReport(stats, "no keypoint results: every stat is 0\n", 0, len(selected))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        dt = gt.loadRes(copy.deepcopy(cleaned))
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.params.imgIds = selected
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: (float(value) if value >= 0 else None) for name, value in zip(STAT_NAMES, evaluator.stats)}
    return EvalReport(stats, log.getvalue(), len(cleaned), len(selected))
