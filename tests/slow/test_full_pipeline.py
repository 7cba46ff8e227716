"""The whole `mspn keypoints` pipeline (detector + MSPN, full-size networks) over a folder of
real photos and one large image, with its peak memory."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import IMAGES, load_json

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
    # A fresh parent process, so RUSAGE_CHILDREN measures this run alone.
    probe = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'mspn_cli', *sys.argv[1:]], capture_output=True, text=True)\n"
        "sys.stderr.write(proc.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(proc.returncode)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"done: {len(all_images)} image(s)" in proc.stderr
    records = load_json(tmp_path / "all.json")
    # The eager detector finds a person everywhere: MSPN runs on one crop of every image.
    assert sorted(r["file_name"] for r in records) == [p.name for p in all_images]
    assert all(len(r["keypoints"]) == 51 for r in records)
    assert len(list(out_dir.iterdir())) == len(all_images)
    # The 1853x2638 image is resized for the detector and cropped per person, never
    # blown up: the run stays within a few GB (MegEngine's own footprint is ~2 GB).
    peak_rss_gb = int(proc.stdout.strip().splitlines()[-1]) / 2**20
    assert peak_rss_gb < 4.0, peak_rss_gb
