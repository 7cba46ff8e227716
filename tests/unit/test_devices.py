"""Device strings (runtime/devices.py) and how eval-coco's workers share GPUs: no GPU or PyTorch needed."""

import pytest

from mspn_cli.engines import EngineOptions, check_ray_devices
from mspn_cli.errors import UsageError
from mspn_cli.runtime.devices import cuda_devices, is_cuda_device, single_device, worker_devices
from mspn_cli.settings import RunSettings


@pytest.mark.parametrize("text, expected", [
    ("cuda", ["cuda:0"]), ("cuda:1", ["cuda:1"]), ("CUDA:0,1", ["cuda:0", "cuda:1"]),
    ("cuda:0, cuda:3", ["cuda:0", "cuda:3"]),
])
def test_cuda_device_lists(text, expected):
    assert is_cuda_device(text)
    assert cuda_devices(text) == expected


@pytest.mark.parametrize("text", ["cuda:", "cuda:x", "cuda:-1", "cuda:0,0", "cudax"])
def test_malformed_cuda_devices_are_refused(text):
    with pytest.raises(UsageError):
        cuda_devices(text)


def test_megengine_devices_are_not_cuda():
    assert not any(is_cuda_device(name) for name in ("cpu", "gpu", "gpu1", "cpux"))


def test_one_worker_per_gpu_and_gpus_in_turn():
    assert worker_devices("cuda:0,1", 1) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:0,1", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:2", 2) == ["cuda:2", "cuda:2"]
    assert worker_devices("cpu", 4) == ["cpu"] * 4
    assert worker_devices("cpu", 1) == ["cpu"]


def test_a_single_network_refuses_a_gpu_list():
    assert single_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match="several GPUs"):
        single_device("cuda:0,1")


def test_precision_values():
    assert RunSettings().precision == "fp32"
    assert RunSettings.from_dict(RunSettings(precision="bf16").to_dict()).precision == "bf16"
    with pytest.raises(UsageError, match="--precision"):
        RunSettings(precision="int8")


def test_ray_gpu_actors_need_cuda_and_actor_gpus():
    check_ray_devices(EngineOptions("ray", actor_gpus=1), "cuda")
    check_ray_devices(EngineOptions("ray"), "cpu")
    with pytest.raises(UsageError, match="--actor-gpus"):
        check_ray_devices(EngineOptions("ray"), "cuda")
    with pytest.raises(UsageError, match="--device cuda"):
        check_ray_devices(EngineOptions("ray", actor_gpus=1), "cpu")
    with pytest.raises(UsageError, match="cuda:0"):
        check_ray_devices(EngineOptions("ray", actor_gpus=1), "cuda:1")
    with pytest.raises(UsageError, match="--engine ray"):
        EngineOptions("local", actor_gpus=1)
