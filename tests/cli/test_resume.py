"""Resumable and sharded `mspn keypoints` (real CLI, seeded MSPN weights, given boxes).

Runs that get interrupted read their last input from a named pipe that nobody writes
to: they finish every other image, checkpoint it, and then wait, so the test sends its
signal after the checkpoint holds a finished image (the child's own signal), never
after a delay, and the child cannot finish first. Reruns get the pipe fed with a real
image, so the final output must be the bytes of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import COCO_SAMPLE, WEIGHTS_CACHE, assert_clean_error, load_json, run_mspn
from tests.fifo import fed as fed_pipe

DETS = COCO_SAMPLE / "person_dets_sample.json"
EARLY = ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg"]
LATE = "000000229358.jpg"  # read through the pipe; has boxes in DETS (matched by image id)


def _checkpoint(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    early = root / "in"
    early.mkdir()
    for name in EARLY:
        shutil.copy(COCO_SAMPLE / name, early / name)
    late = root / "late"
    late.mkdir()
    os.mkfifo(late / LATE)
    return early, late / LATE


def fed(pipe: Path):
    """Write the late image into the pipe once a reader opens it; release the writer afterwards."""
    return fed_pipe(pipe, (COCO_SAMPLE / LATE).read_bytes())


def _args(inputs, out, weights, *extra):
    early, pipe = inputs
    return ["keypoints", early, pipe, "--boxes", DETS, "--weights", weights, "--batch-size", "1", "--no-flip", "--json", out, "-q", *extra]


def _start(args) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("MSPN_HOME", str(WEIGHTS_CACHE / "home"))
    env["COLUMNS"] = "200"
    return subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_finished_image(proc: subprocess.Popen, checkpoint: Path, deadline_s: float = 600) -> None:
    """Until the checkpoint holds its header and one finished image (the child stays blocked on the pipe)."""
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            pytest.fail(f"mspn exited {proc.returncode} before checkpointing an image:\n{proc.communicate()[1]}")
        if checkpoint.exists() and checkpoint.read_bytes().count(b"\n") >= 2:
            return
        time.sleep(0.05)
    proc.kill()
    stderr = proc.communicate()[1]
    pytest.fail(f"no image was checkpointed within {deadline_s} s; the child said:\n{stderr[-3000:]}")


@pytest.fixture(scope="module")
def reference(inputs, mspn_weights, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("reference") / "ref.json"
    with fed(inputs[1]):
        proc = run_mspn(*_args(inputs, out, mspn_weights))
    assert proc.returncode == 0, proc.stderr
    assert not _checkpoint(out).exists()  # removed after a successful finish
    records = load_json(out)
    assert {r["file_name"] for r in records} >= {LATE, EARLY[0]}
    return out.read_bytes()


def test_sigkill_then_rerun_gives_the_bytes_of_an_uninterrupted_run(inputs, mspn_weights, reference, tmp_path):
    out = tmp_path / "out.json"
    proc = _start(_args(inputs, out, mspn_weights))
    _wait_for_finished_image(proc, _checkpoint(out))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not out.exists() and _checkpoint(out).exists()

    with fed(inputs[1]):
        rerun = run_mspn(*[a for a in _args(inputs, out, mspn_weights) if a != "-q"])
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed:" in rerun.stderr
    assert out.read_bytes() == reference
    assert not _checkpoint(out).exists()


def test_sigterm_writes_finished_results_and_the_rerun_replaces_them(inputs, mspn_weights, reference, tmp_path):
    out = tmp_path / "out.json"
    proc = _start(_args(inputs, out, mspn_weights))
    _wait_for_finished_image(proc, _checkpoint(out))
    proc.send_signal(signal.SIGTERM)
    # The stop waits for the read in flight (the pipe); feeding it lets the run end. The signal came
    # first, while the run could not finish, so it ends as stopped whichever way the two race.
    with fed(inputs[1]):
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and "again to continue" in stderr
    partial = load_json(out)  # the finished images, as valid JSON, matching the checkpoint
    done = [json.loads(line) for line in _checkpoint(out).read_text().splitlines()[1:]]
    assert done and [r for row in sorted(done, key=lambda row: row["index"]) for r in row["records"]] == partial

    with fed(inputs[1]):  # no --overwrite: the checkpoint marks out.json as this run's unfinished result
        rerun = run_mspn(*_args(inputs, out, mspn_weights))
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == reference


def test_checkpoint_of_other_settings_is_refused_and_no_resume_starts_over(inputs, mspn_weights, reference, tmp_path):
    out = tmp_path / "out.json"
    checkpoint = _checkpoint(out)
    checkpoint.write_text(json.dumps({"format": "mspn-keypoints-checkpoint/1", "settings": {"run": "another"}}) + "\n")
    out.write_text("[]")

    refused = run_mspn(*_args(inputs, out, mspn_weights))
    assert_clean_error(refused, 2)
    assert "different settings" in refused.stderr and "--no-resume" in refused.stderr

    with fed(inputs[1]):
        fresh = run_mspn(*_args(inputs, out, mspn_weights, "--no-resume"))
    assert fresh.returncode == 0, fresh.stderr
    assert out.read_bytes() == reference and not checkpoint.exists()

    again = run_mspn(*_args(inputs, out, mspn_weights))  # finished: an existing result needs --overwrite
    assert_clean_error(again, 2)
    assert "--overwrite" in again.stderr


def test_two_shards_merge_into_the_bytes_of_a_single_run(inputs, mspn_weights, reference, tmp_path):
    total = len(EARLY) + 1
    late_shard = (total - 1) % 2  # the pipe is the last task
    shards = []
    for k in range(2):
        part = tmp_path / f"part{k}.json"
        if k == late_shard:
            with fed(inputs[1]):
                proc = run_mspn(*_args(inputs, part, mspn_weights, "--shard", f"{k}/2"))
        else:
            proc = run_mspn(*_args(inputs, part, mspn_weights, "--shard", f"{k}/2"))
        assert proc.returncode == 0, proc.stderr
        shards.append(part)

    missing = run_mspn("merge-results", shards[0], "-o", tmp_path / "m.json")
    assert_clean_error(missing, 3)
    assert "missing shard" in missing.stderr

    merged = tmp_path / "merged.json"
    proc = run_mspn("merge-results", shards[1], shards[0], "-o", merged)
    assert proc.returncode == 0, proc.stderr
    assert merged.read_bytes() == reference


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, mspn_weights):
    hidden = tmp_path / "no_ray"
    (hidden / "ray").mkdir(parents=True)
    (hidden / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    proc = run_mspn("keypoints", COCO_SAMPLE / EARLY[0], "--boxes", DETS, "--weights", mspn_weights,
                    "--json", tmp_path / "out.json", "--engine", "ray", env=env)
    assert_clean_error(proc, 2)
    assert "pip install 'mspn-cli[ray]'" in proc.stderr
    assert not (tmp_path / "out.json").exists()


def _snapshot(*roots: Path) -> dict:
    """Every file under `roots`: its bytes and mtime_ns (what a refused run must leave alone)."""
    files = {}
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                files[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return files


def _interrupted_with_images(inputs, out: Path, vis: Path, weights) -> None:
    """A run with --json and -o stopped by SIGTERM after its checkpoint holds a finished image."""
    proc = _start(_args(inputs, out, weights, "-o", vis))
    _wait_for_finished_image(proc, _checkpoint(out))
    proc.send_signal(signal.SIGTERM)
    with fed(inputs[1]):
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert out.exists() and _checkpoint(out).exists() and any(vis.iterdir()), stderr


def test_every_refusal_after_sigterm_changes_nothing_and_the_run_still_resumes(inputs, mspn_weights, reference, tmp_path):
    out, vis = tmp_path / "out.json", tmp_path / "vis"
    _interrupted_with_images(inputs, out, vis, mspn_weights)
    before = _snapshot(tmp_path)

    other_settings = run_mspn(*_args(inputs, out, mspn_weights, "-o", vis, "--flip"))
    assert_clean_error(other_settings, 2)
    line = other_settings.stderr.strip()
    assert "\n" not in line and len(line) < 300 and "flip: off → on" in line, line  # one line naming the change

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / f"{Path(EARLY[0]).stem}_pose.jpg").write_bytes(b"not this run's")
    before = _snapshot(tmp_path)
    foreign_images = run_mspn(*_args(inputs, out, mspn_weights, "-o", taken, "--no-resume"))
    assert_clean_error(foreign_images, 2)
    assert "already exists" in foreign_images.stderr

    no_weights = run_mspn(*_args(inputs, out, tmp_path / "absent.pkl", "-o", vis, "--no-resume"))
    assert_clean_error(no_weights, 4)

    bad_option = run_mspn(*_args(inputs, out, mspn_weights, "-o", vis, "--shard", "3/2"))
    assert_clean_error(bad_option, 2)
    assert _snapshot(tmp_path) == before  # bytes and mtimes, the checkpoint included

    with fed(inputs[1]):
        resumed = run_mspn(*[a for a in _args(inputs, out, mspn_weights, "-o", vis) if a != "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed:" in resumed.stderr
    assert out.read_bytes() == reference and not _checkpoint(out).exists()


def test_no_resume_restarts_an_interrupted_run_replacing_its_own_images(inputs, mspn_weights, reference, tmp_path):
    out, vis = tmp_path / "out.json", tmp_path / "vis"
    _interrupted_with_images(inputs, out, vis, mspn_weights)
    with fed(inputs[1]):
        restarted = run_mspn(*_args(inputs, out, mspn_weights, "-o", vis, "--no-resume"))
    assert restarted.returncode == 0, restarted.stderr  # was: exit 2 "output image ... already exists", checkpoint gone
    assert out.read_bytes() == reference and not _checkpoint(out).exists()
    assert len(list(vis.iterdir())) == len(EARLY) + 1
