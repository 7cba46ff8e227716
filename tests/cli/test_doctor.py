"""`mspn doctor`: versions, backends, cache contents and URL checks, in JSON and as a table."""

from __future__ import annotations

import json
import os
import shutil

from tests.conftest import MEGENGINE_SKIPS, refusing_url, run_mspn
from tests.localserver import LocalWeightsServer


def _doctor_json(*args, env=None) -> dict:
    proc = run_mspn("doctor", "--json", *args, env=env, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_doctor_json_reports_versions_backends_and_empty_cache(tmp_path):
    report = _doctor_json("--offline", env={"MSPN_HOME": str(tmp_path / "home")})
    assert report["ok"] is True and report["problems"] == []
    for name in ("python", "numpy", "opencv-python", "typer", "rich", "pycocotools", "onnx", "onnxruntime"):
        assert report["versions"][name], name
    assert "onnxruntime" in report["backends"]["cpu"]
    if MEGENGINE_SKIPS:  # Python 3.11+ without MegEngine: listed as optional, CPU only
        megengine = next(row for row in report["packages"] if row["name"] == "megengine")
        assert megengine["ok"] and megengine["optional"] and megengine["version"] is None
        assert report["devices"]["gpu_count"] is None and "megengine" not in report["backends"]["cpu"]
    else:
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
    from mspn_cli.weights import sha256_file

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
        assert word in proc.stderr, word
    assert proc.stdout == ""  # tables are for people: stderr; stdout carries only --json


def test_doctor_checks_urls_and_reports_unreachable_ones_without_failing(tmp_path):
    # No test reaches the internet (tests/conftest.py): the official URLs fail at once through
    # a refusing proxy; the mirror URLs are 127.0.0.1 servers of the test's own.
    unreachable = refusing_url("/mirror/weights.pkl")
    with LocalWeightsServer() as server:
        server.files["/mirror/present.pkl"] = b"weights"
        reachable = server.url("/mirror/present.pkl")
        report = _doctor_json("--timeout", "5", "--check-url", unreachable, "--check-url", reachable,
                              env={"MSPN_HOME": str(tmp_path / "home")})
    entries = {entry["url"]: entry for entry in report["urls"]}
    assert entries[unreachable]["reachable"] is False and entries[unreachable]["reason"]
    assert entries[reachable]["reachable"] is True and entries[reachable]["status"] == 200
    official = [entry for url, entry in entries.items() if url not in (unreachable, reachable)]
    assert official and all(entry["reachable"] is False for entry in official)


def test_doctor_help_documents_every_option():
    proc = run_mspn("doctor", "--help", timeout=60)
    assert proc.returncode == 0
    for option in ("--json", "--offline", "--timeout", "--check-url"):
        assert option in proc.stdout


def test_doctor_checks_exactly_the_installed_requirements():
    """The doctor reads what pyproject.toml declares (as installed), so it cannot disagree with pip."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    from mspn_cli.diagnostics import check_packages

    applying = [Requirement(t) for t in requires("mspn-cli") if "extra ==" not in t]
    declared = {r.name for r in applying if r.marker is None or r.marker.evaluate({"extra": ""})}
    rows = {row["name"]: row for row in check_packages()}
    # MegEngine is always listed: a requirement on 3.10, optional (never a problem) on 3.11+.
    assert declared | {"python", "megengine"} == set(rows)
    assert rows["megengine"].get("optional", False) == ("megengine" not in declared)
    assert all(row["ok"] for row in rows.values()), rows


def test_doctor_reports_a_package_problem_with_its_own_exit_code(monkeypatch):
    """A missing or incompatible package is an installation problem (exit 6), not a weights one (4)."""
    from packaging.requirements import Requirement

    from mspn_cli import diagnostics

    row = diagnostics.package_row(Requirement("numpy>=99"))
    assert not row["ok"] and "does not satisfy" in row["problem"]
    row = diagnostics.package_row(Requirement("surely-not-installed-pkg-xyz>=1"))
    assert not row["ok"] and "not installed" in row["problem"]
    monkeypatch.setattr(diagnostics, "declared_requirements", lambda extras=(): [Requirement("numpy>=99")])
    from typer.testing import CliRunner

    from mspn_cli.cli import app

    result = CliRunner().invoke(app, ["doctor", "--offline", "--json"])
    assert result.exit_code == 6, result.output
    assert json.loads(result.stdout)["problems"]
