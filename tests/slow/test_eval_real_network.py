"""`mspn eval-coco` end to end with seeded random MSPN weights on a five-image subset:
all ten stats, a SIGKILLed run resumes to the identical file, local workers agree.

One person box per image and --no-flip, so a run is five MSPN crops (about a second each
on CPU); --batch-size 1 so the images finish one at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mspn_cli.evaluation.checkpoint import checkpoint_path_for
from mspn_cli.evaluation.cocoeval import STAT_NAMES
from tests.conftest import COCO_SAMPLE, WEIGHTS_CACHE, load_json, run_mspn

ANN = COCO_SAMPLE / "person_keypoints_sample.json"
DETS_NOISY = COCO_SAMPLE / "person_dets_noisy.json"
# In id order, which is the run's order. The SIGKILL test makes the last one a named pipe:
# the pipeline reads a few images ahead, so four come before it.
SUBSET_IMAGE_IDS = (785, 40083, 196141, 229358, 360137)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The annotations of five images and the first noisy detection of each."""
    folder = tmp_path_factory.mktemp("subset")
    data = load_json(ANN)
    data["images"] = [i for i in data["images"] if i["id"] in SUBSET_IMAGE_IDS]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in SUBSET_IMAGE_IDS]
    ann = folder / "ann.json"
    ann.write_text(json.dumps(data))
    first_box = {}
    for det in load_json(DETS_NOISY):
        if det["image_id"] in SUBSET_IMAGE_IDS:
            first_box.setdefault(det["image_id"], det)
    dets = folder / "person_dets_first.json"
    dets.write_text(json.dumps([first_box[i] for i in SUBSET_IMAGE_IDS]))
    return folder, ann, dets


def _real_args(subset, weights, results, images=COCO_SAMPLE):
    _, ann, dets = subset
    return ["eval-coco", "--dets", dets, "--ann", ann, "--images", images, "--weights", weights,
            "--results", results, "--batch-size", "1", "--no-flip", "--backend", "onnxruntime"]


@pytest.fixture(scope="module")
def reference_run(subset, mspn_weights):
    folder = subset[0]
    results, summary = folder / "reference.json", folder / "reference_summary.json"
    proc = run_mspn(*_real_args(subset, mspn_weights, results), "--summary", summary)
    assert proc.returncode == 0, proc.stderr
    return results, summary


def test_real_network_run_writes_all_ten_stats(subset, reference_run):
    results, summary_path = reference_run
    summary = load_json(summary_path)
    assert list(summary["stats"]) == list(STAT_NAMES)
    # null = no ground truth in that area range (pycocotools' -1).
    assert all(value is None or 0.0 <= value <= 1.0 for value in summary["stats"].values())
    assert summary["stats"]["AP"] is not None
    assert summary["published_mspn_4stage"]["AP"] == 0.752
    settings, counts = summary["settings"], summary["counts"]
    assert settings["flip"] is False and settings["decoder"] == "official (quirk-faithful)"
    assert len(settings["weights_sha256"]) == 64 and settings["box_source"].endswith("person_dets_first.json")
    assert counts["images"] == 5 and counts["detections_used"] == 5 and counts["instances"] == 5
    assert counts["detections_dropped_unknown_image"] == 0 and counts["missing_images"] == 0
    assert len(load_json(results)) == 5 and results.with_name("reference.eval.log").exists()


def test_sigkilled_run_resumes_to_an_identical_file(subset, mspn_weights, reference_run):
    """SIGKILL once an image is checkpointed; the resumed run writes the same file.

    The last image is a named pipe until the run has been killed, so the child cannot
    finish the run before the signal, however fast the machine.
    """
    folder = subset[0]
    images = folder / "killed_images"
    images.mkdir()
    *earlier, last = (f"{image_id:012d}.jpg" for image_id in SUBSET_IMAGE_IDS)
    for name in earlier:
        (images / name).symlink_to(COCO_SAMPLE / name)
    os.mkfifo(images / last)
    results = folder / "killed.json"
    checkpoint = checkpoint_path_for(results)
    env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, _real_args(subset, mspn_weights, results, images))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        # The header and at least one image's line, complete (the child writes them; the
        # pipe keeps it from finishing meanwhile).
        while _complete_lines(checkpoint) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not results.exists()
    checkpointed_images = _complete_lines(checkpoint) - 1  # after the header line
    assert 1 <= checkpointed_images < len(SUBSET_IMAGE_IDS)
    (images / last).unlink()
    (images / last).symlink_to(COCO_SAMPLE / last)
    resumed = run_mspn(*_real_args(subset, mspn_weights, results, images), "--summary", folder / "killed_summary.json")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed: {checkpointed_images} image(s)" in resumed.stderr, resumed.stderr
    assert results.read_bytes() == reference_run[0].read_bytes()
    assert load_json(folder / "killed_summary.json")["stats"] == load_json(reference_run[1])["stats"]
    assert not checkpoint.exists()


def _complete_lines(path) -> int:
    """Newline-terminated lines in `path` (0 if it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_local_workers_give_the_single_run_file(subset, mspn_weights, reference_run):
    folder = subset[0]
    results = folder / "workers.json"
    proc = run_mspn(*_real_args(subset, mspn_weights, results), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    # Byte equality is sound: each worker inherits the parent's CPU set, so its onnxruntime
    # session runs as many threads as the reference run's (runtime.base.usable_cpus).
    assert results.read_bytes() == reference_run[0].read_bytes()
    assert not list(folder.glob("workers.shard-*"))
