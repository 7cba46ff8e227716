"""The README's promises on integrity, the offline recipe, output folders and --fail-fast (issue 25),
through the real `mspn` command. The resume and refusal promises are in test_resume.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

from mspn_cli.config import load_detector_config, load_pose_config
from tests.conftest import COCO_SAMPLE, assert_clean_error, load_json, refusing_url, run_mspn

DETS = COCO_SAMPLE / "person_dets_sample.json"
GOOD = ["000000000785.jpg", "000000040083.jpg"]  # both have boxes in DETS (matched by image id)
PACKAGED = Path(__file__).resolve().parents[2] / "src" / "mspn_cli" / "configs"
MSPN_CONFIG = PACKAGED / "mspn_4stage_coco_256x192.toml"
DETECTOR_CONFIG = PACKAGED / "retinanet_res50_coco_3x_800size.toml"


def _config_with(source: Path, target: Path, **weights) -> Path:
    """A copy of a packaged config with [weights] keys replaced."""
    text = source.read_text()
    for key, value in weights.items():
        text, count = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
        assert count == 1, key
    target.write_text(text)
    return target


# -- integrity: a pinned sha256 holds for whatever file a run loads ------------------------------


def test_pinned_sha256_refuses_weights_given_with_weights_path(tmp_path, mspn_weights):
    pinned = _config_with(MSPN_CONFIG, tmp_path / "pinned.toml", sha256="0" * 64)
    proc = run_mspn("keypoints", COCO_SAMPLE / GOOD[0], "--boxes", DETS, "--weights", mspn_weights,
                    "--config", pinned, "--json", tmp_path / "k.json")
    assert_clean_error(proc, 4)
    actual = hashlib.sha256(mspn_weights.read_bytes()).hexdigest()
    line = proc.stderr.strip()
    assert "\n" not in line and str(mspn_weights) in line and actual[:12] in line and "0" * 12 in line, line
    assert not (tmp_path / "k.json").exists()


def test_pinned_sha256_refuses_a_hand_placed_file(tmp_path, mspn_weights):
    home = tmp_path / "home"
    placed = home / "weights" / load_pose_config().weights.filename
    placed.parent.mkdir(parents=True)
    shutil.copy(mspn_weights, placed)
    pinned = _config_with(MSPN_CONFIG, tmp_path / "pinned.toml", sha256="f" * 64)
    proc = run_mspn("keypoints", COCO_SAMPLE / GOOD[0], "--boxes", DETS, "--config", pinned, "--json", "-",
                    env={"MSPN_HOME": str(home)})
    assert_clean_error(proc, 4)
    assert f"checksum mismatch: weights file {placed}" in proc.stderr and "f" * 12 in proc.stderr


# -- the offline recipe on a fresh home ----------------------------------------------------------


def test_weights_path_creates_the_folder_so_the_cp_recipe_works(tmp_path):
    home = tmp_path / "fresh"
    proc = run_mspn("weights", "path", "mspn_4stage", env={"MSPN_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr  # was: exit 1 and no folder
    target = Path(proc.stdout.strip())
    assert target == home / "weights" / load_pose_config().weights.filename
    assert target.parent.is_dir() and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert not target.exists() and "not there yet" in proc.stderr and "mspn weights add FILE" in proc.stderr


def test_weights_add_infers_the_model_checks_it_and_copies_it_into_the_cache(tmp_path, mspn_weights, detector_weights):
    home = tmp_path / "fresh"
    # No MegEngine needed: the keys are checked against the packaged manifests.
    hidden = tmp_path / "no_megengine"
    (hidden / "megengine").mkdir(parents=True)
    (hidden / "megengine" / "__init__.py").write_text("raise ImportError('MegEngine must not be imported here')\n")
    env = {"MSPN_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    for weights, wcfg in ((mspn_weights, load_pose_config().weights), (detector_weights, load_detector_config().weights)):
        proc = run_mspn("weights", "add", weights, env=env)
        assert proc.returncode == 0, proc.stderr
        target = home / "weights" / wcfg.filename
        assert proc.stdout.strip() == str(target)
        assert target.read_bytes() == weights.read_bytes()
        assert hashlib.sha256(weights.read_bytes()).hexdigest() in proc.stderr

    wrong = run_mspn("weights", "add", detector_weights, "--model", "mspn_4stage", env=env)
    assert_clean_error(wrong, 4)
    assert "do not fit mspn_4stage" in wrong.stderr


def test_offline_message_names_every_missing_file_and_the_command_that_fixes_it(tmp_path):
    pose = _config_with(MSPN_CONFIG, tmp_path / "pose.toml", url=refusing_url("/mspn.pkl"))
    detector = _config_with(DETECTOR_CONFIG, tmp_path / "det.toml", url=refusing_url("/det.pkl"))
    proc = run_mspn("keypoints", COCO_SAMPLE / GOOD[0], "--config", pose, "--detector-config", detector, "--json", "-",
                    env={"MSPN_HOME": str(tmp_path / "fresh")})
    assert_clean_error(proc, 4)
    for wcfg in (load_pose_config().weights, load_detector_config().weights):
        assert wcfg.filename in proc.stderr
    assert "mspn weights add FILE" in proc.stderr


# -- outputs: missing folders are created; --fail-fast stops in order -----------------------------


def test_missing_output_folders_are_created(tmp_path, mspn_weights):
    vis = tmp_path / "out" / "sub" / "vis.jpg"
    result = tmp_path / "out" / "other" / "k.json"
    proc = run_mspn("keypoints", COCO_SAMPLE / GOOD[0], "--boxes", DETS, "--weights", mspn_weights, "-o", vis,
                    "--json", result, "-q")
    assert proc.returncode == 0, proc.stderr  # was: exit 3 "folder ... does not exist"
    assert vis.is_file() and load_json(result)


def test_an_output_folder_that_cannot_be_made_is_refused_before_work(tmp_path, mspn_weights):
    (tmp_path / "afile").write_text("x")
    proc = run_mspn("keypoints", COCO_SAMPLE / GOOD[0], "--boxes", DETS, "--weights", mspn_weights,
                    "--json", tmp_path / "afile" / "k.json")
    assert_clean_error(proc, 2)
    assert "is a file, not a folder" in proc.stderr


def test_fail_fast_keeps_the_results_finished_before_the_bad_input(tmp_path, mspn_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(COCO_SAMPLE / GOOD[0], folder / "a_000000000785.jpg")
    (folder / "b_broken.jpg").write_bytes(b"not an image at all")
    shutil.copy(COCO_SAMPLE / GOOD[1], folder / "c_000000040083.jpg")
    dets = tmp_path / "dets.json"  # the boxes by file name, since the names carry a prefix
    boxes = [dict(d, file_name=f"a_{int(d['image_id']):012d}.jpg") for d in json.loads(DETS.read_text())
             if int(d["image_id"]) == 785]
    dets.write_text(json.dumps(boxes))
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", folder, "--boxes", dets, "--weights", mspn_weights, "--batch-size", "1",
                    "--json", out, "--fail-fast", "-q")
    assert_clean_error(proc, 3)
    assert "b_broken.jpg" in proc.stderr
    records = load_json(out)  # was: no out.json, and a checkpoint holding only its header
    assert records and {r["file_name"] for r in records} == {"a_000000000785.jpg"}
    checkpoint = out.with_name(out.name + ".partial.jsonl")
    rows = checkpoint.read_text().splitlines()[1:]
    assert [json.loads(row)["index"] for row in rows] == [0]

    first_bad = tmp_path / "first_bad.json"
    proc = run_mspn("keypoints", folder / "b_broken.jpg", folder / "c_000000040083.jpg", "--boxes", dets,
                    "--weights", mspn_weights, "--json", first_bad, "--fail-fast", "-q")
    assert_clean_error(proc, 3)
    assert not first_bad.exists() and not first_bad.with_name(first_bad.name + ".partial.jsonl").exists()


# -- the README and the code agree ---------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def test_max_frames_counts_per_video_as_the_readme_says(tmp_path, mspn_weights, eager_detector_weights):
    from tests.cli.test_video_cli import make_clip, networks

    assert "`--max-frames N` stops each video" in README.read_text()
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.avi", frames=5)
    make_clip(folder / "b.avi", frames=5)
    proc = run_mspn("keypoints", folder, "--json", f"{tmp_path / 'js'}/", "--max-frames", "2", "--max-persons", "1",
                    *networks(mspn_weights, eager_detector_weights))
    assert proc.returncode == 0, proc.stderr
    assert "done: 2 video(s) (4 frames)" in proc.stderr
    for name in ("a.json", "b.json"):
        assert sorted({r["frame_index"] for r in load_json(tmp_path / "js" / name)}) == [0, 1]


def test_detect_jsonl_lines_have_the_keys_the_readme_gives(tmp_path, eager_detector_weights):
    from tests.conftest import IMAGES

    documented = re.search(r"`detect` the same with its boxes under `\"(\w+)\"`", README.read_text())
    assert documented, "the README documents detect's --jsonl line"
    proc = run_mspn("detect", IMAGES / "cameraman_grayscale.png", "--jsonl", "--det-size", "128",
                    "--detector-weights", eager_detector_weights)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.splitlines()[0])
    assert list(line) == ["image_id", "file_name", "path", documented.group(1)]
