"""Device strings, read without importing a framework: cpu, gpu/gpuN (MegEngine), cuda/cuda:N (PyTorch).

`cuda:0,1` (or `cuda:0,cuda:1`) names several GPUs of one machine: commands that can
split their work (eval-coco's workers) run one process per GPU; a network itself
always runs on one device.
"""

from __future__ import annotations

from typing import List

from mspn_cli.errors import UsageError

__all__ = ["cuda_devices", "is_cuda_device", "single_device"]


def is_cuda_device(device: str) -> bool:
    """True for cuda, cuda:N and lists of them: devices only the torch backend serves."""
    return str(device or "").strip().lower().startswith("cuda")


def cuda_devices(device: str) -> List[str]:
    """'cuda' -> ['cuda:0']; 'cuda:1' -> ['cuda:1']; 'cuda:0,1' or 'cuda:0,cuda:1' -> ['cuda:0', 'cuda:1']."""
    text = str(device).strip().lower()
    if text == "cuda":
        return ["cuda:0"]
    if not text.startswith("cuda:"):
        raise UsageError(f"unknown device '{device}'; use cpu, gpu[N] (MegEngine), cuda or cuda:N[,M...] (PyTorch)")
    devices: List[str] = []
    for part in text[len("cuda:"):].split(","):
        index = part.strip()
        index = index[len("cuda:"):] if index.startswith("cuda:") else index
        if not index.isdigit():
            raise UsageError(f"unknown device '{device}'; CUDA devices are cuda, cuda:N or cuda:N,M,... (N a GPU index)")
        name = f"cuda:{int(index)}"
        if name in devices:
            raise UsageError(f"--device {device} names {name} twice")
        devices.append(name)
    return devices


def single_device(device: str) -> str:
    """`device` itself, refused when it names several GPUs (this command runs on one)."""
    if is_cuda_device(device) and len(cuda_devices(device)) > 1:
        raise UsageError(
            f"--device {device} names several GPUs; this command runs on one (eval-coco runs one worker per GPU; "
            "keypoints over several GPUs: one `--shard K/N --device cuda:K` process each, or --engine ray --actor-gpus)"
        )
    return device


def worker_devices(device: str, workers: int) -> List[str]:
    """The device of each of `workers` local worker processes: GPUs of a list in turn, else `device` for all.

    `cuda:0,1` with 1 worker -> one worker per GPU; with 4 workers -> cuda:0, cuda:1, cuda:0, cuda:1.
    """
    devices = cuda_devices(device) if is_cuda_device(device) else [device]
    count = workers if workers > 1 else len(devices)
    return [devices[k % len(devices)] for k in range(count)]
