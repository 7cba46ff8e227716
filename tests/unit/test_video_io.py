"""Video inputs and outputs: frames with index and timestamp, streams over HTTP, VP9 files that
decode back, output planning, and per-track drawing. No network runs here."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mspn_cli.errors import InputError, OutputError, OutputExistsError, UsageError
from mspn_cli.io.sources import InputItem, expand_inputs
from mspn_cli.io.video_source import VideoSource, is_stream_spec, stream_display_name
from mspn_cli.io.writers import VideoWriterAtomic
from mspn_cli.cli.video_outputs import is_folder_target, plan_video_outputs
from mspn_cli.video import load_video_config
from mspn_cli.visualize import draw_poses, track_color
from tests.localserver import LocalWeightsServer


def make_clip(path: Path, frames: int = 8, fps: float = 10.0, size=(160, 120), fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    for index in range(frames):
        image = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.circle(image, (20 + 15 * index, size[1] // 2), 12, (0, 0, 255), -1)
        writer.write(image)
    writer.release()
    return path


def decoded(path: Path):
    capture = cv2.VideoCapture(str(path))
    shapes = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        shapes.append(frame.shape)
    capture.release()
    return shapes


def test_frames_carry_index_and_container_timestamp(tmp_path):
    clip = make_clip(tmp_path / "clip.avi")
    with VideoSource(clip) as source:
        assert (source.fps, source.width, source.height, source.frame_count, source.live) == (10.0, 160, 120, 8, False)
        frames = list(source.frames())
    assert [f.index for f in frames] == list(range(8))
    assert [f.pts_ms for f in frames] == pytest.approx([100.0 * i for i in range(8)])
    with VideoSource(clip) as source:
        every = list(source.frames(every=3))
    assert [(f.index, f.pts_ms) for f in every] == [(0, 0.0), (3, pytest.approx(300.0)), (6, pytest.approx(600.0))]
    assert every[1].image.shape == (120, 160, 3)
    with VideoSource(clip) as source:
        assert [f.index for f in source.frames(every=2, max_frames=2)] == [0, 2]


def test_unreadable_videos_are_input_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for bad, message in ((tmp_path / "missing.mp4", "file not found"), (tmp_path, "folder"), (garbage, "not a readable video")):
        with pytest.raises(InputError, match=message):
            with VideoSource(bad) as source:
                list(source.frames())


def test_stream_specs_are_recognised_and_named():
    assert is_stream_spec("cam:0") and is_stream_spec("rtsp://host/live") and is_stream_spec("https://h/x/clip.webm")
    assert not is_stream_spec("clip.mp4") and not is_stream_spec("ftp://host/x.mp4") and not is_stream_spec("cam:x")
    assert stream_display_name("cam:2") == "cam2"
    assert stream_display_name("http://127.0.0.1:8000/videos/clip.webm?t=1") == "clip.webm"
    assert stream_display_name("rtsp://camera.local/") == "camera.local"
    items = expand_inputs(["cam:0", "rtsp://camera.local/live"])
    assert [(i.stream, i.is_video, i.source, i.error) for i in items] == [
        ("cam:0", True, "cam:0", None), ("rtsp://camera.local/live", True, "rtsp://camera.local/live", None)]


def test_http_stream_is_read_frame_by_frame(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", frames=6)
    with LocalWeightsServer() as server:
        server.files["/videos/clip.avi"] = clip.read_bytes()
        with VideoSource(server.url("/videos/clip.avi")) as source:
            assert source.live and source.name == "clip.avi" and source.frame_count is None
            frames = list(source.frames(max_frames=4))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.pts_ms for f in frames] == pytest.approx([0.0, 100.0, 200.0, 300.0])


def test_unreachable_stream_is_an_input_error():
    with LocalWeightsServer() as server:
        with pytest.raises(InputError, match="cannot open the stream"):
            VideoSource(server.url("/missing.avi"))


@pytest.mark.parametrize("name", ["out.mp4", "out.webm"])
def test_vp9_output_decodes_back_with_frame_count_and_size(tmp_path, name):
    target = tmp_path / name
    writer = VideoWriterAtomic(target, 10.0, (160, 120), "VP90")
    for index in range(8):
        writer.write(np.full((120, 160, 3), 30 * index, np.uint8))
    assert not target.exists()  # renamed into place only when closed
    assert writer.close() == target
    assert decoded(target) == [(120, 160, 3)] * 8
    capture = cv2.VideoCapture(str(target))
    assert int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP90"  # FFmpeg's name for VP9
    capture.release()
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left


def test_writer_abort_empty_and_no_clobber(tmp_path):
    aborted = VideoWriterAtomic(tmp_path / "a.mp4", 10.0, (64, 48), "VP90")
    aborted.write(np.zeros((48, 64, 3), np.uint8))
    aborted.abort()
    empty = VideoWriterAtomic(tmp_path / "b.mp4", 10.0, (64, 48), "VP90")
    assert empty.close() is None
    assert os.listdir(tmp_path) == []
    existing = tmp_path / "c.avi"
    existing.write_bytes(b"keep me")
    writer = VideoWriterAtomic(existing, 10.0, (64, 48), "MJPG")
    writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(OutputError, match="already exists"):
        writer.close()
    assert existing.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["c.avi"]
    with pytest.raises(OutputError, match="4 characters"):
        VideoWriterAtomic(tmp_path / "d.mp4", 10.0, (64, 48), "VP9")


def _video(path):
    return InputItem(Path(path))


def _photo_task(index, path):
    return SimpleNamespace(index=index, path=str(path), error=None)


def test_output_planning(tmp_path):
    config = load_video_config()
    a, b = tmp_path / "in" / "a.mp4", tmp_path / "in" / "b.avi"
    plan = plan_video_outputs([], [_video(a)], tmp_path / "one.webm", None, False, None, config)
    assert plan.video_outputs == {str(a): tmp_path / "one.webm"} and plan.fourcc_for(tmp_path / "one.webm") == "VP90"
    with pytest.raises(UsageError, match=r"\.mp4, \.webm"):
        plan_video_outputs([], [_video(a)], tmp_path / "out.gif", None, False, None, config)
    with pytest.raises(UsageError, match="single video file but there are 2 inputs"):
        plan_video_outputs([], [_video(a), _video(b)], tmp_path / "out.mp4", None, False, None, config)
    plan = plan_video_outputs([], [_video(a), _video(b)], tmp_path / "vis", str(tmp_path / "js") + "/", False, "MJPG", config)
    assert plan.video_outputs == {str(a): tmp_path / "vis" / "a_pose.mp4", str(b): tmp_path / "vis" / "b_pose.mp4"}
    assert plan.video_json == {str(a): tmp_path / "js" / "a.json", str(b): tmp_path / "js" / "b.json"}
    assert plan.fourcc_for(tmp_path / "vis" / "a_pose.mp4") == "MJPG" and plan.json_file is None
    with pytest.raises(UsageError, match="would both be written"):
        plan_video_outputs([], [_video(a), _video(tmp_path / "other" / "a.mkv")], tmp_path / "vis", None, False, None, config)
    (tmp_path / "vis").mkdir()
    (tmp_path / "vis" / "a_pose.mp4").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        plan_video_outputs([], [_video(a)], tmp_path / "vis", None, False, None, config)
    photo = tmp_path / "in" / "p.jpg"
    plan = plan_video_outputs([_photo_task(0, photo)], [_video(b)], tmp_path / "vis2", str(tmp_path / "js2") + "/",
                              False, None, config)
    assert plan.photo_outputs == {0: tmp_path / "vis2" / "p_pose.jpg"} and plan.photos_json == tmp_path / "js2" / "images.json"
    plan = plan_video_outputs([], [_video(a)], None, "-", False, None, config)
    assert plan.json_file == "-" and not is_folder_target("-") and is_folder_target(str(tmp_path))
    a.parent.mkdir()
    a.write_bytes(b"")
    with pytest.raises(OutputExistsError, match="one of the inputs"):
        plan_video_outputs([], [_video(a)], a, None, True, None, config)


def _figure(x0: float) -> np.ndarray:
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0] = x0 + np.linspace(0, 40, 17)
    keypoints[:, 1] = np.linspace(20, 140, 17)
    keypoints[:, 2] = 2.0
    return keypoints


def test_each_track_keeps_one_colour_and_its_id_is_drawn():
    assert track_color(3) == track_color(3)
    assert len({track_color(i) for i in range(1, 9)}) == 8
    assert track_color(None) == track_color(0)
    image = np.zeros((160, 240, 3), np.uint8)
    keypoints = np.stack([_figure(20), _figure(140)])
    boxes = np.array([[10, 10, 80, 150], [130, 10, 200, 150]], np.float32)
    plain = draw_poses(image, keypoints, boxes)
    tracked = draw_poses(image, keypoints, boxes, track_ids=[7, 2])
    swapped = draw_poses(image, keypoints, boxes, track_ids=[2, 7])
    assert not np.array_equal(plain, tracked) and not np.array_equal(tracked, swapped)
    # The box edge of the person with id 7 is drawn in track 7's colour, wherever that person is.
    def nearest_track(pixel):  # anti-aliasing dims the 1 px edge a little
        return min((7, 2), key=lambda tid: np.abs(pixel.astype(int) - track_color(tid)).sum())

    assert nearest_track(tracked[80, 10]) == 7 and nearest_track(tracked[80, 130]) == 2
    assert nearest_track(swapped[80, 130]) == 7 and nearest_track(swapped[80, 10]) == 2
    # "#7" is drawn above the first box: the label tab there differs from an unlabelled drawing.
    unlabelled = draw_poses(image, keypoints, boxes, track_ids=[0, 0])
    assert not np.array_equal(tracked[:10, 10:60], unlabelled[:10, 10:60])


def test_radius_and_thickness_change_the_drawing():
    image = np.zeros((160, 120, 3), np.uint8)
    keypoints = _figure(30)[None]
    thin = draw_poses(image, keypoints, thickness=1, radius=1)
    thick = draw_poses(image, keypoints, thickness=9, radius=1)
    big_dots = draw_poses(image, keypoints, thickness=1, radius=6)
    painted = lambda a: int((a.sum(axis=2) > 0).sum())  # noqa: E731
    assert painted(thin) < painted(thick) and painted(thin) < painted(big_dots)
