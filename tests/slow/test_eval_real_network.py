"""`mspn eval-coco` end to end with seeded random MSPN weights on a two-image subset:
all ten stats, a SIGKILLed run resumes to the identical file, local workers agree.

MSPN costs about a second per crop on CPU; with flip a person is two crops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mspn_cli.evaluation import coco
from tests.conftest import COCO_SAMPLE, WEIGHTS_CACHE, load_json, run_mspn

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS_NOISY = COCO_SAMPLE / "person_dets_noisy.json"
# Two images with one person box each in the noisy detections: 2 persons, 4 crops with flip.
# --batch-size 1 (one person, two crops per forward pass) so the images finish one at a time.
SUBSET_IMAGE_IDS = (785, 360137)


# --------------------------------------------------------------------------- the real CLI with random MSPN weights


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """An annotation file restricted to two one-person images."""
    folder = tmp_path_factory.mktemp("subset")
    data = load_json(ANN)
    data["images"] = [i for i in data["images"] if i["id"] in SUBSET_IMAGE_IDS]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in SUBSET_IMAGE_IDS]
    ann = folder / "ann.json"
    ann.write_text(json.dumps(data))
    return folder, ann


def _real_args(ann, weights, results):
    return ["eval-coco", "--dets", DETS_NOISY, "--ann", ann, "--images", COCO_SAMPLE, "--weights", weights,
            "--results", results, "--batch-size", "1", "--backend", "megengine"]


@pytest.fixture(scope="module")
def reference_run(subset, mspn_weights):
    folder, ann = subset
    results, summary = folder / "reference.json", folder / "reference_summary.json"
    proc = run_mspn(*_real_args(ann, mspn_weights, results), "--summary", summary)
    assert proc.returncode == 0, proc.stderr
    return results, summary


def test_real_network_run_writes_all_ten_stats(reference_run):
    results, summary_path = reference_run
    summary = load_json(summary_path)
    assert list(summary["stats"]) == list(coco.STAT_NAMES)
    # null = no ground truth in that area range (pycocotools' -1): both persons are large.
    assert all(value is None or 0.0 <= value <= 1.0 for value in summary["stats"].values())
    assert summary["stats"]["AP"] is not None and summary["stats"]["APm"] is None
    assert summary["published_mspn_4stage"]["AP"] == 0.752
    settings, counts = summary["settings"], summary["counts"]
    assert settings["flip"] is True and settings["decoder"] == "official (quirk-faithful)"
    assert len(settings["weights_sha256"]) == 64 and settings["box_source"].endswith("person_dets_noisy.json")
    assert counts["images"] == 2 and counts["detections_used"] == 2 and counts["instances"] == 2
    assert counts["detections_dropped_unknown_image"] == 24 and counts["missing_images"] == 0
    assert len(load_json(results)) == 2 and results.with_name("reference.eval.log").exists()


def test_sigkilled_run_resumes_to_an_identical_file(subset, mspn_weights, reference_run):
    folder, ann = subset
    results = folder / "killed.json"
    checkpoint = coco.checkpoint_path_for(results)
    env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, _real_args(ann, mspn_weights, results))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        # Header + the first image: kill while the second image is being computed.
        while not (checkpoint.exists() and len(checkpoint.read_bytes().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint line appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not results.exists(), "the run finished before it could be killed"
    resumed = run_mspn(*_real_args(ann, mspn_weights, results), "--summary", folder / "killed_summary.json")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: 1 image(s)" in resumed.stderr
    assert results.read_bytes() == reference_run[0].read_bytes()
    assert load_json(folder / "killed_summary.json")["stats"] == load_json(reference_run[1])["stats"]
    assert not checkpoint.exists()


def test_local_workers_give_the_single_run_file(subset, mspn_weights, reference_run):
    folder, ann = subset
    results = folder / "workers.json"
    proc = run_mspn(*_real_args(ann, mspn_weights, results), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert results.read_bytes() == reference_run[0].read_bytes()
    assert not list(folder.glob("workers.shard-*"))
