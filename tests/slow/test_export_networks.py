"""`mspn export` on the full-size networks: the written ONNX and .mge graphs match MegEngine."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_clean_error, requires_lite, run_mspn

import onnx
import onnxruntime as ort

from mspn_cli.export.verify import relative_error  # noqa: E402

TOLERANCE = 1e-4


# --------------------------------------------------------------------------- the CLI


@pytest.mark.megengine  # compares with MegEngine, or writes .mge
def test_cli_export_onnx_matches_megengine(cli_export, mspn_weights):
    from mspn_cli.runtime import create_backend
    from mspn_cli.models import build_model
    from mspn_cli.weights import load_checkpoint, load_weights_into

    target, proc = cli_export("mspn_4stage", mspn_weights)
    assert "matches MegEngine" in proc.stderr
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["heatmaps"]

    network = build_model("mspn_4stage")
    load_weights_into(network, load_checkpoint(mspn_weights), str(mspn_weights))
    batch = np.random.default_rng(5).uniform(-2, 2, size=(2, 3, 256, 192)).astype(np.float32)
    expected = create_backend("megengine", network).run(batch)[0]
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": batch})
    assert actual.shape == (2, 17, 64, 48)
    assert relative_error(actual, expected) <= TOLERANCE


def test_cli_export_refuses_to_overwrite(cli_export, mspn_weights):
    target, _ = cli_export("mspn_4stage", mspn_weights)
    before = target.stat().st_mtime_ns
    proc = run_mspn("export", "mspn_4stage", "--format", "onnx", "--weights", mspn_weights, "-o", target)
    assert_clean_error(proc)
    assert "--overwrite" in proc.stderr
    assert target.stat().st_mtime_ns == before


@pytest.mark.megengine  # compares with MegEngine, or writes .mge
@requires_lite
def test_cli_export_mge_detector_runs_in_lite_at_another_size(tmp_path, detector_weights):
    from mspn_cli.runtime import create_backend
    from mspn_cli.runtime.lite_backend import load_lite_network
    from mspn_cli.models import build_model
    from mspn_cli.weights import load_checkpoint, load_weights_into

    target = tmp_path / "detector.mge"
    proc = run_mspn(
        "export", "retinanet_res50_coco_3x_800size", "--format", "mge", "--weights", detector_weights,
        "--input-size", "128,160", "-o", target,
    )
    assert proc.returncode == 0, proc.stderr
    runner = load_lite_network(target)
    assert runner.output_names == [f"logits_p{i}" for i in range(3, 8)] + [f"offsets_p{i}" for i in range(3, 8)]

    network = build_model("retinanet_res50_coco_3x_800size")
    load_weights_into(network, load_checkpoint(detector_weights), str(detector_weights))
    batch = np.random.default_rng(6).uniform(0, 255, size=(1, 3, 96, 192)).astype(np.float32)
    expected = create_backend("megengine", network).run(batch)
    actual = runner.run(batch)
    assert len(actual) == len(expected) == 10
    for got, want in zip(actual, expected):
        assert relative_error(got, want) <= TOLERANCE


@pytest.mark.megengine  # compares with MegEngine, or writes .mge
def test_cli_export_mge_where_lite_cannot_run_asks_for_no_verify(tmp_path, detector_weights, monkeypatch):
    """Where Lite's JIT fails (the probe said so), verification is refused in one line, not a hang."""
    from mspn_cli.runtime import lite_probe

    cache = lite_probe._cache_file()
    monkeypatch.setenv("MSPN_LITE_PROBE_DIR", str(tmp_path / "cache"))
    fake = lite_probe._cache_file()
    fake.parent.mkdir(parents=True)
    fake.write_text('{"runs": false, "detail": "test"}')
    assert fake != cache
    target = tmp_path / "det.mge"
    proc = run_mspn("export", "retinanet_res50_coco_3x_800size", "--format", "mge", "--weights", detector_weights,
                    "-o", target, env={"MSPN_LITE_PROBE_DIR": str(tmp_path / "cache")})
    assert_clean_error(proc, code=2)
    assert "--no-verify" in proc.stderr and not target.exists()
    proc = run_mspn("export", "retinanet_res50_coco_3x_800size", "--format", "mge", "--weights", detector_weights,
                    "-o", target, "--no-verify", "--input-size", "256,256", env={"MSPN_LITE_PROBE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert target.stat().st_size > 0
