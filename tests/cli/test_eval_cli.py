"""`mspn eval-coco` / `mspn merge-results`: oracle accuracy, determinism across shards and restarts, the real CLI.

The oracle tests drive the same functions the command calls (run_keypoint_eval,
evaluate_keypoints) with a PosePipeline whose network is the ground-truth oracle. The real-network runs are in tests/slow/test_eval_real_network.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.detection.result import Detections
from mspn_cli.evaluation.annotations import load_annotations
from mspn_cli.evaluation.checkpoint import checkpoint_path_for
from mspn_cli.evaluation.cocoeval import STAT_NAMES, evaluate_keypoints
from mspn_cli.evaluation.job import load_selection
from mspn_cli.evaluation.run import run_keypoint_eval, write_results
from mspn_cli.evaluation.shards import merge_results, shard_results_path
from mspn_cli.pipeline import PoseEstimator, PosePipeline
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, run_mspn
from tests.oracle import FlatHeatmapsBackend, OracleBackend

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS = COCO_SAMPLE / "person_dets_sample.json"


@pytest.fixture(scope="module")
def oracle():
    return OracleBackend.from_coco(ANN, DETS, COCO_SAMPLE)


@pytest.fixture(scope="module")
def annotations():
    return load_annotations(ANN, COCO_SAMPLE)


@pytest.fixture(scope="module")
def selection(annotations):
    return load_selection(str(DETS), annotations)


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


def oracle_pipeline(backend, batch_size=4, flip=None) -> PosePipeline:
    return PosePipeline(PoseEstimator(backend=backend, batch_size=batch_size, flip=flip))


def test_oracle_network_scores_near_perfect_ap(tmp_path, oracle, annotations, selection):
    before = oracle.misses
    run = run_keypoint_eval(oracle_pipeline(oracle, batch_size=16), annotations, selection, tmp_path / "r.json")
    report = evaluate_keypoints(annotations, run.records)
    assert oracle.misses == before, "the oracle did not recognise some crops"
    assert len(run.records) == 25 and run.missing_images == []
    # Official record fields; the detector box is kept under a name pycocotools ignores.
    first = load_json(tmp_path / "r.json")[0]
    assert {"image_id", "category_id", "keypoints", "score", "det_bbox"} <= set(first) and "bbox" not in first
    assert first["category_id"] == 1 and first["keypoints"][2::3] == [1.0] * 17
    assert report.stats["AP"] >= 0.95, report.stats
    assert report.stats["AP50"] == 1.0 and report.stats["AR"] >= 0.95


def test_oracle_without_flip_also_scores_near_perfect_ap(tmp_path, oracle, annotations, selection):
    run = run_keypoint_eval(oracle_pipeline(oracle, batch_size=16, flip=False), annotations, selection, tmp_path / "r.json")
    assert evaluate_keypoints(annotations, run.records).stats["AP"] >= 0.95


def test_single_sharded_and_resumed_runs_are_byte_identical(tmp_path, oracle, annotations, selection):
    single = run_keypoint_eval(oracle_pipeline(oracle), annotations, selection, tmp_path / "single.json",
                                    settings={"run": "oracle"})
    single_bytes = single.results_path.read_bytes()
    single_stats = evaluate_keypoints(annotations, single.results_path).stats

    parts = []
    for k in range(3):
        part = shard_results_path(tmp_path / "sharded.json", k, 3)
        run_keypoint_eval(oracle_pipeline(oracle), annotations, selection, part, shard=(k, 3),
                               settings={"run": "oracle"})
        parts.append(part)
    merged = merge_results(parts, annotations)
    write_results(tmp_path / "sharded.json", merged.records)
    assert (tmp_path / "sharded.json").read_bytes() == single_bytes

    killed = tmp_path / "killed.json"
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_keypoint_eval(oracle_pipeline(CrashAfterBatches(oracle, 5)), annotations, selection, killed,
                               settings={"run": "oracle"})
    assert not killed.exists() and checkpoint_path_for(killed).exists()
    resumed = run_keypoint_eval(oracle_pipeline(oracle), annotations, selection, killed, settings={"run": "oracle"})
    assert resumed.resumed_images > 0 and resumed.processed_images > 0
    assert killed.read_bytes() == single_bytes
    assert evaluate_keypoints(annotations, killed).stats == single_stats


# --------------------------------------------------------------------------- in-process CLI with the oracle


@pytest.fixture()
def cli_with_backend(monkeypatch):
    """Invoke the real command in-process, with a stand-in for the MSPN network."""
    from typer.testing import CliRunner

    from mspn_cli.cli.app import app

    def invoke(backend, *args):
        def from_settings(cls, settings, pose_backend=None):
            return cls(None, backend=backend, flip=settings.flip, batch_size=settings.batch_size)

        monkeypatch.setattr(PoseEstimator, "from_settings", classmethod(from_settings))
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture()
def cli_with_oracle(cli_with_backend, oracle):
    return lambda *args: cli_with_backend(oracle, *args)


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


def test_without_dets_the_detector_runs_once_and_its_boxes_are_cached(tmp_path, monkeypatch, annotations, cli_with_oracle):
    import mspn_cli.pipeline as pipeline

    gt_boxes = {}
    for det in load_json(DETS):
        x, y, w, h = det["bbox"]
        gt_boxes.setdefault(det["image_id"], []).append([x, y, x + w, y + h, 0.9])
    calls = []

    class GroundTruthDetector:
        """The person detector replaced by the GT boxes (the detector has its own tests).

        Images come in sorted-id order, so the n-th call is for the n-th annotated image.
        """

        def __init__(self, settings):
            from mspn_cli.config import load_detector_config

            self.config = load_detector_config()
            self.weights_sha256 = "gt"
            # Every box above the detector's own threshold, no cap: as the official test.
            assert settings.box_thr == self.config.postprocess.score_thr and settings.max_persons is None

        @classmethod
        def from_settings(cls, settings, backend=None):
            return cls(settings)

        def detect(self, image):
            image_id = annotations.image_ids[len(calls) % len(annotations.image_ids)]
            calls.append(image_id)
            return Detections.from_array(np.array(gt_boxes.get(image_id, np.zeros((0, 5))), np.float32))

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
    assert "reusing detections" not in again.output and len(calls) == 14


# --------------------------------------------------------------------------- the real CLI, no network needed


def test_existing_results_are_evaluated_without_a_network(tmp_path):
    data = load_json(ANN)
    gt = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
          for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    results = tmp_path / "gt.json"
    results.write_text(json.dumps(gt))
    proc = run_mspn("eval-coco", "--results", results, "--ann", ANN, "--summary", tmp_path / "s.json", check=True)
    summary = load_json(tmp_path / "s.json")
    assert summary["stats"] == {name: 1.0 for name in STAT_NAMES}
    assert "published mspn_4stage" in proc.stderr and "AP .75" in proc.stderr
    log = (tmp_path / "gt.eval.log").read_text()
    assert "Average Precision" in log and "Average Precision" not in proc.stderr  # pycocotools prints go to the log
    # The root's -v (a counter for every command) also prints pycocotools' output, before the
    # command or after it (issue 23).
    verbose = run_mspn("-v", "eval-coco", "--results", results, "--ann", ANN, check=True)
    assert "Average Precision" in verbose.stderr
    after = run_mspn("eval-coco", "--results", results, "--ann", ANN, "--verbose", check=True)
    assert "Average Precision" in after.stderr


def test_malformed_dets_is_a_clean_error(tmp_path):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.9}]))
    proc = run_mspn("eval-coco", "--dets", dets, "--ann", ANN, "--images", COCO_SAMPLE, "--results", tmp_path / "r.json")
    assert_clean_error(proc, code=3)
    assert "entry 0" in proc.stderr and "negative width or height" in proc.stderr
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
        part = shard_results_path(tmp_path / "all.json", k, 2)
        run_keypoint_eval(oracle_pipeline(oracle), annotations, selection, part, shard=(k, 2), settings={"r": 1})
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


# --------------------------------------------------------------------------- issue 15: items 4, 13 and 14


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_no_output_may_be_an_input(tmp_path, overwrite):
    ann = tmp_path / "ann.json"
    ann.write_bytes(ANN.read_bytes())
    dets = tmp_path / "dets.json"
    dets.write_bytes(DETS.read_bytes())
    alias = tmp_path / "alias.json"
    alias.symlink_to(ann)
    common = ["eval-coco", "--images", COCO_SAMPLE, *overwrite]
    for args in (
        ["--results", ann, "--ann", ann],
        ["--results", ann, "--ann", ann, "--dets", dets],
        ["--results", dets, "--ann", ann, "--dets", dets],
        ["--results", tmp_path / "r.json", "--ann", ann, "--dets", dets, "--summary", ann],
        ["--results", tmp_path / "." / "ann.json", "--ann", ann],
        ["--results", alias, "--ann", ann],  # another name of the same file
    ):
        proc = run_mspn(*common, *args)
        assert_clean_error(proc, code=2)
        assert "is one of the inputs" in proc.stderr
    assert ann.read_bytes() == ANN.read_bytes() and dets.read_bytes() == DETS.read_bytes()
    assert not (tmp_path / "r.json").exists()


def test_no_output_may_be_an_image_of_the_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        (images / name).write_bytes((COCO_SAMPLE / name).read_bytes())
    target = images / "000000000785.jpg"
    proc = run_mspn("eval-coco", "--ann", ANN, "--images", images, "--dets", DETS, "--results", target, "--overwrite")
    assert_clean_error(proc, code=2)
    assert "is one of the inputs" in proc.stderr and target.read_bytes() == (COCO_SAMPLE / target.name).read_bytes()


def test_merge_results_output_may_not_be_a_shard(tmp_path):
    shard = tmp_path / "r.shard-0-of-1.json"
    shard.write_text("{}")
    proc = run_mspn("merge-results", shard, "-o", shard, "--overwrite")
    assert_clean_error(proc, code=2)
    assert "is one of the inputs" in proc.stderr and shard.read_text() == "{}"


def test_empty_results_say_why_every_stat_is_zero_on_stderr(tmp_path):
    results = tmp_path / "empty.json"
    results.write_text("[]")
    proc = run_mspn("eval-coco", "--results", results, "--ann", ANN, "--summary", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    reasons = [line for line in proc.stderr.splitlines() if "holds no keypoint results" in line]
    assert len(reasons) == 1 and str(results) in reasons[0] and "every stat is 0" in reasons[0]
    assert load_json(tmp_path / "s.json")["stats"] == {name: 0.0 for name in STAT_NAMES}


def test_degenerate_boxes_do_not_refuse_the_file(tmp_path, cli_with_backend):
    """Issue 15 item 14, with a detections file built for it: odd lines are dropped or kept as the official test does."""
    person = {"image_id": 785, "category_id": 1, "bbox": [280.0, 40.0, 150.0, 380.0], "score": 0.9}
    entries = [
        person,
        {**person, "bbox": [300.0, 50.0, 0.0, 300.0]},  # zero width: widened by the extension
        {**person, "bbox": [300.0, 50.0, 120.0, 0.0]},  # zero height
        {**person, "bbox": [300.0, 50.0, 0.0, 0.0], "score": 0.2},  # zero size: still cropped
        {**person, "category_id": 44, "bbox": [1.0, 2.0, 0.0, 0.0]},  # another category: dropped
        {**person, "category_id": 2, "bbox": [1.0, 2.0, -3.0, 4.0]},  # dropped without looking at the box
        {**person, "image_id": 123456789, "bbox": [1.0, 2.0, 0.0, 4.0]},  # not annotated: dropped
        {**person, "image_id": 40083},
    ]
    dets = tmp_path / "odd_dets.json"
    dets.write_text(json.dumps(entries))
    backend = FlatHeatmapsBackend()
    results, summary = tmp_path / "r.json", tmp_path / "s.json"
    proc = cli_with_backend(backend, "eval-coco", "--dets", dets, "--ann", ANN, "--images", COCO_SAMPLE,
                            "--results", results, "--summary", summary, "--batch-size", "3")
    assert proc.exit_code == 0, proc.output
    records = load_json(results)
    assert [r["image_id"] for r in records] == [785] * 4 + [40083] and backend.crops == 2 * 5
    assert all(np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"]) for r in records)
    counts = load_json(summary)["counts"]
    assert counts["detections_in_file"] == 8 and counts["detections_used"] == 5
    assert counts["detections_dropped_not_person"] == 2 and counts["detections_dropped_unknown_image"] == 1
    said = " ".join(proc.output.split())
    assert "5 of 8 detection(s) used, 3 dropped (2 not person, 1 on images not in the annotations)" in said
    assert "3 person box(es) of width or height 0 kept" in said
    assert "Warning" not in said and "Traceback" not in said


class StopsTheRun(FlatHeatmapsBackend):
    """Sends SIGTERM to this very process during forward pass number `at` (as Slurm or `timeout` would)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def run(self, batch):
        import os
        import signal

        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().run(batch)


def test_sigterm_keeps_the_checkpoint_and_the_rerun_finishes_identically(tmp_path, cli_with_backend):
    """Issue 15 item 1 for eval-coco: SIGTERM stops like Ctrl-C, exit 143, and the same command resumes."""
    import signal

    from mspn_cli.cli.common import install_stop_signals

    args = ["eval-coco", "--dets", DETS, "--ann", ANN, "--images", COCO_SAMPLE, "--batch-size", "1"]
    reference = cli_with_backend(FlatHeatmapsBackend(), *args, "--results", tmp_path / "reference.json")
    assert reference.exit_code == 0, reference.output
    results = tmp_path / "stopped.json"
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    install_stop_signals()  # as `mspn` does at start
    try:
        stopped = cli_with_backend(StopsTheRun(at=3), *args, "--results", results)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert stopped.exit_code == 143, stopped.output
    said = " ".join(stopped.output.split())
    assert "interrupted" in said and "run the same command again to continue" in said
    checkpoint = checkpoint_path_for(results)
    assert not results.exists() and checkpoint.exists()
    resumed = cli_with_backend(FlatHeatmapsBackend(), *args, "--results", results)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed:" in resumed.output and not checkpoint.exists()
    assert results.read_bytes() == (tmp_path / "reference.json").read_bytes()
