"""`mspn doctor`: versions, backends, cache contents and URL checks, in JSON and as a table."""

from __future__ import annotations

import json
import os
import shutil
import socket

from tests.conftest import run_mspn


def _doctor_json(*args, env=None) -> dict:
    proc = run_mspn("doctor", "--json", *args, env=env, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def _free_port() -> int:
    # Bound then closed: nothing listens there afterwards, so connecting is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_doctor_json_reports_versions_backends_and_empty_cache(tmp_path):
    report = _doctor_json("--offline", env={"MSPN_HOME": str(tmp_path / "home")})
    assert report["ok"] is True and report["problems"] == []
    for name in ("python", "numpy", "megengine", "opencv", "typer", "rich", "pycocotools"):
        assert report["versions"][name], name
    assert report["versions"]["megengine"].startswith("1.13")
    assert report["devices"]["cpu"] is True and isinstance(report["devices"]["gpu_count"], int)
    assert "megengine" in report["backends"]["cpu"]
    assert report["weights"]["home"] == str(tmp_path / "home")
    models = {entry["model"]: entry for entry in report["weights"]["models"]}
    assert set(models) == {"mspn_4stage", "retinanet_res50_coco_3x_800size"}
    assert not any(entry["present"] for entry in models.values())
    # --offline never touches the network and says so.
    assert report["urls"] and all(not entry["reachable"] for entry in report["urls"])


def test_doctor_reports_cached_weights_with_sha256(tmp_path, mspn_weights):
    from mspn_cli.config import load_pose_config
    from mspn_cli.weights.store import sha256_file

    weights_folder = tmp_path / "home" / "weights"
    weights_folder.mkdir(parents=True)
    target = weights_folder / load_pose_config().weights.filename
    try:  # a hard link is a real file with the same bytes, without copying 283 MB
        os.link(mspn_weights, target)
    except OSError:
        shutil.copyfile(mspn_weights, target)
    report = _doctor_json("--offline", env={"MSPN_HOME": str(tmp_path / "home")})
    models = {entry["model"]: entry for entry in report["weights"]["models"]}
    mspn = models["mspn_4stage"]
    assert mspn["present"] is True
    assert mspn["path"] == str(target)
    assert mspn["size_bytes"] == mspn_weights.stat().st_size
    assert mspn["sha256"] == sha256_file(mspn_weights)
    assert models["retinanet_res50_coco_3x_800size"]["present"] is False
    assert report["ok"] is True  # the random file is not the official one, but that is only reported


def test_doctor_table_offline_exits_zero(tmp_path):
    proc = run_mspn("doctor", "--offline", env={"MSPN_HOME": str(tmp_path / "home")}, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    for word in ("megengine", "numpy", "pycocotools", "mspn_4stage", "weights cache"):
        assert word in proc.stdout, word


def test_doctor_unreachable_url_is_reported_not_raised(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/mirror/weights.pkl"
    # The official URLs are checked too; a short timeout keeps the test fast without a network.
    report = _doctor_json("--timeout", "1", "--check-url", url, env={"MSPN_HOME": str(tmp_path / "home")})
    entry = next(entry for entry in report["urls"] if entry["url"] == url)
    assert entry["reachable"] is False and entry["reason"]


def test_doctor_help_documents_every_option():
    proc = run_mspn("doctor", "--help", timeout=60)
    assert proc.returncode == 0
    for option in ("--json", "--offline", "--timeout", "--check-url"):
        assert option in proc.stdout
