"""mspn_cli.evaluation without any network: selection, annotations, shards, scoring, checkpoint, merge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.errors import InputError, UsageError
from mspn_cli.evaluation.annotations import load_annotations
from mspn_cli.evaluation.checkpoint import checkpoint_path_for
from mspn_cli.evaluation.cocoeval import STAT_NAMES, evaluate_keypoints, published_stats
from mspn_cli.evaluation.run import run_keypoint_eval, write_results
from mspn_cli.evaluation.selection import select_person_detections
from mspn_cli.evaluation.shards import merge_results, parse_shard, select_shard, shard_results_path
from mspn_cli.evaluation.summary import build_summary
from mspn_cli.io.detections import load_detections, parse_detections
from mspn_cli.pose.result import PoseResult
from tests.conftest import COCO_SAMPLE
from tests.oracle import FlatHeatmapsBackend

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS = COCO_SAMPLE / "person_dets_sample.json"
DETS_NOISY = COCO_SAMPLE / "person_dets_noisy.json"


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def gt_as_results():
    """The ground truth itself as keypoint results (score 1): must score 1.0 everywhere."""
    data = json.loads(ANN.read_text())
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in data["annotations"]
        if not a["iscrowd"] and a["num_keypoints"] > 0
    ]


@pytest.fixture(scope="module")
def annotations():
    return load_annotations(ANN, COCO_SAMPLE)


# --------------------------------------------------------------------------- selection


def select(path_or_entries, annotations):
    if isinstance(path_or_entries, list):
        found = parse_detections(path_or_entries, "dets.json", require_coco_fields=True)
    else:
        found = load_detections(path_or_entries, require_coco_fields=True)
    return select_person_detections(found, annotations.image_ids)


def test_sample_detections_are_all_used_and_converted_to_xyxy_float32(annotations):
    selection = select(DETS, annotations)
    assert (selection.total, selection.used, selection.dropped_not_person, selection.dropped_unknown_image) == (25, 25, 0, 0)
    first = json.loads(DETS.read_text())[0]
    x, y, w, h = first["bbox"]
    detections = selection.detections[first["image_id"]]
    assert detections.boxes.dtype == np.float32 and detections.scores.dtype == np.float32
    # Official conversion: x + w in float64, then float32.
    np.testing.assert_array_equal(detections.boxes[0], np.array([x, y, x + w, y + h], dtype=np.float32))


def test_detections_keep_file_order_within_an_image(annotations):
    selection = select(DETS_NOISY, annotations)
    entries = [d for d in json.loads(DETS_NOISY.read_text()) if d["image_id"] == 329323]
    np.testing.assert_allclose(selection.detections[329323].scores, [d["score"] for d in entries], rtol=1e-6)
    assert selection.used == 26


GOOD = {"image_id": 785, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9}


def test_empty_detection_list_is_valid(annotations):
    selection = select([], annotations)
    assert selection.total == 0 and selection.used == 0 and selection.detections == {}


def test_unknown_images_and_other_categories_are_dropped_and_counted(annotations):
    entries = [GOOD, {**GOOD, "image_id": 999999}, {**GOOD, "category_id": 18}, {**GOOD, "image_id": 1, "category_id": 3}]
    selection = select(entries, annotations)
    assert (selection.total, selection.used, selection.dropped_not_person, selection.dropped_unknown_image) == (4, 1, 2, 1)
    assert list(selection.detections) == [785]


def test_degenerate_person_boxes_are_kept_and_counted(annotations):
    """Issue 15 item 14: zero width or height person boxes are samples, as in the official test."""
    entries = [
        GOOD,
        {**GOOD, "bbox": [50.0, 60.0, 0.0, 80.0]},
        {**GOOD, "bbox": [5, 6, 0, 0]},
        {**GOOD, "image_id": 999999, "bbox": [5, 6, 0, 0]},  # unknown image: dropped, not counted as kept
        {**GOOD, "category_id": 2, "bbox": [5, 6, 0, -1]},  # another category: dropped unchecked
    ]
    selection = select(entries, annotations)
    assert (selection.total, selection.used, selection.zero_size) == (5, 3, 2)
    assert (selection.dropped_not_person, selection.dropped_unknown_image) == (1, 1)


# --------------------------------------------------------------------------- annotations


def test_annotations_load_sorted_ids_and_file_names(annotations):
    assert len(annotations.image_ids) == 7 and annotations.image_ids == sorted(annotations.image_ids)
    assert annotations.image_path(785) == COCO_SAMPLE / "000000000785.jpg"
    assert annotations.num_instances == 22 and annotations.num_keypoints == 17


def test_missing_annotation_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="annotations file .* not found"):
        load_annotations(tmp_path / "person_keypoints_val2017.json")


def test_annotations_without_keypoints_are_refused(tmp_path):
    data = json.loads(ANN.read_text())
    for category in data["categories"]:
        category.pop("keypoints")
    path = write_json(tmp_path / "instances.json", data)
    with pytest.raises(InputError, match="has no person keypoints"):
        load_annotations(path)
    with pytest.raises(InputError, match="has no person keypoints"):
        evaluate_keypoints(path, gt_as_results())


def test_detections_file_given_as_annotations_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a COCO annotations file"):
        load_annotations(DETS)


# --------------------------------------------------------------------------- shards


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20, 25])
def test_shards_cover_every_image_exactly_once(count):
    ids = [int(i) for i in np.random.default_rng(count).permutation(np.arange(1000, 1020))]
    shards = [select_shard(ids, k, count) for k in range(count)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    # Deterministic: independent of the input order.
    assert shards == [select_shard(sorted(ids, reverse=True), k, count) for k in range(count)]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_parse_shard():
    assert parse_shard("3/8") == (3, 8) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1/0", "-1/4", "a/b", "3", "3/8/1"):
        with pytest.raises(UsageError):
            parse_shard(bad)


# --------------------------------------------------------------------------- evaluation


def test_ground_truth_as_results_scores_one_on_all_ten_stats(annotations):
    results = gt_as_results()
    report = evaluate_keypoints(annotations, results)
    assert list(report.stats) == list(STAT_NAMES)
    assert report.stats == {name: 1.0 for name in STAT_NAMES}
    assert "Average Precision" in report.log and report.num_results == 22


def test_evaluation_from_a_file_ignores_extra_fields_and_does_not_mutate(tmp_path):
    results = gt_as_results()
    # `bbox` must not switch pycocotools to box-area mode; the input must stay untouched.
    with_extras = [{**r, "bbox": [0, 0, 1, 1], "box_score": 1.0} for r in results]
    snapshot = json.dumps(with_extras)
    assert evaluate_keypoints(ANN, with_extras).stats["AP"] == 1.0
    assert json.dumps(with_extras) == snapshot
    path = write_json(tmp_path / "results.json", results)
    assert evaluate_keypoints(ANN, path).stats == {name: 1.0 for name in STAT_NAMES}


def test_results_for_images_not_in_the_annotations_are_refused(annotations):
    results = gt_as_results() + [{"image_id": 424242, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.5}]
    with pytest.raises(InputError, match="image_id 424242, which is not in the annotations"):
        evaluate_keypoints(annotations, results)


def test_malformed_results_are_refused(tmp_path, annotations):
    bad = gt_as_results()[:3] + [{"image_id": 785, "keypoints": [1.0] * 50, "score": 1.0}]
    with pytest.raises(InputError, match="entry 3 .*51 numbers"):
        evaluate_keypoints(annotations, bad)
    with pytest.raises(InputError, match="expected a JSON list"):
        evaluate_keypoints(annotations, write_json(tmp_path / "r.json", {"results": []}))


def test_empty_results_score_zero(annotations):
    report = evaluate_keypoints(annotations, [])
    assert report.stats == {name: 0.0 for name in STAT_NAMES}


def test_evaluation_can_be_restricted_to_some_images(annotations):
    results = [r for r in gt_as_results() if r["image_id"] in (785, 40083)]
    report = evaluate_keypoints(annotations, results, image_ids=[785, 40083])
    assert report.stats["AP"] == 1.0 and report.num_images == 2


def test_published_row_is_the_mspn_4stage_readme():
    published = published_stats()
    assert published["AP"] == 0.752 and published["ARl"] == 0.887
    assert list(published) == list(STAT_NAMES)


# --------------------------------------------------------------------------- the run (fake pipeline)


class FakePipeline:
    """Stands in for PosePipeline.run: keypoints derived from the boxes, no network.

    `fail_after` images raises, as a crash mid-run would.
    """

    def __init__(self, fail_after=None):
        self.fail_after = fail_after
        self.seen = []

    def run(self, items):
        for item in items:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise RuntimeError("simulated crash")
            self.seen.append(item.key)
            boxes, scores = item.detections.boxes, item.detections.scores
            n = len(boxes)
            centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            kps = np.zeros((n, 17, 3), np.float32)
            kps[:, :, :2] = centres[:, None, :] + np.arange(17, dtype=np.float32)[None, :, None] / 3
            kps[:, :, 2] = 0.5
            yield item.key, PoseResult(keypoints=kps, boxes=boxes, box_scores=scores, scores=0.5 * scores)


@pytest.fixture(scope="module")
def selection(annotations):
    return select(DETS_NOISY, annotations)


def test_interrupted_and_resumed_run_writes_the_same_file(tmp_path, annotations, selection):
    reference = run_keypoint_eval(FakePipeline(), annotations, selection, tmp_path / "ref.json", settings={"s": 1})
    assert reference.processed_images == 7 and not checkpoint_path_for(tmp_path / "ref.json").exists()

    target = tmp_path / "run.json"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_keypoint_eval(FakePipeline(fail_after=3), annotations, selection, target, settings={"s": 1})
    checkpoint = checkpoint_path_for(target)
    assert not target.exists() and len(checkpoint.read_text().splitlines()) == 1 + 3
    resumed_pipeline = FakePipeline()
    resumed = run_keypoint_eval(resumed_pipeline, annotations, selection, target, settings={"s": 1})
    assert resumed.resumed_images == 3 and resumed.processed_images == 4 and len(resumed_pipeline.seen) == 4
    assert target.read_bytes() == (tmp_path / "ref.json").read_bytes()
    assert not checkpoint.exists()


def test_torn_checkpoint_line_is_dropped(tmp_path, annotations, selection):
    target = tmp_path / "run.json"
    with pytest.raises(RuntimeError):
        run_keypoint_eval(FakePipeline(fail_after=5), annotations, selection, target, settings={"s": 1})
    checkpoint = checkpoint_path_for(target)
    lines = checkpoint.read_bytes().splitlines(keepends=True)
    # SIGKILL in the middle of writing line 5: half a line, no newline.
    checkpoint.write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    run = run_keypoint_eval(FakePipeline(), annotations, selection, target, settings={"s": 1})
    assert run.resumed_images == 4 and run.processed_images == 3
    reference = run_keypoint_eval(FakePipeline(), annotations, selection, tmp_path / "ref.json", settings={"s": 1})
    assert target.read_bytes() == reference.results_path.read_bytes()


def test_checkpoint_with_other_settings_is_refused_unless_no_resume(tmp_path, annotations, selection):
    target = tmp_path / "run.json"
    with pytest.raises(RuntimeError):
        run_keypoint_eval(FakePipeline(fail_after=3), annotations, selection, target, settings={"flip": True})
    with pytest.raises(UsageError, match="different settings .*flip.*--no-resume"):
        run_keypoint_eval(FakePipeline(), annotations, selection, target, settings={"flip": False})
    run = run_keypoint_eval(FakePipeline(), annotations, selection, target, settings={"flip": False}, resume=False)
    assert run.resumed_images == 0 and run.processed_images == 7


def test_missing_images_are_skipped_counted_and_retried_on_resume(tmp_path, annotations, selection):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for image_id in annotations.image_ids[:4]:
        (image_dir / annotations.file_names[image_id]).symlink_to(COCO_SAMPLE / annotations.file_names[image_id])
    subset = load_annotations(ANN, image_dir)
    target = tmp_path / "run.json"
    run = run_keypoint_eval(FakePipeline(), subset, selection, target, image_ids=subset.image_ids[:6])
    assert [i for i, _ in run.missing_images] == subset.image_ids[4:6] and run.processed_images == 4
    assert "file not found" in run.missing_images[0][1]
    assert run.checkpoint_kept and {r["image_id"] for r in run.records} == set(subset.image_ids[:4])
    # The image comes back: a resumed run only processes it.
    for image_id in subset.image_ids[4:6]:
        (image_dir / subset.file_names[image_id]).symlink_to(COCO_SAMPLE / subset.file_names[image_id])
    pipeline = FakePipeline()
    rerun = run_keypoint_eval(pipeline, subset, selection, target, image_ids=subset.image_ids[:6])
    assert pipeline.seen == subset.image_ids[4:6] and rerun.missing_images == []


# --------------------------------------------------------------------------- shards and merging


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory, annotations, selection):
    folder = tmp_path_factory.mktemp("shards")
    single = run_keypoint_eval(FakePipeline(), annotations, selection, folder / "single.json", settings={"s": 1})
    parts = []
    for k in range(3):
        path = shard_results_path(folder / "all.json", k, 3)
        run_keypoint_eval(FakePipeline(), annotations, selection, path, shard=(k, 3), settings={"s": 1})
        parts.append(path)
    return single.results_path, parts


def test_merged_shards_equal_the_single_run(tmp_path, shard_files, annotations):
    single, parts = shard_files
    merged = merge_results(list(reversed(parts)), annotations)
    write_results(tmp_path / "merged.json", merged.records)
    assert (tmp_path / "merged.json").read_bytes() == single.read_bytes()
    assert merged.count == 3 and merged.image_ids == annotations.image_ids
    assert merged.counts["detections_used"] == 26


def test_merge_refuses_a_missing_shard(shard_files):
    _, parts = shard_files
    with pytest.raises(InputError, match="missing shard.* 1/3"):
        merge_results([parts[0], parts[2]])


def test_merge_refuses_duplicates(tmp_path, shard_files):
    _, parts = shard_files
    with pytest.raises(InputError, match="given twice"):
        merge_results([parts[0], parts[1], parts[2], parts[1]])
    # A hand-edited shard claiming an image of another shard.
    data = json.loads(parts[2].read_text())
    stolen = json.loads(parts[0].read_text())["image_ids"][0]
    data["image_ids"].append(stolen)
    forged = write_json(tmp_path / "forged.json", data)
    with pytest.raises(InputError, match=f"image_id {stolen} is in shard 0 and shard 2"):
        merge_results([parts[0], parts[1], forged])


def test_merge_refuses_mixed_runs_and_non_shard_files(tmp_path, shard_files, annotations):
    single, parts = shard_files
    data = json.loads(parts[1].read_text())
    data["settings"] = {"s": 2}
    other = write_json(tmp_path / "other.json", data)
    with pytest.raises(InputError, match="different settings"):
        merge_results([parts[0], other, parts[2]])
    with pytest.raises(InputError, match="complete results list, not a shard file"):
        merge_results([single])
    # Shards of a smaller annotation set do not cover the full one.
    data = json.loads(parts[0].read_text())
    data["shard"] = [0, 1]
    small = write_json(tmp_path / "small.json", data)
    with pytest.raises(InputError, match="do not cover the annotation file"):
        merge_results([small], annotations)


def test_a_shard_file_cannot_be_evaluated_directly(shard_files, annotations):
    _, parts = shard_files
    with pytest.raises(InputError, match="is shard 0/3; combine all shards"):
        evaluate_keypoints(annotations, parts[0])


def test_summary_holds_stats_published_row_and_difference(annotations):
    report = evaluate_keypoints(annotations, gt_as_results())
    summary = build_summary(report, {"flip": True}, {"images": 20})
    assert summary["stats"]["AP"] == 1.0
    assert math.isclose(summary["difference_to_published"]["AP"], 1.0 - 0.752)
    json.dumps(summary)


# --------------------------------------------------------------------------- jobs and the real pipeline


def test_eval_job_round_trips_through_json():
    from mspn_cli.evaluation.job import EvalJob
    from mspn_cli.settings import RunSettings

    settings = RunSettings(weights="w.pkl", backend="onnxruntime", flip=False, batch_size=3, det_size=(512, 853))
    job = EvalJob(settings, "ann.json", "images", "dets.json", "r.shard-1-of-2.json", shard=(1, 2), resume=False,
                  boxes_fingerprint="detector x")
    assert EvalJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    with pytest.raises(UsageError, match="unknown evaluation job fields: argv"):
        EvalJob.from_dict({**job.to_dict(), "argv": []})


def test_degenerate_boxes_run_through_the_real_pipeline(tmp_path, annotations):
    """Issue 15 item 14: zero width, zero height and zero size person boxes all become results."""
    import warnings

    from mspn_cli.pipeline import PoseEstimator, PosePipeline

    entries = [GOOD, {**GOOD, "bbox": [50, 60, 0, 80]}, {**GOOD, "bbox": [50, 60, 40, 0]}, {**GOOD, "bbox": [5, 6, 0, 0]}]
    backend = FlatHeatmapsBackend()
    pipeline = PosePipeline(PoseEstimator(backend=backend, batch_size=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy warning may reach the user
        run = run_keypoint_eval(pipeline, annotations, select(entries, annotations), tmp_path / "r.json", image_ids=[785])
    assert backend.crops == 2 * 4 and [r["image_id"] for r in run.records] == [785] * 4
    assert all(math.isfinite(v) for r in run.records for v in r["keypoints"] + [r["score"]])
    # A box of zero size maps every keypoint back onto its one point.
    assert set(run.records[3]["keypoints"][0::3]) == {5.0} and set(run.records[3]["keypoints"][1::3]) == {6.0}
