"""--device cuda where it cannot run: one line, exit 2, before any weights are read or outputs made."""

import pytest

from tests.conftest import IMAGES, run_mspn


@pytest.mark.parametrize("device", ["cuda:99", "cuda:0,1", "cuda:x"])
def test_unusable_cuda_device_is_one_line_and_exit_2(device, tmp_path):
    # cuda:99 fails on every machine: no PyTorch, a CPU-only PyTorch, or no 100th GPU
    out = tmp_path / "out.json"
    proc = run_mspn("keypoints", IMAGES / "pilots_three_people_rgba.png", "--weights", tmp_path / "absent.pkl",
                    "--device", device, "--json", out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert any(word in lines[0] for word in ("PyTorch", "CUDA", "GPU", "cuda")), lines[0]
    assert not out.exists()


def test_actor_gpus_without_ray_is_refused(tmp_path):
    proc = run_mspn("keypoints", IMAGES / "pilots_three_people_rgba.png", "--actor-gpus", "1", "--json", tmp_path / "o.json")
    assert proc.returncode == 2 and "--engine ray" in proc.stderr
