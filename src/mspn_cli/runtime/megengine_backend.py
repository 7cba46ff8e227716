"""The reference backend: the network as a MegEngine traced graph (`jit.trace`)."""

from __future__ import annotations

from typing import List

import numpy as np

from mspn_cli._mge import gpu_count, import_megengine, megengine_installed, silenced_stderr
from mspn_cli.runtime.base import Backend, as_output_list, register_backend
from mspn_cli.errors import UsageError

FEATURE = "--backend megengine"


def normalize_device(device: str) -> str:
    """Map the CLI's cpu/gpu (or a MegEngine string like gpu0, cpu0, cpux) to MegEngine's."""
    device = (device or "cpu").strip().lower()
    if device == "cpu":
        return "cpux"  # MegEngine's default multi-threaded CPU comp node
    if device in ("gpu", "cuda"):
        return "gpu0"
    if device.startswith(("cpu", "gpu", "multithread", "xpu")):
        return device
    raise UsageError(f"unknown device '{device}'; use cpu, gpu, or a MegEngine device like gpu1")


def device_available(device: str) -> bool:
    """MegEngine is installed and has `device`. Imports MegEngine only for a GPU query, so
    `auto` passing over this backend never initialises MegEngine in an inference process."""
    if not megengine_installed():
        return False
    dev = normalize_device(device)
    if dev.startswith("gpu"):
        index = dev[3:]
        return gpu_count() > (int(index) if index.isdigit() else 0)
    return True


def use_device(device: str) -> str:
    """Make `device` MegEngine's default, so parameters and in-graph constants live there.

    Call before building a network: tensors created later inside `forward` (constants
    such as the detector's mean/std) follow the default device, and a graph mixing
    devices is rejected by MegEngine.
    """
    normalized = normalize_device(device)
    mge = import_megengine(FEATURE if normalized.startswith("cpu") else f"--backend megengine --device {device}")
    if not device_available(device):
        raise UsageError(f"device '{device}' is not available to MegEngine (no usable GPU found)")
    with silenced_stderr():
        mge.set_default_device(normalized)
    return normalized


class MegEngineBackend(Backend):
    """Runs `model` through `jit.trace(symbolic=True, capture_as_const=True)`.

    MegEngine 1.13's symbolic trace accepts new input shapes without re-tracing
    the Python code, so one traced function serves every batch size.
    """

    name = "megengine"

    def __init__(self, model, device: str = "cpu", **_options):
        self.device = use_device(device)
        self.model = model
        self.model.eval()
        with silenced_stderr():
            _move_to_device(self.model, self.device)
        from megengine.jit import trace

        # jit.trace accepts a tensor or a flat list of tensors as output; networks with
        # nested outputs (RetinaNet's per-level lists) provide `forward_flat`.
        forward = getattr(self.model, "forward_flat", self.model)

        @trace(symbolic=True, capture_as_const=True)
        def _forward(batch):
            return forward(batch)

        self._forward = _forward
        self.traced = _forward

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        mge = import_megengine(FEATURE)
        tensor = mge.tensor(np.ascontiguousarray(batch, dtype=np.float32), device=self.device)
        outputs = self._forward(tensor)
        return [np.asarray(out.numpy() if hasattr(out, "numpy") else out) for out in _flatten(outputs)]


def _move_to_device(model, device: str) -> None:
    # Parameters are created on MegEngine's default device ("xpux"); a graph mixing
    # "xpux" and an explicit "cpux" input is rejected, so every tensor moves explicitly.
    for tensor in list(model.parameters()) + list(model.buffers()):
        if str(tensor.device) != device:
            tensor._reset(tensor.to(device))


def _flatten(outputs):
    if isinstance(outputs, (list, tuple)):
        for item in outputs:
            yield from _flatten(item)
    else:
        yield outputs


register_backend("megengine", MegEngineBackend, device_available, rank=100)

__all__ = ["MegEngineBackend", "normalize_device", "device_available", "as_output_list"]
