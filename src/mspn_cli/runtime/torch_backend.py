"""The torch backend: the project's ONNX graphs run by PyTorch (runtime/onnx_torch.py), on CPU or CUDA.

The optional extra `pip install 'mspn-cli[torch]'`. On `--device cuda[:N]` it is the
only backend (MegEngine 1.13's wheel bundles CUDA 10.1, older than every GPU since
2020). Precision fp32 keeps TF32 off and cuDNN deterministic, so CUDA matches the
CPU within 1e-4; fp16 and bf16 convert the convolution weights once and let cuDNN pick
its fastest kernels. Each batch is one host-to-device copy from a pinned staging buffer
into channels-last memory, and one copy of the outputs back.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import numpy as np

from mspn_cli.errors import UsageError
from mspn_cli.runtime.base import Backend, optional_import, usable_cpus
from mspn_cli.runtime.devices import cuda_devices, is_cuda_device, single_device

log = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "TorchBackend", "check_torch_device", "torch_available"]

PRECISIONS = ("fp32", "fp16", "bf16")
INSTALL_HINT = "pip install 'mspn-cli[torch]'"


def _import_torch():
    torch = optional_import("torch")
    if torch is None:
        raise UsageError(f"the torch backend needs PyTorch, which is not installed: {INSTALL_HINT}")
    return torch


def check_torch_device(device: str, precision: str = "fp32") -> str:
    """The torch device string for `device` ('cpu' or 'cuda:N'); UsageError (exit 2) when it cannot run here.

    Decided before weights are read or outputs made: no PyTorch, a PyTorch without CUDA,
    no GPU, or an index past the last GPU each get one line.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    text = str(device or "cpu").strip().lower()
    if text in ("cpu", "cpu0"):
        _import_torch()
        if precision == "fp16":
            raise UsageError("--precision fp16 with the torch backend needs a GPU (--device cuda); on CPU use fp32 or bf16")
        return "cpu"
    if not is_cuda_device(text):
        raise UsageError(f"the torch backend runs on cpu or cuda[:N], not '{device}'")
    devices = cuda_devices(single_device(text))
    torch = _import_torch()
    if not torch.cuda.is_available():
        built = getattr(torch.version, "cuda", None)
        why = "this PyTorch build has no CUDA (a CPU-only wheel)" if not built else f"PyTorch (CUDA {built}) finds no usable GPU or driver"
        raise UsageError(f"--device {device}: {why}")
    count = torch.cuda.device_count()
    index = int(devices[0].split(":")[1])
    if index >= count:
        raise UsageError(f"--device {device}: no such GPU; this machine has {count} (cuda:0 to cuda:{count - 1})")
    return devices[0]


def torch_available(device: str = "cpu") -> bool:
    try:
        check_torch_device(device)
    except UsageError:
        return False
    return True


def _configure_numerics(torch, on_cuda: bool, precision: str) -> None:
    """fp32: no TF32, deterministic cuDNN (CUDA matches CPU within 1e-4, and every run is the same)."""
    if not on_cuda:
        return
    exact = precision == "fp32"
    torch.backends.cuda.matmul.allow_tf32 = not exact
    torch.backends.cudnn.allow_tf32 = not exact
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = not exact


class TorchBackend(Backend):
    """Runs an ONNX graph file (or a `GraphPlan`) in PyTorch on `device` at `precision`."""

    name = "torch"

    def __init__(self, graph, device: str = "cpu", precision: str = "fp32", threads: Optional[int] = None):
        from mspn_cli.runtime.onnx_torch import GraphPlan, OnnxTorchModule, plan_from_onnx

        self.device_name = check_torch_device(device, precision)
        torch = _import_torch()
        self.torch = torch
        self.precision = precision
        self.on_cuda = self.device_name.startswith("cuda")
        if not self.on_cuda:
            torch.set_num_threads(int(threads or usable_cpus()))
        _configure_numerics(torch, self.on_cuda, precision)
        self.graph_path: Optional[Path] = None if isinstance(graph, GraphPlan) else Path(graph)
        plan = graph if isinstance(graph, GraphPlan) else plan_from_onnx(graph)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        module = OnnxTorchModule(plan, compute_dtype=dtype).eval()
        self.device = torch.device(self.device_name)
        if self.on_cuda:
            module = module.to(self.device, memory_format=torch.channels_last)
        self.module = module
        self._staging = None  # pinned host buffer, grown to the largest batch seen

    def _to_device(self, batch: np.ndarray):
        torch = self.torch
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if not self.on_cuda:
            return host
        if self._staging is None or self._staging.numel() < host.numel():
            self._staging = torch.empty(host.numel(), dtype=torch.float32).pin_memory()
        staged = self._staging[: host.numel()].view(host.shape)
        staged.copy_(host)
        return staged.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        if self.module is None:
            raise UsageError("the torch backend was closed")
        with self.torch.inference_mode():
            outputs = self.module(self._to_device(batch))
            # .cpu() waits for the GPU, so the staging buffer is free again for the next batch
            return [output.cpu().numpy() for output in outputs]

    def close(self) -> None:
        self.module = None
        self._staging = None
        if self.on_cuda:
            self.torch.cuda.empty_cache()
