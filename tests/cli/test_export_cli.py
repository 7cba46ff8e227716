"""`mspn export` argument checking: bad arguments are clean usage errors and write nothing."""

from __future__ import annotations

import pytest

from tests.conftest import assert_clean_error, run_mspn


@pytest.mark.parametrize(
    "args, message",
    [
        (["resnet", "--format", "onnx"], "unknown model"),
        (["mspn_4stage", "--format", "tflite"], "--format"),
        (["mspn_4stage", "--format", "onnx", "--batch", "zero"], "--batch"),
        (["retinanet_res50_coco_3x_800size", "--format", "onnx", "--input-size", "800,1333"], "multiples of 32"),
    ],
)
def test_cli_export_rejects_bad_arguments(args, message, tmp_path):
    proc = run_mspn("export", *args, "-o", tmp_path / "out.onnx")
    assert_clean_error(proc, 2)
    assert message in proc.stderr
    assert not (tmp_path / "out.onnx").exists()
