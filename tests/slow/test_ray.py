"""`--engine ray`: the same bytes as `--engine local`, and resumable after SIGKILL.

One local Ray cluster for the whole module (2 CPUs, no dashboard), shut down at the
end; the CLI runs join it with `--ray-address` set to its address, so a killed CLI run
leaves no cluster of its own behind. Skipped when Ray is not
installed (`pip install 'mspn-cli[ray]'`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mspn_cli.engines import EngineOptions
from mspn_cli.engines.local import LocalEngine
from mspn_cli.io.outputs import ImageResultsWriter
from mspn_cli.io.sources import expand_inputs
from mspn_cli.io.tasks import plan_image_tasks
from mspn_cli.io.detections import load_detections
from mspn_cli.settings import RunSettings
from tests.cli.test_resume import DETS, LATE, _checkpoint, _start, _wait_for_finished_image, fed
from tests.conftest import COCO_SAMPLE, IMAGES, WEIGHTS_CACHE, run_mspn

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'mspn-cli[ray]' to test --engine ray")


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray tip about GPUs
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             runtime_env={"env_vars": {"MSPN_HOME": str(WEIGHTS_CACHE / "home")}})
    try:
        yield ray
    finally:
        ray.shutdown()


def _address() -> str:
    """The module cluster's GCS address: what a CLI run passes as --ray-address to join it."""
    return ray.get_runtime_context().gcs_address


# The processes that make up a Ray cluster (not its task workers, which the cluster reuses).
_CLUSTER_PROGRAMS = (b"gcs_server", b"raylet")
_CLUSTER_SCRIPTS = (b"dashboard/agent.py", b"runtime_env/agent/main.py", b"log_monitor.py", b"dashboard/dashboard.py")
_CLUSTER_TITLES = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def _cluster_processes() -> dict:
    """pid -> command line of every Ray cluster process on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        if (os.path.basename(argv[0]) in _CLUSTER_PROGRAMS or argv[0].startswith(_CLUSTER_TITLES)
                or any(arg.endswith(_CLUSTER_SCRIPTS) for arg in argv[1:3])):
            found[entry.name] = b" ".join(argv)[:80].decode(errors="replace")
    return found


class StandInPose:
    """Heatmaps that depend only on each crop's pixels (one peak per joint), so the batching differs
    between engines but the results must not."""

    def run(self, batch):
        batch = np.asarray(batch, dtype=np.float32)
        heatmaps = np.zeros((len(batch), 17, 64, 48), np.float32)
        for i, crop in enumerate(batch):
            for joint in range(17):
                row = int(abs(float(crop[joint % 3, :, joint * 11 % 192].mean())) * 997 + joint * 13) % 64
                col = int(abs(float(crop[:, joint * 15 % 256].mean())) * 991 + joint * 7) % 48
                heatmaps[i, joint, row, col] = 255.0 * (0.5 + (row + col) % 7 / 14)
        return [heatmaps]


def _written(engine, tasks, path):
    writer = ImageResultsWriter(str(path), False, {}, draw=None)
    outcomes = list(engine.run(tasks, {}))
    assert len(outcomes) == len(tasks)
    for outcome in outcomes:
        if outcome.error is None:
            from mspn_cli.io.result_rows import outcome_to_row

            outcome.records = outcome_to_row(outcome)["records"]
            writer.add(outcome)
    writer.finish()
    return path.read_bytes(), outcomes


def test_ray_engine_gives_the_bytes_of_the_local_engine(ray_cluster, tmp_path):
    from mspn_cli.engines.ray_engine import RayEngine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors need not import the tests
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000329323.jpg", "000000360137.jpg"]:
        shutil.copy(COCO_SAMPLE / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    tasks = plan_image_tasks(expand_inputs([folder]), load_detections(DETS, require_coco_fields=False))
    settings = RunSettings(batch_size=3)

    local_bytes, _ = _written(LocalEngine.from_settings(settings, False, pose_backend=StandInPose()), tasks, tmp_path / "local.json")
    engine = RayEngine(settings, False, {"kpt_thr": 0.3}, EngineOptions("ray", actors=2, actor_cpus=1), pose_backend=StandInPose())
    try:
        ray_bytes, outcomes = _written(engine, tasks, tmp_path / "ray.json")
    finally:
        engine.close()
    assert ray_bytes == local_bytes and len(local_bytes) > 100
    errors = [o.error for o in outcomes if o.error]
    assert len(errors) == 1 and "broken.jpg" in errors[0]  # a bad image comes back as a row with its error
    assert ray.is_initialized()  # the engine leaves a cluster it did not start alone


def test_a_stalled_block_holds_back_no_other_block(ray_cluster, tmp_path):
    """The first block reads a pipe nobody writes to yet; the other blocks must still come back.

    With Ray Data's default of two blocks in flight per actor, run out of order, the stalled
    actor also held the block queued behind it (and in the SIGKILL test below, with one actor,
    sometimes ran the stalled block first and never finished the other)."""
    from mspn_cli.engines.ray_engine import RayEngine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folder = tmp_path / "in"
    folder.mkdir()
    early = ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg"]
    for name in early:
        shutil.copy(COCO_SAMPLE / name, folder / name)
    pipe = tmp_path / "late" / LATE
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    tasks = plan_image_tasks(expand_inputs([pipe, folder]), load_detections(DETS, require_coco_fields=False))
    assert tasks[0].path == str(pipe) and len(tasks) == 4
    engine = RayEngine(RunSettings(batch_size=2), False, {"kpt_thr": 0.3}, EngineOptions("ray", actors=2, actor_cpus=1),
                       pose_backend=StandInPose())
    engine.config = dataclasses.replace(engine.config, images_per_block=1)  # four blocks, the pipe alone in the first

    # The pipe is fed once the three other images are back; a fallback feeds it after a deadline,
    # so a regression fails the test instead of hanging it.
    released = threading.Event()
    fed_late = []

    def fallback():
        if not released.wait(300):
            fed_late.append(True)
            with fed(pipe):
                pass

    guard = threading.Thread(target=fallback, daemon=True)
    guard.start()
    arrived = []
    try:
        with contextlib.ExitStack() as feeding:
            for outcome in engine.run(tasks, {}):
                arrived.append(Path(outcome.task.path).name)
                if sorted(arrived) == sorted(early) and not released.is_set():
                    released.set()
                    feeding.enter_context(fed(pipe))
    finally:
        released.set()
        engine.close()
    guard.join(timeout=60)
    assert not fed_late, f"only {arrived} came back while the first block was stalled"
    assert sorted(arrived[:3]) == sorted(early) and arrived[3] == LATE


def test_cli_engine_ray_with_real_network_matches_local(ray_cluster, mspn_weights, tmp_path):
    images = [COCO_SAMPLE / "000000000785.jpg", IMAGES / "pilots_three_people_rgba.png"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text('[{"image_id": 785, "bbox": [280, 40, 220, 340], "score": 0.9, "category_id": 1},'
                     ' {"file_name": "pilots_three_people_rgba.png", "bbox": [20, 60, 180, 400], "score": 0.8, "category_id": 1}]')
    vis_local, vis_ray = tmp_path / "vis_local", tmp_path / "vis_ray"
    # Both sides run one inference thread (the actor has one CPU): equal bytes are then a
    # property of the engines, not of how a machine's thread count splits the convolutions.
    local = run_mspn("keypoints", *images, "--boxes", boxes, "--weights", mspn_weights, "--json", tmp_path / "local.json",
                     "-o", vis_local, one_cpu=True)
    assert local.returncode == 0, local.stderr
    remote = run_mspn("keypoints", *images, "--boxes", boxes, "--weights", mspn_weights, "--json", tmp_path / "ray.json",
                      "-o", vis_ray, "--engine", "ray", "--ray-address", _address(), "--actors", "1", "--actor-cpus", "1")
    assert remote.returncode == 0, remote.stderr
    # No error-level line from Ray's C++ core ("[date time E pid tid] file.cc:line: ...") on a normal run.
    assert not re.search(r"^\[[^\]]* E \d+ \d+\]", remote.stderr, re.MULTILINE), remote.stderr
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "local.json").read_bytes()
    drawn = sorted(p.name for p in vis_ray.iterdir())
    assert drawn == sorted(p.name for p in vis_local.iterdir()) and len(drawn) == 2
    for name in drawn:  # the actor draws exactly what the local driver draws
        assert (vis_ray / name).read_bytes() == (vis_local / name).read_bytes()


def _pose_actor_processes():
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::MapWorker(MapBatches(PoseActor))"):
                found.append(entry.name)
        except OSError:
            pass
    return found


def _wait_until_no_pose_actor_runs(deadline_s: float = 120) -> None:
    """Ray ends the actors of a dead driver on its own; wait for that (a condition, not a delay)."""
    give_up = time.monotonic() + deadline_s
    while _pose_actor_processes():
        if time.monotonic() > give_up:
            pytest.fail(f"Ray did not end the killed driver's actors: {_pose_actor_processes()}")
        time.sleep(0.1)


def test_cli_engine_ray_resumes_after_sigkill(ray_cluster, mspn_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000329323.jpg"]:
        shutil.copy(COCO_SAMPLE / name, folder / name)
    pipe = tmp_path / "late" / LATE
    pipe.parent.mkdir()
    os.mkfifo(pipe)  # last task, alone in the second block: the first block finishes, the second waits on it
    # The module's cluster, joined by address: a SIGKILLed driver that had started its own
    # cluster would leave its agents (DashboardAgent, RuntimeEnvAgent) running.
    local = ["keypoints", folder, pipe, "--boxes", DETS, "--weights", mspn_weights, "--no-flip", "-q"]
    common = [*local, "--engine", "ray", "--ray-address", _address(), "--actors", "1", "--actor-cpus", "1"]
    cluster = _cluster_processes()
    assert cluster  # the markers do find the module's cluster

    # The reference comes from the local engine (the engines give the same bytes, tested above).
    # The killed run has one actor: the pipe's block is dispatched only once the first block is
    # back, so the checkpoint gets the first block's images before the run stalls.
    reference = tmp_path / "ref.json"
    with fed(pipe):
        proc = run_mspn(*local, "--json", reference, timeout=300, one_cpu=True)  # one thread, as the actor
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "out.json"
    proc = _start([*common, "--json", out])
    _wait_for_finished_image(proc, _checkpoint(out), deadline_s=300)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not out.exists() and _checkpoint(out).exists()
    _wait_until_no_pose_actor_runs()  # else the killed job's actor, still waiting on the pipe, could read it

    with fed(pipe):
        rerun = run_mspn(*common, "--json", out, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not _checkpoint(out).exists()
    started = set(_cluster_processes()) - set(cluster)  # another cluster's processes may end meanwhile
    assert not started, started  # the killed driver started no cluster processes


def test_cli_eval_coco_engine_ray_matches_local(ray_cluster, mspn_weights, tmp_path):
    keep = {785, 40083, 360137}  # 5 kept boxes on 3 images
    sample = json.loads((COCO_SAMPLE / "person_keypoints_sample.json").read_text())
    sample["images"] = [image for image in sample["images"] if image["id"] in keep]
    sample["annotations"] = [a for a in sample["annotations"] if a["image_id"] in keep]
    ann = tmp_path / "person_keypoints_three.json"
    ann.write_text(json.dumps(sample))
    common = ["eval-coco", "--dets", COCO_SAMPLE / "person_dets_sample.json", "--ann", ann, "--images", COCO_SAMPLE,
              "--weights", mspn_weights, "--no-flip", "-q"]
    local = run_mspn(*common, "--results", tmp_path / "local.json", timeout=300, one_cpu=True)  # one thread, as the actor
    assert local.returncode == 0, local.stderr
    remote = run_mspn(*common, "--results", tmp_path / "ray.json", "--engine", "ray", "--ray-address", _address(),
                      "--actors", "1", "--actor-cpus", "1", timeout=300)
    assert remote.returncode == 0, remote.stderr
    local_records = json.loads((tmp_path / "local.json").read_text())
    assert sorted({r["image_id"] for r in local_records}) == sorted(keep) and len(local_records) == 5
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "local.json").read_bytes()
    assert not (tmp_path / "ray.json.partial.jsonl").exists()  # the checkpoint is gone once the run finished
