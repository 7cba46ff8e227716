"""`--precision` through the real command: refusals are one line and exit 2, before anything is read or written.

The CPU's capabilities are replaced in the child process (a no-bf16 CPU, a CPU with
OpenVINO present), so these verdicts are the same on any machine.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import DATA, assert_clean_error, run_mspn


def refusal(proc) -> str:
    """The one error line of a refused run (exit 2, no traceback)."""
    assert_clean_error(proc, 2)
    return next(line for line in proc.stderr.splitlines() if line.startswith("error:"))

IMAGE = DATA / "coco_sample" / "000000000785.jpg"
BOXES = DATA / "coco_sample" / "person_dets_sample.json"

# The real CLI in a child process, with OpenVINO "installed" on a CPU that lacks native bf16.
NO_BF16_CPU = """
import sys
import mspn_cli.runtime as runtime
from mspn_cli.runtime import openvino_backend
from mspn_cli.runtime.cpu_features import parse_cpuinfo
runtime.available_backends = lambda device="cpu": ["openvino", "onnxruntime", "megengine"]
openvino_backend.cpu_features = lambda: parse_cpuinfo("model name : AVX2-only CPU\\nflags : avx2 fma\\n")
class Core:
    def get_property(self, device, name):
        return ["FP32", "INT8"]
openvino_backend.openvino_core = lambda: Core()
from mspn_cli.cli import main
sys.argv = ["mspn", *sys.argv[1:]]
main()
"""


def test_bf16_on_a_cpu_without_it_refuses_in_one_line(tmp_path, mspn_weights):
    import os

    out = tmp_path / "out.json"
    env = dict(os.environ, MSPN_HOME=str(tmp_path / "home"), COLUMNS="300")
    for command in (["keypoints", IMAGE, "--boxes", BOXES, "--weights", mspn_weights, "--json", out],
                    ["detect", IMAGE, "-o", out]):
        proc = subprocess.run([sys.executable, "-c", NO_BF16_CPU, *map(str, command), "--precision", "bf16"],
                              capture_output=True, text=True, timeout=300, env=env)
        line = refusal(proc)
        assert "--precision bf16 cannot run here: this CPU (AVX2-only CPU) has neither AMX nor AVX512_BF16" in line
        assert not out.exists()  # refused before anything was written


def test_bf16_on_an_fp32_only_backend_refuses(tmp_path, mspn_weights):
    proc = run_mspn("keypoints", IMAGE, "--boxes", BOXES, "--weights", mspn_weights, "--backend", "onnxruntime",
                    "--precision", "bf16", "--json", tmp_path / "out.json")
    line = refusal(proc)
    assert "--precision bf16 does not run on the onnxruntime backend" in line
    assert not (tmp_path / "out.json").exists()


def test_an_unknown_precision_is_a_usage_error(tmp_path):
    proc = run_mspn("keypoints", IMAGE, "--boxes", BOXES, "--precision", "fp8", "--json", tmp_path / "out.json")
    line = refusal(proc)
    assert "--precision must be one of fp32, bf16, fp16" in line


def test_every_network_command_offers_precision():
    for command in ("keypoints", "detect", "eval-coco"):
        proc = run_mspn(command, "--help", env={"COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr
        assert "--precision" in proc.stdout, command
