"""The whole `mspn keypoints` pipeline (detector + MSPN, full-size networks) over a folder of
real photos and one large image, with its peak memory."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import IMAGES, load_json, run_mspn_measuring_peak_rss

FAST = ("--det-size", "256", "--backend", "onnxruntime")
VENDORED_IMAGES = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))


def test_keypoints_on_every_image_with_the_detector(tmp_path, eager_detector_weights, mspn_weights, large_image):
    """The full pipeline over a whole folder: crowd, grayscale, RGBA, portrait, large."""
    folder = tmp_path / "images"
    folder.mkdir()
    for path in [*VENDORED_IMAGES, large_image]:
        shutil.copyfile(path, folder / path.name)
    all_images = sorted(folder.iterdir())
    out_dir = tmp_path / "vis"
    args = ["keypoints", folder, "--json", tmp_path / "all.json", "-o", out_dir, "--detector-weights",
            eager_detector_weights, "--weights", mspn_weights, "--max-persons", "1", "--no-flip", *FAST]
    proc, peak_mb = run_mspn_measuring_peak_rss(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"done: {len(all_images)} image(s)" in proc.stderr
    records = load_json(tmp_path / "all.json")
    # The eager detector finds a person everywhere: MSPN runs on one crop of every image.
    assert sorted(r["file_name"] for r in records) == [p.name for p in all_images]
    assert all(len(r["keypoints"]) == 51 for r in records)
    assert len(list(out_dir.iterdir())) == len(all_images)
    # The 1853x2638 image is resized for the detector and cropped per person, never blown
    # up: against the same run over the smallest photo alone (the baseline, measured now),
    # the folder costs less than 1 GB more (its float32 copy is 56 MB; the footprint of the
    # networks, which differs between machines, is in both figures).
    alone = tmp_path / "alone"
    alone.mkdir()
    smallest = min(VENDORED_IMAGES, key=lambda p: p.stat().st_size)
    shutil.copyfile(smallest, alone / smallest.name)
    baseline, baseline_mb = run_mspn_measuring_peak_rss(
        "keypoints", alone, "--json", tmp_path / "alone.json", "--detector-weights", eager_detector_weights,
        "--weights", mspn_weights, "--max-persons", "1", "--no-flip", *FAST)
    assert baseline.returncode == 0, baseline.stderr
    assert peak_mb - baseline_mb < 1024, f"peak RSS {peak_mb:.0f} MB, {baseline_mb:.0f} MB for one small photo"
