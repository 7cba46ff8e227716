"""MegEngine stays off the inference path, and is optional.

A MegEngine operation leaves its worker threads polling, which slows every other runtime
in the process (issue 19: onnxruntime's MSPN 299 -> 496 ms per person). So a normal run
on a warm graph cache (keypoints, detect, eval-coco, with --backend auto) must never import
it. tests/megengine_trap/sitecustomize.py makes an import of megengine fail loudly and
leave a record; MSPN_TEST_HIDE_MEGENGINE makes it look uninstalled, for the one-line
messages of the features that need it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import COCO_SAMPLE, assert_clean_error, run_mspn
from tests.tripwire import megengine_hidden_env, megengine_trap_env

IMAGE = COCO_SAMPLE / "000000000785.jpg"
ANN = COCO_SAMPLE / "person_keypoints_sample.json"
FAST = ["--no-flip", "--batch-size", "1"]


def _trapped(trap: Path) -> dict:
    return megengine_trap_env(trap)


@pytest.fixture(scope="module")
def boxes_785(tmp_path_factory) -> Path:
    rows = [row for row in json.loads((COCO_SAMPLE / "person_dets_sample.json").read_text()) if row["image_id"] == 785]
    path = tmp_path_factory.mktemp("boxes") / "dets_785.json"
    path.write_text(json.dumps(rows))
    return path


def test_the_trap_catches_an_import_of_megengine(tmp_path):
    """The guard can fail: a run that imports MegEngine is caught, whatever catches the error."""
    import subprocess
    import sys

    trap = tmp_path / "trap.txt"
    code = "import mspn_cli._mge as m\ntry:\n    m.import_megengine()\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **_trapped(trap)}, check=True, timeout=120)
    assert trap.read_text().startswith("import megengine")


def test_warm_keypoints_detect_and_eval_never_import_megengine(tmp_path, mspn_weights, eager_detector_weights, boxes_785):
    # Untrapped first: seal both graphs in the cache (the cold path is another test's business).
    run_mspn("keypoints", IMAGE, "--boxes", boxes_785, "--json", tmp_path / "warm.json", "--weights", mspn_weights,
             *FAST, check=True)
    run_mspn("detect", IMAGE, "-o", tmp_path / "warm_dets.json", "--detector-weights", eager_detector_weights,
             "--det-size", "256", "--max-persons", "2", check=True)

    trap = tmp_path / "trap.txt"
    runs = {
        "keypoints --boxes": ("keypoints", IMAGE, "--boxes", boxes_785, "--json", tmp_path / "k.json",
                              "--weights", mspn_weights, *FAST),
        "keypoints (detector)": ("keypoints", IMAGE, "--json", tmp_path / "k2.json", "--weights", mspn_weights,
                                 "--detector-weights", eager_detector_weights, "--det-size", "256", "--max-persons", "2", *FAST),
        "detect": ("detect", IMAGE, "-o", tmp_path / "d.json", "--detector-weights", eager_detector_weights,
                   "--det-size", "256", "--max-persons", "2"),
        "eval-coco": ("eval-coco", "--dets", boxes_785, "--ann", ANN, "--images", COCO_SAMPLE, "--weights", mspn_weights,
                      "--results", tmp_path / "r.json", *FAST),
    }
    for name, args in runs.items():
        proc = run_mspn(*args, env=_trapped(trap))
        assert proc.returncode == 0, (name, proc.stderr)
        assert not trap.exists(), f"{name} imported MegEngine:\n{trap.read_text()}"


@pytest.mark.parametrize("args, feature", [
    (("--backend", "megengine"), "--backend megengine"),
    (("--backend", "mge-lite"), "--backend mge-lite"),
    (("--device", "gpu"), "--device gpu"),
])
def test_a_feature_that_needs_megengine_says_so_in_one_line(tmp_path, boxes_785, args, feature):
    proc = run_mspn("keypoints", IMAGE, "--boxes", boxes_785, "--json", tmp_path / "k.json", *args,
                    env=megengine_hidden_env(MSPN_HOME=str(tmp_path / "home")))
    assert_clean_error(proc, code=2)
    assert f"error: {feature} needs MegEngine 1.13, which installs on CPython 3.10 only: pip install 'megengine==1.13.*'" in proc.stderr
    assert not (tmp_path / "home" / "weights").exists()  # refused before anything was fetched
    assert not (tmp_path / "k.json").exists()


def test_export_mge_needs_megengine_in_one_line(tmp_path):
    proc = run_mspn("export", "mspn_4stage", "--format", "mge", "-o", tmp_path / "m.mge",
                    env=megengine_hidden_env(MSPN_HOME=str(tmp_path / "home")))
    assert_clean_error(proc, code=2)
    assert "error: export --format mge needs MegEngine 1.13" in proc.stderr


def test_weights_verify_needs_no_megengine(tmp_path, mspn_weights):
    proc = run_mspn("weights", "verify", mspn_weights, "--model", "mspn_4stage", "--json",
                    env=megengine_hidden_env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["fits"] is True


def test_doctor_without_megengine_lists_it_as_optional_or_missing(tmp_path):
    import sys

    proc = run_mspn("doctor", "--offline", "--json",
                    env=megengine_hidden_env(MSPN_HOME=str(tmp_path / "home")))
    report = json.loads(proc.stdout)
    assert "megengine" not in report["backends"]["cpu"] and "mge-lite" not in report["backends"]["cpu"]
    assert "onnxruntime" in report["backends"]["cpu"]
    assert report["devices"]["gpu_count"] is None and "MegEngine" in report["devices"]["note"]
    row = next(row for row in report["packages"] if row["name"] == "megengine")
    if sys.version_info[:2] >= (3, 11):  # optional there: absent is fine
        assert proc.returncode == 0 and row["ok"] and row.get("optional") and report["ok"]
    else:  # a dependency on 3.10: absent is an installation problem
        assert proc.returncode == 6 and not row["ok"]
