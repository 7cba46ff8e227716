"""What the README promises, run through the real `mspn` and parsed (issue 23, item 5).

Each test names the README promise it keeps; tests/README.md has the table. They are cheap:
the shared test $MSPN_HOME (its onnxruntime graphs are cached), given boxes, --no-flip,
small images and the constant-head detector at a small --det-size.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import COCO_SAMPLE, IMAGES, WEIGHTS_CACHE, assert_clean_error, load_json, run_mspn

DETS = COCO_SAMPLE / "person_dets_sample.json"
ANN = COCO_SAMPLE / "person_keypoints_sample.json"
GOOD = COCO_SAMPLE / "000000000785.jpg"
GOOD_BOXES = [{"image_id": 785, "category_id": 1, "bbox": [280.79, 44.73, 218.7, 346.68], "score": 1.0}]
FAST = ["--backend", "onnxruntime", "--no-flip", "--batch-size", "1"]
# SGR sequences that set a colour (30-37, 38;..., 40-47, 48;..., 90-97, 100-107); bold or dim are not colours.
COLOUR_SGR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def _boxes(tmp_path: Path, records=None) -> Path:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(records or GOOD_BOXES))
    return path


def _run_on_a_terminal(args, env=None, timeout: float = 300):
    """(exit code, everything written) of `mspn args` with stdin, stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    full_env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"), TERM="xterm-256color", COLUMNS="120")
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "mspn_cli", *map(str, args)], stdin=slave, stdout=slave,
                            stderr=slave, env=full_env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


# ---------------------------------------------------------------- options table: --fail-fast
def test_fail_fast_stops_at_the_first_bad_input(tmp_path, mspn_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "000000000001.jpg").write_bytes(b"not a JPEG at all")
    shutil.copy(GOOD, folder / "000000000785.jpg")
    args = ["keypoints", folder / "000000000001.jpg", folder / "000000000785.jpg", "--boxes", _boxes(tmp_path),
            "--weights", mspn_weights, "--jsonl", *FAST]
    reported = run_mspn(*args, timeout=300)
    assert reported.returncode == 1, reported.stderr  # without it: reported at the end, the rest processed
    assert [json.loads(line)["image_id"] for line in reported.stdout.splitlines()] == [785]
    stopped = run_mspn(*args, "--fail-fast", timeout=300)
    assert_clean_error(stopped, code=3)
    assert "000000000001.jpg" in stopped.stderr and stopped.stdout.strip() == ""


# ---------------------------------------------------------------- options table: --device cpu
def test_device_cpu_gives_the_default_run_s_records(tmp_path, mspn_weights):
    outs = {}
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        outs[name] = tmp_path / f"{name}.json"
        proc = run_mspn("keypoints", GOOD, "--boxes", _boxes(tmp_path), "--weights", mspn_weights, "--json", outs[name],
                        *extra, *FAST, timeout=300)
        assert proc.returncode == 0, proc.stderr
    records = load_json(outs["cpu"])
    assert [r["image_id"] for r in records] == [785] and len(records[0]["keypoints"]) == 51
    assert outs["cpu"].read_bytes() == outs["default"].read_bytes()


# ---------------------------------------------------------------- -q, NO_COLOR, progress only on a TTY
def test_progress_on_a_terminal_with_colour_and_without_with_no_color(tmp_path, mspn_weights):
    args = ["keypoints", GOOD, "--boxes", _boxes(tmp_path), "--weights", mspn_weights, *FAST]
    code, shown = _run_on_a_terminal([*args, "--json", tmp_path / "tty.json"])
    assert code == 0, shown
    assert "1/1" in shown and "keypoints" in shown, shown  # the progress bar: images done / total
    assert COLOUR_SGR.search(shown), repr(shown[-500:])  # so the NO_COLOR check below can fail
    code, plain = _run_on_a_terminal([*args, "--json", tmp_path / "no_color.json"], env={"NO_COLOR": "1"})
    assert code == 0, plain
    assert "1/1" in plain and "done:" in plain
    assert not COLOUR_SGR.search(plain), repr(plain[-500:])


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, mspn_weights):
    proc = run_mspn("keypoints", GOOD, "--boxes", _boxes(tmp_path), "--weights", mspn_weights,
                    "--json", tmp_path / "out.json", *FAST, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "done: 1 image(s), 1 persons" in proc.stderr
    assert "1/1" not in proc.stderr and "\x1b[" not in proc.stderr


def test_quiet_keypoints_says_nothing_on_success(tmp_path, mspn_weights):
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", GOOD, "--boxes", _boxes(tmp_path), "--weights", mspn_weights, "--json", out, "-q",
                    *FAST, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr
    assert [r["image_id"] for r in load_json(out)] == [785]


def test_quiet_detect_says_nothing_on_success(tmp_path, eager_detector_weights):
    out = tmp_path / "dets.json"
    proc = run_mspn("detect", GOOD, "-o", out, "-q", "--detector-weights", eager_detector_weights,
                    "--backend", "onnxruntime", "--det-size", "64", timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    records = load_json(out)
    assert records and {r["image_id"] for r in records} == {785}


# ---------------------------------------------------------------- inputs: .txt path lists and globs
def test_txt_path_lists_and_globs_are_expanded(tmp_path, mspn_weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg"]
    for name in names:
        shutil.copy(COCO_SAMPLE / name, folder / name)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / names[0]}\n\n{folder / names[1]}\n")
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", listing, str(folder / "*196141.jpg"), "--boxes", DETS, "--weights", mspn_weights,
                    "--json", out, *FAST, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted({r["file_name"] for r in load_json(out)}) == names


# ---------------------------------------------------------------- video: --fourcc, --tracking-config
def _clip(path: Path, frames: int = 4, size=(96, 80)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    photo = cv2.resize(cv2.imread(str(IMAGES / "pilots_three_people_rgba.png"), cv2.IMREAD_COLOR), size)
    for _ in range(frames):
        writer.write(photo)
    writer.release()
    return path


def _fourcc(path: Path) -> str:
    capture = cv2.VideoCapture(str(path))
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    capture.release()
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


VIDEO = ["--backend", "onnxruntime", "--no-flip", "--det-size", "64", "--batch-size", "2", "--max-persons", "1"]


def test_fourcc_chooses_the_video_codec(tmp_path, mspn_weights, eager_detector_weights):
    """Against each container's default (.avi MJPG, .mov mp4v, which OpenCV reads back as FMP4)."""
    clip = _clip(tmp_path / "clip.avi")
    for name, fourcc in (("out.avi", "FMP4"), ("out.mov", "MJPG")):
        out = tmp_path / name
        proc = run_mspn("keypoints", clip, "-o", out, "--fourcc", fourcc, "--weights", mspn_weights,
                        "--detector-weights", eager_detector_weights, *VIDEO, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert _fourcc(out) == fourcc


def test_tracking_config_is_the_file_given(tmp_path, mspn_weights, eager_detector_weights):
    """--tracking-config replaces configs/tracking.toml: an invalid one is refused as a config error (5)
    before anything runs, and a valid one is used (the run works)."""
    from mspn_cli.config import load_tracking_config

    packaged = Path(load_tracking_config().source)
    clip = _clip(tmp_path / "clip.avi", frames=3)
    broken = tmp_path / "tracking_broken.toml"
    broken.write_text(packaged.read_text() + "\n[not_a_section]\nvalue = 1\n")
    common = ["keypoints", clip, "--jsonl", "--weights", mspn_weights, "--detector-weights", eager_detector_weights, *VIDEO]
    refused = run_mspn(*common, "--tracking-config", broken, timeout=300)
    assert_clean_error(refused, code=5)
    assert "tracking_broken.toml" in refused.stderr
    copy = tmp_path / "tracking_copy.toml"
    copy.write_text(packaged.read_text())
    proc = run_mspn(*common, "--tracking-config", copy, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [f["frame_index"] for f in frames] == [0, 1, 2]
    assert all(record["track_id"] == 1 for f in frames for record in f["instances"])


# ---------------------------------------------------------------- exit 70 with MSPN_DEBUG=1
PLANTED_BUG = '''
import mspn_cli.pose.postprocess as postprocess

def decode_heatmaps(*args, **kwargs):
    raise RuntimeError("a planted bug in the decoder")

postprocess.decode_heatmaps = decode_heatmaps
import mspn_cli.pose.estimator as estimator
estimator.decode_heatmaps = decode_heatmaps
'''


def test_internal_error_exits_70_and_mspn_debug_shows_the_traceback(tmp_path, mspn_weights):
    """A bug (here: a decoder that raises, planted by a sitecustomize module on PYTHONPATH) is
    exit 70 with one line; MSPN_DEBUG=1 adds the traceback."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "sitecustomize.py").write_text(PLANTED_BUG)
    env = {"PYTHONPATH": os.pathsep.join([str(planted), os.environ.get("PYTHONPATH", "")])}
    args = ["keypoints", GOOD, "--boxes", _boxes(tmp_path), "--weights", mspn_weights, "--json", tmp_path / "o.json", *FAST]
    quiet = run_mspn(*args, env=env, timeout=300)
    assert_clean_error(quiet, code=70)
    assert "MSPN_DEBUG=1" in quiet.stderr and "Traceback" not in quiet.stderr
    debug = run_mspn(*args, env={**env, "MSPN_DEBUG": "1"}, timeout=300)
    assert debug.returncode == 70, debug.stderr
    assert "Traceback" in debug.stderr and "a planted bug in the decoder" in debug.stderr
    assert not (tmp_path / "o.json").exists()


# ---------------------------------------------------------------- eval-coco --shard K/N, then merge-results
def test_eval_shards_merged_through_the_cli_equal_one_run(tmp_path, mspn_weights):
    keep = {785, 40083, 196141}
    sample = json.loads(ANN.read_text())
    sample["images"] = [image for image in sample["images"] if image["id"] in keep]
    sample["annotations"] = [a for a in sample["annotations"] if a["image_id"] in keep]
    ann = tmp_path / "person_keypoints_three.json"
    ann.write_text(json.dumps(sample))
    common = ["eval-coco", "--dets", DETS, "--ann", ann, "--images", COCO_SAMPLE, "--weights", mspn_weights, *FAST, "-q"]
    single = run_mspn(*common, "--results", tmp_path / "single.json", timeout=300)
    assert single.returncode == 0, single.stderr
    shards = [tmp_path / f"val.shard-{k}-of-2.json" for k in range(2)]  # the README's naming
    for k, shard in enumerate(shards):
        proc = run_mspn(*common, "--results", shard, "--shard", f"{k}/2", timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert shard.is_file()
    merged = run_mspn("merge-results", *shards, "-o", tmp_path / "merged.json", "--ann", ann,
                      "--summary", tmp_path / "summary.json", timeout=300)
    assert merged.returncode == 0, merged.stderr
    assert (tmp_path / "merged.json").read_bytes() == (tmp_path / "single.json").read_bytes()
    assert load_json(tmp_path / "summary.json")["stats"]["AP"] is not None


# ---------------------------------------------------------------- export the detector as ONNX with --batch
def test_export_detector_onnx_with_a_fixed_batch(tmp_path, eager_detector_weights):
    """From the packaged template, as on Python 3.11+, in every world: the exporter's own path
    (Python 3.10, checked against MegEngine) with --batch is tests/slow/test_graph_templates.py's."""
    import onnxruntime

    from tests.tripwire import megengine_hidden_env

    out = tmp_path / "detector.onnx"
    proc = run_mspn("export", "retinanet_res50_coco_3x_800size", "--format", "onnx", "--weights", eager_detector_weights,
                    "--batch", "2", "--input-size", "64,64", "-o", out, "-q", timeout=600,
                    env=megengine_hidden_env(MSPN_HOME=str(tmp_path / "home")))
    assert proc.returncode == 0, proc.stderr
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (only_input,) = session.get_inputs()
    assert only_input.shape[0] == 2
    outputs = session.run(None, {only_input.name: np.zeros((2, 3, 64, 64), np.float32)})
    assert all(output.shape[0] == 2 for output in outputs)


# ---------------------------------------------------------------- Python API: PosePipeline.from_settings
API_SNIPPET = '''
import json, sys
from mspn_cli.detection.result import Detections
from mspn_cli.io.sources import read_image
from mspn_cli.pipeline import PipelineItem, PosePipeline
from mspn_cli.settings import RunSettings
import numpy as np

weights, photo = sys.argv[1], sys.argv[2]
pipeline = PosePipeline.from_settings(RunSettings(weights=weights, flip=False, backend="onnxruntime"), False)
image = read_image(photo)
boxes = Detections(np.array([[280.79, 44.73, 499.49, 391.41]], np.float32), np.array([1.0], np.float32))
for key, result in pipeline.run([PipelineItem("photo", image, boxes)]):
    drawn = result.plot(image)
    print(json.dumps({"key": key, "shape": list(result.keypoints.shape), "drawn": list(drawn.shape),
                      "records": result.to_records(image_id=1)}))
'''


def test_python_api_from_settings_runs_as_the_readme_shows():
    env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"))
    from tests.conftest import _generate

    weights = _generate("mspn_4stage", "mspn_4stage_random_seed0.pkl", seed=0)
    proc = subprocess.run([sys.executable, "-c", API_SNIPPET, str(weights), str(GOOD)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [json.loads(text) for text in proc.stdout.splitlines() if text.startswith("{")]
    assert line["key"] == "photo" and line["shape"] == [1, 17, 3]
    assert line["drawn"] == list(cv2.imread(str(GOOD)).shape)
    (record,) = line["records"]
    assert record["image_id"] == 1 and len(record["keypoints"]) == 51
