"""Offline re-tracking of saved results: parsing, ids, smoothing, gap filling, determinism."""

from __future__ import annotations

import copy
import json
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest

from mspn_cli.errors import ConfigError, InputError
from mspn_cli.tracking import load_tracking_config, parse_results, plan_gap_fills, retrack
from mspn_cli.config import DEFAULT_TRACKING_CONFIG
from tests.unit.test_tracking import pose


def keypoint_record(frame_index: int, cx: float, cy: float, height: float, score: float, rng=None,
                    noise: float = 0.0) -> Dict:
    """A record as `mspn keypoints VIDEO` writes it (visibility 1, joint scores apart, det_bbox xywh)."""
    keypoints, box = pose(cx, cy, height)
    if rng is not None and noise:
        keypoints[:, :2] += rng.normal(0, noise, (17, 2))
    flat = np.concatenate([keypoints[:, :2], np.ones((17, 1))], axis=1).reshape(-1)
    return {
        "image_id": frame_index,
        "category_id": 1,
        "keypoints": [round(float(v), 3) for v in flat],
        "score": round(score * 1.5, 5),
        "det_bbox": [round(float(v), 2) for v in (box[0], box[1], box[2] - box[0], box[3] - box[1])],
        "box_score": score,
        "keypoint_scores": [1.5] * 17,
        "file_name": "clip.mp4",
        "frame_index": frame_index,
    }


def video_lines(scene: Callable[[int], Sequence[tuple]], frames: int, noise: float = 0.0, seed: int = 0,
                fps: Optional[float] = 25.0, every: int = 1) -> List[Dict]:
    """JSONL frame lines of a synthetic video; scene(f) gives (cx, cy, height, box score) per person."""
    rng = np.random.default_rng(seed)
    lines = []
    for frame_index in range(0, frames, every):
        instances = [keypoint_record(frame_index, *person, rng=rng, noise=noise) for person in scene(frame_index)]
        line = {"frame_index": frame_index, "file_name": "clip.mp4", "instances": instances}
        if fps:
            line["pts_ms"] = round(frame_index * 1000.0 / fps, 3)
            line["fps"] = fps
        lines.append(line)
    return lines


def jsonl_text(lines: List[Dict]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def crossing(frame_index: int):
    return [(100 + 8 * frame_index, 300, 200, 0.9), (740 - 8 * frame_index, 290, 185, 0.9)]


def track_ids(lines) -> List[List[Optional[int]]]:
    return [[record["track_id"] for record in line["instances"]] for line in lines]


# --------------------------------------------------------------------------- parsing


def test_jsonl_and_json_inputs_give_the_same_tracks():
    lines = video_lines(crossing, 60)
    config = load_tracking_config()
    from_jsonl, kind = parse_results(jsonl_text(lines), "r.jsonl")
    assert kind == "jsonl"
    records = [record for line in lines for record in line["instances"]]
    from_json, kind = parse_results(json.dumps(records), "r.json")
    assert kind == "json"
    out_jsonl, _ = retrack(from_jsonl, config)
    out_json, _ = retrack(from_json, config)
    assert track_ids(out_jsonl) == track_ids(out_json) == [[1, 2]] * 60


def test_frames_come_out_in_frame_order_with_every_key_kept():
    lines = video_lines(crossing, 30)
    shuffled = lines[10:] + lines[:10]
    frames, _ = parse_results(jsonl_text(shuffled), "r.jsonl")
    out, summary = retrack(frames, load_tracking_config())
    assert [line["frame_index"] for line in out] == list(range(30))
    assert summary.frames == 30 and summary.poses == 60 and summary.tracks == 2 and summary.untracked == 0
    first = out[0]["instances"][0]
    assert list(first)[:-1] == list(lines[0]["instances"][0]) and list(first)[-1] == "track_id"
    assert out[0]["pts_ms"] == lines[0]["pts_ms"] and out[0]["fps"] == 25.0
    assert "keypoints_raw" not in first and "interpolated" not in first


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "line 3: not valid JSON"),
        ("[1, 2]", "line 3: expected a JSON object"),
        ('{"instances": []}', "line 3: \"frame_index\" must be a non-negative integer"),
        ('{"frame_index": 2, "instances": {}}', "line 3: \"instances\" must be a list"),
        ('{"frame_index": 2, "instances": [{"keypoints": [1, 2], "score": 1}]}', "line 3, instance 1: \"keypoints\" must be a list of 51"),
        ('{"frame_index": 2, "instances": [{"keypoints": ' + json.dumps([1.0] * 51) + "}]}", "line 3, instance 1: no \"score\""),
        ('{"frame_index": 0, "instances": []}', "line 3: frame_index 0 already appeared on line 1"),
    ],
)
def test_malformed_lines_are_reported_with_their_line_number(bad_line, message):
    lines = video_lines(crossing, 2)
    text = jsonl_text(lines) + bad_line + "\n"
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        parse_results(text, "r.jsonl")


def test_malformed_json_record_is_named():
    records = [record for line in video_lines(crossing, 3) for record in line["instances"]]
    del records[3]["frame_index"]
    with pytest.raises(InputError, match="record 4: \"frame_index\""):
        parse_results(json.dumps(records), "r.json")
    with pytest.raises(InputError, match="not valid JSON"):
        parse_results("[{]", "r.json")
    with pytest.raises(InputError, match="holds no frames"):
        parse_results("\n\n", "r.jsonl")


def test_low_score_false_positives_get_null_track_ids():
    def scene(f):
        return [(300 + 3 * f, 300, 200, 0.9), (50 + 37 * (f % 7), 80, 100, 0.3)]

    frames, _ = parse_results(jsonl_text(video_lines(scene, 40)), "r.jsonl")
    out, summary = retrack(frames, load_tracking_config())
    assert track_ids(out) == [[1, None]] * 40
    assert summary.tracks == 1 and summary.untracked == 40


# --------------------------------------------------------------------------- gaps


def test_plan_gap_fills_only_short_gaps():
    times = np.arange(20) / 10.0
    fills = plan_gap_fills([0, 1, 4, 5, 12], times, max_gap=3)
    assert [(f.position, f.before, f.after) for f in fills] == [(2, 1, 2), (3, 1, 2)]
    assert [f.fraction for f in fills] == pytest.approx([1 / 3, 2 / 3])
    assert plan_gap_fills([0, 1, 4], times, max_gap=1) == []


def test_gap_filling_interpolates_a_hidden_person_linearly():
    def scene(f):
        people = [(200, 300, 220, 0.9)]
        if not 20 <= f < 26:
            people.append((700 - 10 * f, 310, 200, 0.9))  # hidden for 6 frames
        return people

    frames, _ = parse_results(jsonl_text(video_lines(scene, 50)), "r.jsonl")
    out, summary = retrack(frames, load_tracking_config(), fill_gaps=6)
    assert summary.interpolated == 6 and summary.tracks == 2
    for f in range(20, 26):
        added = [r for r in out[f]["instances"] if r.get("interpolated")]
        assert len(added) == 1 and added[0]["track_id"] == 2
        record = added[0]
        truth = keypoint_record(f, 700 - 10 * f, 310, 200, 0.9)
        assert record["keypoints"] == pytest.approx(truth["keypoints"], abs=1e-3)
        assert record["det_bbox"] == pytest.approx(truth["det_bbox"], abs=0.02)
        assert record["frame_index"] == f and record["image_id"] == f
        assert record["keypoint_scores"] == pytest.approx([1.5] * 17)
    too_short, summary = retrack(frames, load_tracking_config(), fill_gaps=5)
    assert summary.interpolated == 0
    assert not any(r.get("interpolated") for line in too_short for r in line["instances"])


def test_no_gap_is_filled_unless_asked():
    def scene(f):
        return [(200, 300, 220, 0.9)] + ([] if f == 10 else [(700 - 10 * f, 310, 200, 0.9)])  # one frame missing

    frames, _ = parse_results(jsonl_text(video_lines(scene, 20)), "r.jsonl")
    assert retrack(frames, load_tracking_config())[1].interpolated == 0
    assert retrack(frames, load_tracking_config(), fill_gaps=1)[1].interpolated == 1


def test_filled_scores_move_between_the_two_ends_rounded_to_six_decimals():
    def scene(f):
        people = [(200, 300, 220, 0.9)]
        if f < 20:
            people.append((700 - 10 * f, 310, 200, 0.9))
        elif f >= 26:
            people.append((700 - 10 * f, 310, 200, 0.8))
        return people

    frames, _ = parse_results(jsonl_text(video_lines(scene, 40)), "r.jsonl")
    out, summary = retrack(frames, load_tracking_config(), fill_gaps=6)
    assert summary.interpolated == 6
    for f in range(20, 26):
        (record,) = [r for r in out[f]["instances"] if r.get("interpolated")]
        fraction = (f - 19) / 7
        for key, first, last in (("box_score", 0.9, 0.8), ("score", 1.35, 1.2)):
            assert record[key] == pytest.approx(first + (last - first) * fraction, abs=1e-6)
            assert record[key] == round(record[key], 6) and record[key] != round(record[key], 5)


# --------------------------------------------------------------------------- smoothing


@pytest.mark.parametrize("method", ["oneeuro", "savgol"])
def test_smoothing_keeps_raw_coordinates_and_gets_closer_to_the_truth(method):
    scene = lambda f: [(100 + 4 * f, 300, 200, 0.9)]
    noisy = video_lines(scene, 80, noise=3.0, seed=1)
    clean = video_lines(scene, 80)
    frames, _ = parse_results(jsonl_text(noisy), "r.jsonl")
    out, _ = retrack(frames, load_tracking_config(), smooth=method)

    def error(key):
        got = np.array([line["instances"][0][key] for line in out]).reshape(80, 17, 3)[:, :, :2]
        truth = np.array([line["instances"][0]["keypoints"] for line in clean]).reshape(80, 17, 3)[:, :, :2]
        return np.sqrt(((got - truth) ** 2).mean())

    assert [line["instances"][0]["keypoints_raw"] for line in out] == [line["instances"][0]["keypoints"] for line in noisy]
    assert error("keypoints") < 0.9 * error("keypoints_raw")
    third = np.array(out[5]["instances"][0]["keypoints"]).reshape(17, 3)[:, 2]
    assert np.all(third == 1.0)  # visibility flags untouched


def test_savgol_on_a_polynomial_walk_changes_nothing():
    scene = lambda f: [(100 + 4 * f + 0.05 * f * f, 300 - 0.5 * f, 200, 0.9)]
    lines = video_lines(scene, 40, fps=None)
    frames, _ = parse_results(jsonl_text(lines), "r.jsonl")
    out, _ = retrack(frames, load_tracking_config(), smooth="savgol")
    for line in out:
        assert line["instances"][0]["keypoints"] == pytest.approx(line["instances"][0]["keypoints_raw"], abs=2e-3)


def test_same_input_gives_same_bytes():
    def scene(f):
        people = [(100 + 8 * f, 300, 200, 0.9), (740 - 8 * f, 290, 185, 0.9)]
        return people if not 30 <= f < 34 else people[:1]

    text = jsonl_text(video_lines(scene, 70, noise=4.0, seed=2))
    outputs = []
    for _ in range(2):
        frames, _ = parse_results(text, "r.jsonl")
        lines, _ = retrack(frames, load_tracking_config(), smooth="savgol", fill_gaps=5)
        outputs.append(jsonl_text(lines).encode())
    assert outputs[0] == outputs[1]


def test_retrack_leaves_its_input_untouched():
    frames, _ = parse_results(jsonl_text(video_lines(crossing, 10)), "r.jsonl")
    before = copy.deepcopy([f.line for f in frames])
    retrack(frames, load_tracking_config(), smooth="oneeuro", fill_gaps=3)
    assert [f.line for f in frames] == before


# --------------------------------------------------------------------------- config


def test_config_loads_and_checks_every_range(tmp_path):
    config = load_tracking_config()
    assert config.tracking.track_buffer == 30 and config.smoothing.savgol.window % 2 == 1
    text = DEFAULT_TRACKING_CONFIG.read_text()
    cases = {
        "high_score = 0.5": ("high_score = 1.5", "tracking.high_score must be in"),
        "track_buffer = 30": ("track_buffer = -1", "tracking.track_buffer must be in"),
        "min_cutoff = 1.0": ("min_cutoff = 0.0", "smoothing.oneeuro.min_cutoff must be in"),
        "window = 9": ("window = 8", "smoothing.savgol.window must be odd"),
        "position_noise = 0.05": ("position_noise = \"x\"", "tracking.kalman.position_noise: expected a number"),
        "low_score = 0.1": ("low_score = 0.9", "tracking.low_score .* must not exceed"),
        "order = 2": ("order = 2\nextra = 1", "smoothing.savgol: unknown key.*extra"),
    }
    for original, (replacement, message) in cases.items():
        assert original in text, original
        path = tmp_path / "tracking.toml"
        path.write_text(text.replace(original, replacement, 1))
        with pytest.raises(ConfigError, match=message):
            load_tracking_config(path)
    path.write_text(text.replace("d_cutoff = 1.0", "", 1))
    with pytest.raises(ConfigError, match="smoothing.oneeuro: missing key 'd_cutoff'"):
        load_tracking_config(path)


def test_retracking_its_own_output_starts_from_the_observations():
    def scene(f):
        return [(100 + 5 * f, 300, 200, 0.9)] if not 10 <= f < 13 else []

    frames, _ = parse_results(jsonl_text(video_lines(scene, 30, noise=2.0)), "r.jsonl")
    config = load_tracking_config()
    first, _ = retrack(frames, config, smooth="savgol", fill_gaps=5)
    again_frames, _ = parse_results(jsonl_text(first), "tracked.jsonl")
    second, summary = retrack(again_frames, config, smooth="savgol", fill_gaps=5)
    assert summary.interpolated == 3 and summary.poses == 27
    assert jsonl_text(second) == jsonl_text(first)


def test_time_base_prefers_container_timestamps():
    from mspn_cli.tracking import frame_times

    def frames_with(pts, fps):
        lines = video_lines(crossing, 3, fps=None)
        for line, stamp in zip(lines, pts):
            if stamp is not None:
                line["pts_ms"] = stamp
            if fps:
                line["fps"] = fps
        return parse_results(jsonl_text(lines), "r.jsonl")[0]

    assert frame_times(frames_with([0.0, 40.0, 120.0], 25.0), 30.0) == pytest.approx([0.0, 0.04, 0.12])
    # Timestamps that do not increase (a broken container) fall back to frame_index / fps.
    assert frame_times(frames_with([0.0, 40.0, 40.0], 25.0), 30.0) == pytest.approx([0.0, 0.04, 0.08])
    assert frame_times(frames_with([None, None, None], None), 30.0) == pytest.approx([0.0, 1 / 30, 2 / 30])
