"""`mspn track` run as a user would, on results files the tests write."""

from __future__ import annotations

import json

from tests.conftest import assert_clean_error, run_mspn
from tests.unit.test_tracking_offline import jsonl_text, video_lines


def hidden_and_crossing(frame_index: int):
    """Two people crossing; the second is not detected for frames 30-33."""
    people = [(100 + 8 * frame_index, 300, 200, 0.9), (740 - 8 * frame_index, 290, 185, 0.9)]
    return people if not 30 <= frame_index < 34 else people[:1]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_track_jsonl_with_smoothing_and_gap_filling(tmp_path):
    results = tmp_path / "out.jsonl"
    results.write_text(jsonl_text(video_lines(hidden_and_crossing, 60, noise=2.0)))
    tracked = tmp_path / "tracked.jsonl"
    proc = run_mspn("track", results, "-o", tracked, "--smooth", "savgol", "--fill-gaps", "10")
    assert proc.returncode == 0, proc.stderr
    assert "60 frame(s)" in proc.stderr and "2 track(s)" in proc.stderr and "4 interpolated" in proc.stderr
    lines = read_jsonl(tracked)
    assert [line["frame_index"] for line in lines] == list(range(60))
    for line in lines:
        ids = [record["track_id"] for record in line["instances"]]
        assert ids == [1, 2], (line["frame_index"], ids)
        for record in line["instances"]:
            assert record.get("interpolated", False) == (30 <= line["frame_index"] < 34 and record["track_id"] == 2)
            assert ("keypoints_raw" in record) != record.get("interpolated", False)
    again = tmp_path / "again.jsonl"
    run_mspn("track", results, "-o", again, "--smooth", "savgol", "--fill-gaps", "10", "--quiet", check=True)
    assert again.read_bytes() == tracked.read_bytes()  # same input, same bytes


def test_track_json_input(tmp_path):
    records = [r for line in video_lines(hidden_and_crossing, 40, fps=None) for r in line["instances"]]
    results = tmp_path / "out.json"
    results.write_text(json.dumps(records))
    tracked = tmp_path / "tracked.jsonl"
    proc = run_mspn("track", results, "-o", tracked, "--smooth", "oneeuro", "--track-buffer", "5", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = read_jsonl(tracked)
    assert [line["frame_index"] for line in lines] == list(range(40))
    assert all(line["file_name"] == "clip.mp4" for line in lines)
    assert [[r["track_id"] for r in line["instances"]] for line in lines] == [
        [1, 2] if not 30 <= f < 34 else [1] for f in range(40)
    ]


def test_malformed_line_exits_3_naming_the_line(tmp_path):
    results = tmp_path / "out.jsonl"
    lines = jsonl_text(video_lines(hidden_and_crossing, 5)).splitlines()
    lines[3] = lines[3][:-20]  # a line cut short, as by a crash mid-write
    results.write_text("\n".join(lines) + "\n")
    tracked = tmp_path / "tracked.jsonl"
    proc = run_mspn("track", results, "-o", tracked)
    assert_clean_error(proc, code=3)
    assert "line 4" in proc.stderr and str(results) in proc.stderr
    assert not tracked.exists()
    assert not list(tmp_path.glob(".tracked.jsonl.*"))  # no temporary file left behind


def test_refuses_to_overwrite_an_existing_file_or_the_input(tmp_path):
    results = tmp_path / "out.jsonl"
    results.write_text(jsonl_text(video_lines(hidden_and_crossing, 5)))
    tracked = tmp_path / "tracked.jsonl"
    tracked.write_text("keep me\n")
    proc = run_mspn("track", results, "-o", tracked)
    assert_clean_error(proc, code=2)  # OutputExistsError: a usage error, as elsewhere
    assert "--overwrite" in proc.stderr and tracked.read_text() == "keep me\n"

    original = results.read_bytes()
    proc = run_mspn("track", results, "-o", results, "--overwrite")
    assert_clean_error(proc, code=2)
    assert results.read_bytes() == original

    run_mspn("track", results, "-o", tracked, "--overwrite", "-q", check=True)
    assert len(read_jsonl(tracked)) == 5


def test_bad_options_and_missing_input(tmp_path):
    results = tmp_path / "out.jsonl"
    results.write_text(jsonl_text(video_lines(hidden_and_crossing, 3)))
    proc = run_mspn("track", results, "-o", tmp_path / "t.jsonl", "--smooth", "kalman")
    assert_clean_error(proc, code=2)
    assert "oneeuro" in proc.stderr
    proc = run_mspn("track", tmp_path / "missing.jsonl", "-o", tmp_path / "t.jsonl")
    assert_clean_error(proc, code=3)
    assert "not found" in proc.stderr
    bad_config = tmp_path / "tracking.toml"
    bad_config.write_text("[tracking]\nhigh_score = 2\n")
    proc = run_mspn("track", results, "-o", tmp_path / "t.jsonl", "--config", bad_config)
    assert_clean_error(proc, code=5)
