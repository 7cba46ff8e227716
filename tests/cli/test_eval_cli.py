"""`mspn eval-coco` / `mspn merge-results`: oracle accuracy, determinism across shards and restarts, the real CLI.

The oracle tests drive the same functions the command calls (coco.run_keypoint_eval,
coco.evaluate_keypoints) with a PoseEstimator whose network is the ground-truth
oracle. The real-network runs are in tests/slow/test_eval_real_network.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.evaluation import coco
from mspn_cli.pipeline import PoseEstimator
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn
from tests.oracle import OracleBackend

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS = COCO_SAMPLE / "person_dets_sample.json"


@pytest.fixture(scope="module")
def oracle():
    return OracleBackend.from_coco(ANN, DETS, COCO_SAMPLE)


@pytest.fixture(scope="module")
def annotations():
    return coco.load_annotations(ANN, COCO_SAMPLE)


@pytest.fixture(scope="module")
def selection(annotations):
    return coco.select_person_detections(coco.load_detections(DETS), annotations.image_ids)


class CrashAfterBatches:
    """Wraps a backend and raises on batch number `batches` + 1, like a crash mid-run."""

    name = "crashing"

    def __init__(self, inner, batches: int):
        self.inner = inner
        self.batches = batches
        self.calls = 0

    def run(self, batch):
        if self.calls >= self.batches:
            raise RuntimeError("simulated kill")
        self.calls += 1
        return self.inner.run(batch)


def oracle_estimator(backend, batch_size=4, flip=None) -> PoseEstimator:
    return PoseEstimator(backend=backend, batch_size=batch_size, flip=flip)


def test_oracle_network_scores_near_perfect_ap(tmp_path, oracle, annotations, selection):
    before = oracle.misses
    run = coco.run_keypoint_eval(oracle_estimator(oracle, batch_size=16), annotations, selection, tmp_path / "r.json")
    report = coco.evaluate_keypoints(annotations, run.records)
    assert oracle.misses == before, "the oracle did not recognise some crops"
    assert len(run.records) == 25 and run.missing_images == []
    # Official record fields; the detector box is kept under a name pycocotools ignores.
    first = load_json(tmp_path / "r.json")[0]
    assert {"image_id", "category_id", "keypoints", "score", "det_bbox"} <= set(first) and "bbox" not in first
    assert first["category_id"] == 1 and first["keypoints"][2::3] == [1.0] * 17
    assert report.stats["AP"] >= 0.95, report.stats
    assert report.stats["AP50"] == 1.0 and report.stats["AR"] >= 0.95


def test_oracle_without_flip_also_scores_near_perfect_ap(tmp_path, oracle, annotations, selection):
    run = coco.run_keypoint_eval(oracle_estimator(oracle, batch_size=16, flip=False), annotations, selection, tmp_path / "r.json")
    assert coco.evaluate_keypoints(annotations, run.records).stats["AP"] >= 0.95


def test_single_sharded_and_resumed_runs_are_byte_identical(tmp_path, oracle, annotations, selection):
    single = coco.run_keypoint_eval(oracle_estimator(oracle), annotations, selection, tmp_path / "single.json",
                                    settings={"run": "oracle"})
    single_bytes = single.results_path.read_bytes()
    single_stats = coco.evaluate_keypoints(annotations, single.results_path).stats

    parts = []
    for k in range(3):
        part = coco.shard_results_path(tmp_path / "sharded.json", k, 3)
        coco.run_keypoint_eval(oracle_estimator(oracle), annotations, selection, part, shard=(k, 3),
                               settings={"run": "oracle"})
        parts.append(part)
    merged = coco.merge_results(parts, annotations)
    coco.write_results(tmp_path / "sharded.json", merged.records)
    assert (tmp_path / "sharded.json").read_bytes() == single_bytes

    killed = tmp_path / "killed.json"
    with pytest.raises(RuntimeError, match="simulated kill"):
        coco.run_keypoint_eval(oracle_estimator(CrashAfterBatches(oracle, 5)), annotations, selection, killed,
                               settings={"run": "oracle"})
    assert not killed.exists() and coco.checkpoint_path_for(killed).exists()
    resumed = coco.run_keypoint_eval(oracle_estimator(oracle), annotations, selection, killed, settings={"run": "oracle"})
    assert resumed.resumed_images > 0 and resumed.processed_images > 0
    assert killed.read_bytes() == single_bytes
    assert coco.evaluate_keypoints(annotations, killed).stats == single_stats


# --------------------------------------------------------------------------- in-process CLI with the oracle


@pytest.fixture()
def cli_with_oracle(monkeypatch, oracle):
    """Invoke the real command in-process, with the oracle instead of MSPN."""
    from typer.testing import CliRunner

    import mspn_cli.pipeline as pipeline
    from mspn_cli.cli.app import app

    def make_estimator(config=None, weights=None, device="cpu", backend="auto", flip=None, batch_size=None, progress=False):
        return PoseEstimator(config, backend=oracle, flip=flip, batch_size=batch_size)

    monkeypatch.setattr(pipeline, "PoseEstimator", make_estimator)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_missing_image_is_skipped_counted_and_exits_1(tmp_path, cli_with_oracle):
    image_dir = tmp_path / "val2017"
    image_dir.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        (image_dir / name).symlink_to(COCO_SAMPLE / name)
    data = load_json(ANN)
    keep = {785, 40083, 196141}  # 196141 is absent from the folder
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    results, summary = tmp_path / "out.json", tmp_path / "summary.json"
    result = cli_with_oracle("eval-coco", "--dets", DETS, "--ann", ann, "--images", image_dir, "--results", results,
                             "--summary", summary)
    assert result.exit_code == 1, result.output
    assert "1 image(s) missing or unreadable were skipped" in result.output and "000000196141.jpg" in result.output
    counts = load_json(summary)["counts"]
    assert counts["missing_images"] == 1 and counts["missing_image_ids"] == [196141]
    assert {r["image_id"] for r in load_json(results)} == {785, 40083}


def test_without_dets_the_detector_runs_once_and_its_boxes_are_cached(tmp_path, monkeypatch, cli_with_oracle):
    import mspn_cli.pipeline as pipeline

    gt_boxes = {}
    for det in load_json(DETS):
        x, y, w, h = det["bbox"]
        gt_boxes.setdefault(det["image_id"], []).append([x, y, x + w, y + h, 0.9])
    calls = []

    class GroundTruthDetector:
        """The person detector replaced by the GT boxes (the detector has its own tests)."""

        def __init__(self, config=None, weights=None, device="cpu", backend="auto", det_size=None, box_thr=0.05, progress=False):
            from mspn_cli.config import load_detector_config

            self.config = load_detector_config()
            self.weights_sha256 = "gt"
            assert box_thr == 0.05

        def detect_many(self, items):
            for image_id, image in items:
                calls.append(image_id)
                yield image_id, np.array(gt_boxes.get(image_id, np.zeros((0, 5))), np.float32).reshape(-1, 5)

    monkeypatch.setattr(pipeline, "PersonDetector", GroundTruthDetector)
    results = tmp_path / "det.json"
    first = cli_with_oracle("eval-coco", "--ann", ANN, "--images", COCO_SAMPLE, "--results", results, "--summary",
                            tmp_path / "s.json")
    assert first.exit_code == 0, first.output
    cached = tmp_path / "det_dets.json"
    assert len(load_json(cached)) == 25 and len(calls) == 7
    assert load_json(tmp_path / "s.json")["stats"]["AP"] >= 0.95
    # Without the results (but with the cached boxes) the next run skips the detector.
    results.unlink()
    second = cli_with_oracle("eval-coco", "--ann", ANN, "--images", COCO_SAMPLE, "--results", results)
    assert second.exit_code == 0, second.output
    assert "reusing detections" in second.output and len(calls) == 7
    again = cli_with_oracle("eval-coco", "--ann", ANN, "--images", COCO_SAMPLE, "--results", results, "--overwrite")
    assert again.exit_code == 0, again.output
    assert "reusing detections" not in again.output and len(calls) == 40


# --------------------------------------------------------------------------- the real CLI, no network needed


def test_existing_results_are_evaluated_without_a_network(tmp_path):
    data = load_json(ANN)
    gt = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
          for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    results = tmp_path / "gt.json"
    results.write_text(json.dumps(gt))
    proc = run_mspn("eval-coco", "--results", results, "--ann", ANN, "--summary", tmp_path / "s.json", check=True)
    summary = load_json(tmp_path / "s.json")
    assert summary["stats"] == {name: 1.0 for name in coco.STAT_NAMES}
    assert "published mspn_4stage" in proc.stderr and "AP .75" in proc.stderr
    log = (tmp_path / "gt.eval.log").read_text()
    assert "Average Precision" in log and "Average Precision" not in proc.stderr  # pycocotools prints go to the log
    verbose = run_mspn("eval-coco", "--results", results, "--ann", ANN, "--verbose", check=True)
    assert "Average Precision" in verbose.stderr


def test_malformed_dets_is_a_clean_error(tmp_path):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.9}]))
    proc = run_mspn("eval-coco", "--dets", dets, "--ann", ANN, "--images", COCO_SAMPLE, "--results", tmp_path / "r.json")
    assert_clean_error(proc, code=3)
    assert "entry 0" in proc.stderr and "width and height must be > 0" in proc.stderr
    dets.write_text("[{")
    assert_clean_error(run_mspn("eval-coco", "--dets", dets, "--ann", ANN, "--images", COCO_SAMPLE, "--results", tmp_path / "r.json"), code=3)


def test_missing_annotation_file_is_a_clean_error(tmp_path):
    proc = run_mspn("eval-coco", "--dets", DETS, "--coco-root", tmp_path, "--results", tmp_path / "r.json")
    assert_clean_error(proc, code=3)
    assert "person_keypoints_val2017.json not found" in proc.stderr and "--coco-root" in proc.stderr
    no_kps = load_json(ANN)
    for category in no_kps["categories"]:
        del category["keypoints"]
    (tmp_path / "instances.json").write_text(json.dumps(no_kps))
    proc = run_mspn("eval-coco", "--dets", DETS, "--ann", tmp_path / "instances.json", "--images", COCO_SAMPLE,
                    "--results", tmp_path / "r.json")
    assert_clean_error(proc, code=3)
    assert "has no person keypoints" in proc.stderr


def test_existing_results_are_not_overwritten(tmp_path):
    results = tmp_path / "r.json"
    results.write_text("[]")
    proc = run_mspn("eval-coco", "--dets", DETS, "--ann", ANN, "--images", COCO_SAMPLE, "--results", results)
    assert_clean_error(proc)
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr and results.read_text() == "[]"


def test_shard_with_summary_is_a_usage_error(tmp_path):
    proc = run_mspn("eval-coco", "--dets", DETS, "--ann", ANN, "--images", COCO_SAMPLE, "--results", tmp_path / "r.json",
                    "--shard", "0/2", "--summary", tmp_path / "s.json")
    assert_clean_error(proc, code=2)
    assert "merge-results" in proc.stderr
    assert_clean_error(run_mspn("eval-coco", "--dets", DETS, "--ann", ANN, "--shard", "2/2"), code=2)


def test_merge_results_cli(tmp_path, oracle, annotations, selection):
    parts = []
    for k in range(2):
        part = coco.shard_results_path(tmp_path / "all.json", k, 2)
        coco.run_keypoint_eval(oracle_estimator(oracle), annotations, selection, part, shard=(k, 2), settings={"r": 1})
        parts.append(part)
    proc = run_mspn("merge-results", parts[0], "-o", tmp_path / "lonely.json")
    assert_clean_error(proc, code=3)
    assert "missing shard(s) 1/2" in proc.stderr and not (tmp_path / "lonely.json").exists()
    run_mspn("merge-results", *parts, "-o", tmp_path / "all.json", "--ann", ANN, "--summary", tmp_path / "s.json", check=True)
    assert load_json(tmp_path / "s.json")["stats"]["AP"] >= 0.95
    assert len(load_json(tmp_path / "all.json")) == 25
    proc = run_mspn("merge-results", *parts, parts[0], "-o", tmp_path / "dup.json")
    assert_clean_error(proc, code=3)
    assert "given twice" in proc.stderr
