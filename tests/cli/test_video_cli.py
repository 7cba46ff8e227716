"""`mspn keypoints` on videos, as a user runs it: many videos and photos in one run, a live HTTP
stream, refused outputs, and SIGTERM in the middle of a video.

Plumbing only: the detector is the constant-head one (a person at every anchor, score 1,
whatever the image), so how many persons a key frame has and that they are tracked follow
from --max-persons, not from a random network crossing a threshold. Nothing asserted here
depends on the random MSPN's keypoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import IMAGES, WEIGHTS_CACHE, assert_clean_error, load_json, run_mspn
from tests.localserver import LocalWeightsServer

FAST = ["--backend", "onnxruntime", "--no-flip", "--det-size", "128", "--batch-size", "2"]


def make_clip(path, frames=8, fps=10.0, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    photo = cv2.resize(cv2.imread(str(IMAGES / "pilots_three_people_rgba.png"), cv2.IMREAD_COLOR), (size[0] + 40, size[1] + 30))
    for index in range(frames):
        offset = index % 30
        writer.write(np.ascontiguousarray(photo[offset: offset + size[1], offset: offset + size[0]]))
    writer.release()
    return path


def frame_count_and_size(path):
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


def networks(mspn_weights, eager_detector_weights):
    return ["--weights", mspn_weights, "--detector-weights", eager_detector_weights, *FAST]


def test_two_videos_and_a_photo_in_one_run(tmp_path, mspn_weights, eager_detector_weights):
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_clip(folder / "a.avi")
    make_clip(folder / "b.mkv", frames=6)
    cv2.imwrite(str(folder / "p.jpg"), cv2.imread(str(IMAGES / "cameraman_grayscale.png")))
    vis, js = tmp_path / "vis", tmp_path / "js"
    proc = run_mspn("keypoints", folder, "-o", vis, "--json", f"{js}/", "--jsonl", "--det-every", "4",
                    "--smooth", "oneeuro", "--max-persons", "2", *networks(mspn_weights, eager_detector_weights))
    assert proc.returncode == 0, proc.stderr
    assert "done: 2 video(s) (14 frames), 1 image(s)" in proc.stderr

    assert frame_count_and_size(vis / "a_pose.mp4") == (8, (120, 160))
    assert frame_count_and_size(vis / "b_pose.mp4") == (6, (120, 160))
    assert cv2.imread(str(vis / "p_pose.jpg")) is not None
    assert sorted(os.listdir(js)) == ["a.json", "b.json", "images.json"]
    assert not [p for d in (vis, js) for p in os.listdir(d) if p.startswith(".")]  # no temporary files

    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["file_name"] == "p.jpg" and "frame_index" not in lines[0]  # photos first, as photos
    video_lines = lines[1:]
    assert [(l["file_name"], l["frame_index"]) for l in video_lines] == [("a.avi", i) for i in range(8)] + [("b.mkv", i) for i in range(6)]
    for line in video_lines:
        assert list(line) == ["frame_index", "pts_ms", "fps", "file_name", "path", "instances"]
        assert line["fps"] == pytest.approx(10.0) and line["pts_ms"] == pytest.approx(100.0 * line["frame_index"])
        for record in line["instances"]:
            assert record["frame_index"] == line["frame_index"] and record["pts_ms"] == line["pts_ms"]
            assert "track_id" in record and "keypoints_raw" in record
    # Key frames (0 and 4) have the detector's two persons, each a new track in each video.
    for name in ("a.avi", "b.mkv"):
        first = next(l for l in video_lines if l["file_name"] == name)
        assert sorted(r["track_id"] for r in first["instances"]) == [1, 2]
        fourth = next(l for l in video_lines if l["file_name"] == name and l["frame_index"] == 4)
        assert len(fourth["instances"]) == 2 and all(isinstance(r["track_id"], int) for r in fourth["instances"])
    records_a = load_json(js / "a.json")
    assert records_a == [r for l in video_lines if l["file_name"] == "a.avi" for r in l["instances"]]


def test_http_stream_ends_at_max_frames_and_bad_outputs_are_refused(tmp_path, mspn_weights, eager_detector_weights):
    clip = make_clip(tmp_path / "clip.avi", frames=8)
    with LocalWeightsServer() as server:
        server.files["/live/clip.avi"] = clip.read_bytes()
        url = server.url("/live/clip.avi")
        proc = run_mspn("keypoints", url, "--jsonl", "--max-frames", "3", "--no-track", "--max-persons", "1",
                        *networks(mspn_weights, eager_detector_weights))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [l["frame_index"] for l in lines] == [0, 1, 2]
    assert all(l["path"] == url and l["file_name"] == "clip.avi" for l in lines)
    assert all(len(l["instances"]) == 1 and "track_id" not in l["instances"][0] for l in lines)

    for output, message in (("out.gif", ".mp4, .webm"), ("out.txt", ".mp4, .webm")):
        proc = run_mspn("keypoints", clip, "-o", tmp_path / output, *networks(mspn_weights, eager_detector_weights))
        assert_clean_error(proc, code=2)
        assert message in proc.stderr and not (tmp_path / output).exists()
    proc = run_mspn("keypoints", clip, "--smooth", "savgol", *networks(mspn_weights, eager_detector_weights))
    assert_clean_error(proc, code=2)
    assert "mspn track" in proc.stderr


def test_sigterm_keeps_every_finished_frame(tmp_path, mspn_weights, eager_detector_weights):
    clip = make_clip(tmp_path / "long.avi", frames=400, size=(96, 72))
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    env = dict(os.environ, MSPN_HOME=str(WEIGHTS_CACHE / "home"))
    child = subprocess.Popen(
        [sys.executable, "-m", "mspn_cli", "keypoints", str(clip), "-o", str(out), "--json", str(js), "--jsonl",
         "--max-persons", "1", *map(str, networks(mspn_weights, eager_detector_weights))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        first = child.stdout.readline()  # the child says a frame is finished: now stop it
        assert json.loads(first)["frame_index"] == 0
        child.send_signal(signal.SIGTERM)
        rest, stderr = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    printed = [json.loads(line) for line in (first + rest).splitlines()]
    finished = len(printed)
    assert 1 <= finished < 400
    assert [l["frame_index"] for l in printed] == list(range(finished))
    records = load_json(js)
    assert sorted({r["frame_index"] for r in records}) == list(range(finished))  # every finished frame, in the JSON
    assert frame_count_and_size(out) == (finished, (72, 96))  # and in the video, closed and renamed into place
    assert sorted(os.listdir(tmp_path)) == ["long.avi", "out.json", "out.mp4"]
