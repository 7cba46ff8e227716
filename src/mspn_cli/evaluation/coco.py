"""COCO keypoint evaluation: detections, annotations, shards, a resumable run, merging, scoring.

Follows the official MSPN test protocol (reference §2, §4.4): every person detection of
the detections file whose `category_id` is 1 and whose image is in the annotations is
one sample, with no score threshold; each sample gives one keypoint result scored
mean(keypoint scores) x box score; pycocotools' `COCOeval(gt, dt, "keypoints")` scores
the lot. No CLI code and no drawing here.

Determinism is a design goal: a run that is interrupted and resumed, or split into
shards and merged, writes a results file byte-identical to an uninterrupted single run.
That holds because images are processed in sorted-id order, results are stored per
image, and the final file is always assembled from the stored per-image records in
sorted-id order (never from "whatever happened to be in memory").
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from mspn_cli.io.jsonio import is_finite_number
from mspn_cli.io.jsonio import read_json_file
from mspn_cli.errors import InputError, OutputError, UsageError

PathLike = Union[str, Path]

PERSON_CATEGORY_ID = 1

# COCOeval keypoint stats 0..9, in pycocotools' order.
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# Column labels as the MSPN/HRNet papers and pycocotools' summary print them.
STAT_LABELS = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")

# MegEngine's README for mspn_4stage 256x192, COCO val2017, AP_H 56.4 person boxes.
PUBLISHED_MSPN_4STAGE: Dict[str, float] = {
    "AP": 0.752,
    "AP50": 0.900,
    "AP75": 0.819,
    "APm": 0.716,
    "APl": 0.825,
    "AR": 0.819,
    "AR50": 0.943,
    "AR75": 0.875,
    "ARm": 0.770,
    "ARl": 0.887,
}

# Written into result/shard/checkpoint files so that a file from another tool or an
# older format is recognised instead of being half-understood.
SHARD_FORMAT = "mspn-eval-shard/1"
CHECKPOINT_FORMAT = "mspn-eval-checkpoint/1"

__all__ = [
    "PERSON_CATEGORY_ID",
    "STAT_NAMES",
    "STAT_LABELS",
    "PUBLISHED_MSPN_4STAGE",
    "Detection",
    "DetectionSelection",
    "CocoKeypointAnnotations",
    "EvalReport",
    "EvalRun",
    "ShardPart",
    "MergedResults",
    "read_json_file",
    "parse_detections",
    "load_detections",
    "select_person_detections",
    "load_annotations",
    "parse_shard",
    "select_shard",
    "load_results",
    "evaluate_keypoints",
    "checkpoint_path_for",
    "run_keypoint_eval",
    "run_person_detection",
    "shard_results_path",
    "read_shard_file",
    "merge_results",
    "write_results",
    "file_sha256",
    "image_set_digest",
    "build_summary",
]


# --------------------------------------------------------------------------- JSON input


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int: not an id.
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- detections


@dataclass(frozen=True)
class Detection:
    """One entry of a COCO detection-results file, validated."""

    image_id: int
    category_id: int
    bbox_xywh: Tuple[float, float, float, float]
    score: float


def _check_detection(entry: Any) -> Optional[str]:
    """Why `entry` is not a valid detection record, or None."""
    if not isinstance(entry, dict):
        return f"expected an object, got {_json_type(entry)}"
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in entry:
            return f"missing '{key}'"
    for key in ("image_id", "category_id"):
        if not _is_int(entry[key]):
            return f"'{key}' must be an integer, got {entry[key]!r}"
    bbox = entry["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        return f"'bbox' must be a list of 4 numbers [x, y, w, h], got {bbox!r}"
    if not all(is_finite_number(v) for v in bbox):
        return f"'bbox' must hold 4 finite numbers, got {bbox!r}"
    if not (bbox[2] > 0 and bbox[3] > 0):
        return f"'bbox' width and height must be > 0, got w={bbox[2]!r} h={bbox[3]!r}"
    if not is_finite_number(entry["score"]):
        return f"'score' must be a finite number, got {entry['score']!r}"
    return None


def parse_detections(data: Any, source: str = "detections") -> List[Detection]:
    """Validate a COCO detection-results list; InputError names the first bad entry."""
    if not isinstance(data, list):
        hint = " (a COCO annotations file? give detection results: a list of {image_id, category_id, bbox, score})" if isinstance(data, dict) and "images" in data else ""
        raise InputError(f"{source}: expected a JSON list of detections, got {_json_type(data)}{hint}")
    detections = []
    for index, entry in enumerate(data):
        problem = _check_detection(entry)
        if problem:
            raise InputError(f"{source}: entry {index} is not a valid detection: {problem}")
        x, y, w, h = (float(v) for v in entry["bbox"])
        detections.append(Detection(entry["image_id"], entry["category_id"], (x, y, w, h), float(entry["score"])))
    return detections


def load_detections(path: PathLike) -> List[Detection]:
    """Read and validate a detections file (COCO results format). An empty list is valid."""
    return parse_detections(read_json_file(path, "detections file"), str(path))


@dataclass
class DetectionSelection:
    """The detections the official test keeps, grouped by image, in file order.

    `boxes[image_id]` is N x 4 float32 xyxy and `scores[image_id]` N float32.
    """

    boxes: Dict[int, np.ndarray]
    scores: Dict[int, np.ndarray]
    total: int
    dropped_not_person: int
    dropped_unknown_image: int

    @property
    def used(self) -> int:
        return sum(len(b) for b in self.boxes.values())

    def count_for(self, image_ids: Iterable[int]) -> int:
        return sum(len(self.boxes[i]) for i in image_ids if i in self.boxes)


def select_person_detections(detections: Sequence[Detection], image_ids: Iterable[int]) -> DetectionSelection:
    """Keep category 1 on known images, as test.py does; count what is dropped and why.

    No score or size threshold: every kept box is one sample (reference §2).
    """
    known = set(int(i) for i in image_ids)
    grouped: Dict[int, List[Detection]] = {}
    dropped_not_person = dropped_unknown = 0
    for det in detections:
        if det.category_id != PERSON_CATEGORY_ID:
            dropped_not_person += 1
        elif det.image_id not in known:
            dropped_unknown += 1
        else:
            grouped.setdefault(det.image_id, []).append(det)
    boxes: Dict[int, np.ndarray] = {}
    scores: Dict[int, np.ndarray] = {}
    for image_id, dets in grouped.items():
        # x + w in float64 first, then float32, like np.array([x, y, x+w, y+h], float32).
        xyxy = [[x, y, x + w, y + h] for (x, y, w, h) in (d.bbox_xywh for d in dets)]
        boxes[image_id] = np.asarray(xyxy, dtype=np.float64).astype(np.float32).reshape(-1, 4)
        scores[image_id] = np.asarray([d.score for d in dets], dtype=np.float32)
    return DetectionSelection(boxes, scores, len(detections), dropped_not_person, dropped_unknown)


# --------------------------------------------------------------------------- annotations


@dataclass
class CocoKeypointAnnotations:
    """A person-keypoints annotation file plus the folder of its images."""

    path: Path
    coco: Any  # pycocotools.coco.COCO
    image_dir: Optional[Path]
    image_ids: List[int]  # sorted
    file_names: Dict[int, str]
    num_keypoints: int

    def image_path(self, image_id: int) -> Path:
        if self.image_dir is None:
            raise UsageError("no image folder given for the annotations")
        return self.image_dir / self.file_names[image_id]

    @property
    def num_instances(self) -> int:
        """Annotations that COCOeval scores: non-crowd persons with >= 1 labelled keypoint."""
        return sum(
            1
            for ann in self.coco.dataset.get("annotations", [])
            if not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0
        )


def _quiet_coco(dataset: Dict[str, Any]):
    """A pycocotools COCO from an already parsed dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_annotations(path: PathLike, image_dir: Optional[PathLike] = None) -> CocoKeypointAnnotations:
    """Load a COCO person-keypoints file; InputError if it is missing or has no keypoints."""
    path = Path(path)
    data = read_json_file(path, "annotations file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"annotations file {path} is not a COCO annotations file (no 'images' list)")
    categories = data.get("categories") or []
    person = next((c for c in categories if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY_ID), None)
    if person is None or not person.get("keypoints"):
        raise InputError(f"annotations file {path} has no person keypoints (category 1 with 'keypoints'); use person_keypoints_*.json")
    data.setdefault("annotations", [])
    file_names: Dict[int, str] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise InputError(f"annotations file {path}: images[{index}] has no integer 'id'")
        file_names[image["id"]] = str(image.get("file_name") or f"{image['id']:012d}.jpg")
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in file_names:
            raise InputError(f"annotations file {path}: annotations[{index}] refers to no listed image")
    coco = _quiet_coco(data)
    return CocoKeypointAnnotations(
        path=path,
        coco=coco,
        image_dir=Path(image_dir) if image_dir is not None else None,
        image_ids=sorted(file_names),
        file_names=file_names,
        num_keypoints=len(person["keypoints"]),
    )


def _as_annotations(annotations: Union[PathLike, CocoKeypointAnnotations, Any]) -> Any:
    """A pycocotools COCO from a path, a CocoKeypointAnnotations or a COCO."""
    if isinstance(annotations, CocoKeypointAnnotations):
        return annotations.coco
    if isinstance(annotations, (str, Path)):
        return load_annotations(annotations).coco
    return annotations


# --------------------------------------------------------------------------- shards


def parse_shard(text: str) -> Tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (K is 0-based, like $SLURM_ARRAY_TASK_ID)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"--shard must look like K/N (e.g. 0/8), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UsageError(f"--shard {text}: need N >= 1 and 0 <= K < N (K counts from 0)")
    return index, count


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


# --------------------------------------------------------------------------- evaluation


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

    def differences(self, reference: Dict[str, float] = PUBLISHED_MSPN_4STAGE) -> Dict[str, Optional[float]]:
        return {
            name: None if self.stats[name] is None else self.stats[name] - reference[name]  # type: ignore[operator]
            for name in STAT_NAMES
        }


def _check_result(entry: Any, num_keypoints: int) -> Optional[str]:
    if not isinstance(entry, dict):
        return f"expected an object, got {_json_type(entry)}"
    for key in ("image_id", "keypoints", "score"):
        if key not in entry:
            return f"missing '{key}'"
    if not _is_int(entry["image_id"]):
        return f"'image_id' must be an integer, got {entry['image_id']!r}"
    if "category_id" in entry and not _is_int(entry["category_id"]):
        return f"'category_id' must be an integer, got {entry['category_id']!r}"
    keypoints = entry["keypoints"]
    if not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints:
        length = len(keypoints) if isinstance(keypoints, list) else _json_type(keypoints)
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
            raise InputError(f"results file {source}: expected a JSON list of keypoint results, got {_json_type(data)}")
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
    gt = _as_annotations(annotations)
    known = set(gt.getImgIds())
    num_keypoints = len(gt.loadCats(PERSON_CATEGORY_ID)[0].get("keypoints", [])) if PERSON_CATEGORY_ID in gt.cats else 17
    cleaned = []
    for index, entry in enumerate(records):
        problem = _check_result(entry, num_keypoints)
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
        stats = {name: 0.0 for name in STAT_NAMES}
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


# --------------------------------------------------------------------------- checkpoint


def checkpoint_path_for(results_path: PathLike) -> Path:
    """The JSONL checkpoint kept next to RESULTS.json while a run is unfinished."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.name + ".partial.jsonl")


def _jsonable_roundtrip(value: Any) -> Any:
    # What is kept in memory must equal what a resumed run reads back from disk.
    from mspn_cli.io.writers import to_jsonable

    return json.loads(json.dumps(to_jsonable(value)))


class _Checkpoint:
    """Append-only JSONL: a header line with the run settings, then one line per finished image.

    Each line is flushed and fsync'ed as it is written, so after SIGKILL or a power
    cut at most the last line is torn; reading truncates a torn tail.
    """

    def __init__(self, path: Path, settings: Dict[str, Any]):
        self.path = path
        self.settings = _jsonable_roundtrip(settings)
        self._handle = None
        self.dropped_tail_bytes = 0

    def load(self) -> Dict[int, List[Dict[str, Any]]]:
        """Finished images of an earlier run with the same settings; {} if there is none."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InputError(f"cannot read checkpoint {self.path}: {exc.strerror}") from None
        done: Dict[int, List[Dict[str, Any]]] = {}
        good_end = 0
        header_seen = False
        position = 0
        while position < len(raw):
            newline = raw.find(b"\n", position)
            if newline < 0:
                break  # torn last line: no newline was written
            line = raw[position:newline]
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not header_seen:
                if not isinstance(entry, dict) or entry.get("format") != CHECKPOINT_FORMAT:
                    raise InputError(f"{self.path} is not an mspn eval checkpoint; delete it or pass --no-resume")
                if entry.get("settings") != self.settings:
                    changed = _changed_keys(entry.get("settings") or {}, self.settings)
                    raise UsageError(
                        f"checkpoint {self.path} was written with different settings ({', '.join(changed)}); "
                        "pass --no-resume to start over"
                    )
                header_seen = True
            elif isinstance(entry, dict) and _is_int(entry.get("image_id")) and isinstance(entry.get("records"), list):
                done[entry["image_id"]] = entry["records"]
            else:
                break
            position = newline + 1
            good_end = position
        self.dropped_tail_bytes = len(raw) - good_end
        if self.dropped_tail_bytes:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        if not header_seen:
            self.path.unlink()  # only a torn header: start a fresh file
        return done

    def _write_line(self, obj: Any) -> None:
        assert self._handle is not None
        self._handle.write(json.dumps(obj).encode() + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def open(self) -> None:
        fresh = not self.path.exists()
        try:
            self._handle = open(self.path, "ab")
        except OSError as exc:
            raise OutputError(f"cannot write checkpoint {self.path}: {exc.strerror}") from None
        if fresh:
            self._write_line({"format": CHECKPOINT_FORMAT, "settings": self.settings})

    def append(self, image_id: int, records: List[Dict[str, Any]]) -> None:
        self._write_line({"image_id": int(image_id), "records": records})

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


def _changed_keys(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)] or ["format"]


# --------------------------------------------------------------------------- run engine


@dataclass
class EvalRun:
    """What `run_keypoint_eval` did."""

    results_path: Path
    records: List[Dict[str, Any]]
    image_ids: List[int]  # images this run was responsible for (sorted)
    images_with_detections: int
    detections_used: int
    missing_images: List[Tuple[int, str]]  # (image_id, reason), skipped
    resumed_images: int  # finished images taken over from a checkpoint
    processed_images: int  # images run through the network by this call
    shard: Optional[Tuple[int, int]] = None
    checkpoint_kept: bool = False


ProgressCallback = Callable[[int, int], None]  # (images finished, images to do)


def run_keypoint_eval(
    estimator: Any,
    annotations: CocoKeypointAnnotations,
    detections: DetectionSelection,
    results_path: PathLike,
    *,
    image_ids: Optional[Sequence[int]] = None,
    shard: Optional[Tuple[int, int]] = None,
    settings: Optional[Dict[str, Any]] = None,
    info: Optional[Dict[str, Any]] = None,
    resume: bool = True,
    on_progress: Optional[ProgressCallback] = None,
) -> EvalRun:
    """Run `estimator.estimate_many` over the images' detections and write RESULTS.json.

    Images go in sorted-id order (`image_ids`, default all annotated images, or those
    of `shard`). Each finished image is appended to a checkpoint next to the results
    before the next one is reported; with `resume`, images already in a checkpoint with
    the same `settings` are not run again. The final file is written atomically:
    a plain COCO results list, or for a shard an object carrying the shard metadata
    that `merge_results` checks (`settings` must match across shards, `info` is
    descriptive only, e.g. file paths). Missing or unreadable images are skipped and listed;
    the checkpoint is then kept so that a later --resume only retries those.
    """
    from mspn_cli.io.records import keypoint_records
    from mspn_cli.io.sources import read_image

    results_path = Path(results_path)
    settings = dict(settings or {})
    if shard is not None:
        assigned = select_shard(annotations.image_ids, *shard)
    else:
        assigned = sorted(annotations.image_ids if image_ids is None else set(int(i) for i in image_ids))
    with_detections = [i for i in assigned if i in detections.boxes]

    checkpoint = _Checkpoint(checkpoint_path_for(results_path), settings)
    if resume:
        # Only images this run is responsible for count (a checkpoint never spans runs
        # with other settings: `load` refuses those).
        responsible = set(with_detections)
        done = {i: records for i, records in checkpoint.load().items() if i in responsible}
    else:
        checkpoint.discard()
        done = {}
    resumed = len(done)
    todo = [i for i in with_detections if i not in done]

    missing: List[Tuple[int, str]] = []

    def items() -> Iterator[Tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        # estimate_many pulls these on its own prefetch thread, so decoding already
        # overlaps with inference.
        for image_id in todo:
            try:
                image = read_image(annotations.image_path(image_id))
            except InputError as exc:
                missing.append((image_id, str(exc)))
                continue
            yield image_id, image, detections.boxes[image_id], detections.scores[image_id]

    processed = 0
    checkpoint.open()
    try:
        if on_progress:
            on_progress(resumed, len(with_detections))
        for image_id, result in estimator.estimate_many(items()):
            records = keypoint_records(result, image_id, annotations.file_names.get(image_id))
            records = _jsonable_roundtrip(records)
            checkpoint.append(image_id, records)
            done[image_id] = records
            processed += 1
            if on_progress:
                on_progress(resumed + processed, len(with_detections))
    finally:
        checkpoint.close()

    ordered = [record for image_id in sorted(done) for record in done[image_id]]
    if shard is None:
        write_results(results_path, ordered)
    else:
        _write_shard(results_path, shard, assigned, ordered, missing, settings, info or {}, detections)
    keep_checkpoint = bool(missing)
    if not keep_checkpoint:
        checkpoint.discard()
    return EvalRun(
        results_path=results_path,
        records=ordered,
        image_ids=assigned,
        images_with_detections=len(with_detections),
        detections_used=detections.count_for(assigned),
        missing_images=sorted(missing),
        resumed_images=resumed,
        processed_images=processed,
        shard=shard,
        checkpoint_kept=keep_checkpoint,
    )


def write_results(path: PathLike, records: List[Dict[str, Any]]) -> None:
    """The final COCO keypoint results list, atomically, in one deterministic format."""
    from mspn_cli.io.writers import write_json_atomic

    write_json_atomic(path, records)


def run_person_detection(
    detector: Any,
    annotations: CocoKeypointAnnotations,
    image_ids: Sequence[int],
    dets_path: PathLike,
    on_progress: Optional[ProgressCallback] = None,
) -> Tuple[List[Dict[str, Any]], List[Tuple[int, str]]]:
    """Run `detector.detect_many` on the images and write a COCO detection-results file.

    Returns (records, missing images). Records go in sorted image-id order, each
    image's boxes in the detector's order, so the file is reusable as --dets.
    """
    from mspn_cli.io.records import detection_records
    from mspn_cli.io.sources import prefetch, read_image
    from mspn_cli.io.writers import write_json_atomic

    ids = sorted(int(i) for i in image_ids)
    missing: List[Tuple[int, str]] = []

    def items() -> Iterator[Tuple[int, np.ndarray]]:
        for image_id, image, error in prefetch(ids, lambda i: read_image(annotations.image_path(i)), depth=4):
            if error is not None:
                if not isinstance(error, InputError):
                    raise error
                missing.append((image_id, str(error)))
                continue
            yield image_id, image

    by_image: Dict[int, List[Dict[str, Any]]] = {}
    finished = 0
    for image_id, dets in detector.detect_many(items()):
        by_image[image_id] = detection_records(dets.as_array(), image_id)
        finished += 1
        if on_progress:
            on_progress(finished, len(ids))
    records = [record for image_id in sorted(by_image) for record in by_image[image_id]]
    write_json_atomic(dets_path, records)
    return records, sorted(missing)


# --------------------------------------------------------------------------- shards: files and merging


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


def _write_shard(
    path: Path,
    shard: Tuple[int, int],
    image_ids: List[int],
    records: List[Dict[str, Any]],
    missing: List[Tuple[int, str]],
    settings: Dict[str, Any],
    info: Dict[str, Any],
    detections: DetectionSelection,
) -> None:
    from mspn_cli.io.writers import write_json_atomic

    write_json_atomic(
        path,
        {
            "format": SHARD_FORMAT,
            "shard": [shard[0], shard[1]],
            "settings": settings,
            "info": info,
            "counts": {
                "detections_in_file": detections.total,
                "detections_dropped_not_person": detections.dropped_not_person,
                "detections_dropped_unknown_image": detections.dropped_unknown_image,
                "detections_used": detections.count_for(image_ids),
                "images_with_detections": sum(1 for i in image_ids if i in detections.boxes),
            },
            "image_ids": image_ids,
            "missing_images": [[image_id, reason] for image_id, reason in sorted(missing)],
            "results": records,
        },
    )


def read_shard_file(path: PathLike) -> ShardPart:
    """Load and check one shard file written by `mspn eval-coco --shard K/N`."""
    path = Path(path)
    data = read_json_file(path, "shard file")
    if isinstance(data, list):
        raise InputError(f"{path} is a complete results list, not a shard file (written by eval-coco --shard K/N)")
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
        raise InputError(f"{path} is not a shard file written by `mspn eval-coco --shard K/N`")
    shard = data.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(_is_int(v) for v in shard) and 0 <= shard[0] < shard[1]):
        raise InputError(f"shard file {path}: bad 'shard' field {shard!r}")
    image_ids = data.get("image_ids")
    results = data.get("results")
    if not isinstance(image_ids, list) or not all(_is_int(i) for i in image_ids) or not isinstance(results, list):
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
    first = loaded[0]
    by_index: Dict[int, ShardPart] = {}
    for part in loaded:
        if part.count != first.count:
            raise InputError(f"{part.path} is shard {part.index}/{part.count} but {first.path} is one of {first.count}")
        if part.settings != first.settings:
            changed = _changed_keys(first.settings, part.settings)
            raise InputError(f"{part.path} and {first.path} come from runs with different settings ({', '.join(changed)})")
        if part.index in by_index:
            raise InputError(f"shard {part.index}/{part.count} given twice: {by_index[part.index].path} and {part.path}")
        by_index[part.index] = part
    absent = [k for k in range(first.count) if k not in by_index]
    if absent:
        names = ", ".join(f"{k}/{first.count}" for k in absent)
        raise InputError(f"missing shard(s) {names}: all {first.count} shards are needed for a complete result")
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


# --------------------------------------------------------------------------- provenance and summary


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
        "published_mspn_4stage": dict(PUBLISHED_MSPN_4STAGE),
        "difference_to_published": {name: _rounded(v) for name, v in report.differences().items()},
        "settings": settings,
        "counts": counts,
        "results": str(results_path) if results_path is not None else None,
        "annotations": str(annotations_path) if annotations_path is not None else None,
        "eval_log": str(log_path) if log_path is not None else None,
        "mspn_cli_version": __version__,
    }
