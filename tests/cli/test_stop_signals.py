"""SIGTERM and SIGHUP stop a run as Ctrl-C does (issue 15, item 1).

Slurm, Kubernetes, `timeout` and systemd stop jobs with SIGTERM. Before, `keypoints`
killed that way exited 143 with no message and no `--json` output. Now the finished
images are written, temporary files removed, one line said, and the exit code is
128 + the signal.

No race with the child: one input is a named pipe, so the run cannot get past it until
the test releases it, and the first image's `--jsonl` line (read with a blocking readline,
and written after that image's annotated file) is the child's signal that the image is
done. The run then waits on the pipe, so the signal finds it idle: for `detect` the pipe
is the second input; `keypoints` decodes images on a background thread up to four ahead
of the one being run (io.sources.prefetch, depth 4: five reads in flight), so its reader
may already wait on the pipe before the first result comes out; there the pipe is the
fourth input, with three images the run can finish. The pipe is released after the
signal by a writer whose blocking open returns only once the child has opened the pipe
(tests/fifo.py), so the release can come neither too early nor never. The checks hold whichever images finished: every image
reported on stdout is in the JSON output and drawn, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import COCO_SAMPLE, WEIGHTS_CACHE, load_json
from tests.fifo import fed

GOOD_IMAGE = COCO_SAMPLE / "000000000785.jpg"
GOOD_BOX = [280.79, 44.73, 218.7, 346.68]
FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "1"]


def _inputs_with_a_fifo(folder: Path, fifo_at: int):
    """Five numeric names; the one at `fifo_at` (0-based) is a named pipe that blocks the run until released."""
    folder.mkdir()
    paths = [folder / f"{index + 1:012d}.jpg" for index in range(5)]
    for index, path in enumerate(paths):
        if index == fifo_at:
            os.mkfifo(path)
        else:
            path.write_bytes(GOOD_IMAGE.read_bytes())
    return paths


def _stop_after_first_line(args, signum, fifo: Path, home: Path):
    env = dict(os.environ, MSPN_HOME=str(home), COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        first_line = proc.stdout.readline()  # blocks until the first image is finished
        assert first_line, proc.stderr.read() if proc.poll() is not None else "no output"
        proc.send_signal(signum)
        # The reader thread (now or later) gets an end of file, once it has opened the pipe.
        with fed(fifo):
            rest, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reported = [json.loads(line)["image_id"] for line in (first_line + rest).splitlines() if line.strip()]
    return proc.returncode, reported, stderr


def _no_hidden_temp_files(*folders: Path) -> None:
    for folder in folders:
        if folder.is_dir():
            hidden = [p.name for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".tmp." in p.name]
            assert not hidden, hidden


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_keypoints_stopped_by_a_signal_keeps_finished_results(tmp_path, mspn_weights, signum, code):
    fifo_at = 3
    inputs = _inputs_with_a_fifo(tmp_path / "images", fifo_at)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": index + 1, "category_id": 1, "bbox": GOOD_BOX, "score": 1.0}
                                 for index in range(5)]))
    out, vis = tmp_path / "out.json", tmp_path / "vis"
    args = ["keypoints", *inputs, "--boxes", boxes, "--json", out, "--jsonl", "-o", vis,
            "--weights", mspn_weights, *FAST]
    returncode, reported, stderr = _stop_after_first_line(args, signum, inputs[fifo_at], WEIGHTS_CACHE / "home")

    assert returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    assert reported[0] == 1 and fifo_at + 1 not in reported
    assert "interrupted" in stderr, stderr
    records = load_json(out)
    assert [r["image_id"] for r in records] == reported  # what was finished, in input order
    assert [r["path"] for r in records] == [str(inputs[image_id - 1]) for image_id in reported]
    assert sorted(p.name for p in vis.glob("*.jpg")) == [f"{image_id:012d}_pose.jpg" for image_id in reported]
    _no_hidden_temp_files(tmp_path, vis)


def test_detect_stopped_by_sigterm_keeps_finished_results(tmp_path, eager_detector_weights):
    fifo_at = 1
    inputs = _inputs_with_a_fifo(tmp_path / "images", fifo_at)
    out, vis = tmp_path / "dets.json", tmp_path / "vis"
    args = ["detect", *inputs, "-o", out, "--jsonl", "--vis", vis, "--detector-weights", eager_detector_weights,
            "--backend", "onnxruntime", "--det-size", "64"]
    returncode, reported, stderr = _stop_after_first_line(args, signal.SIGTERM, inputs[fifo_at], WEIGHTS_CACHE / "home")

    assert returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert reported == [1]
    assert "interrupted" in stderr, stderr
    records = load_json(out)
    # The eager detector finds persons everywhere, so every finished image has records.
    assert sorted({r["image_id"] for r in records}) == sorted(reported)
    assert sorted(p.name for p in vis.glob("*.jpg")) == [f"{image_id:012d}_dets.jpg" for image_id in sorted(reported)]
    _no_hidden_temp_files(tmp_path, vis)
