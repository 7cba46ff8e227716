"""The small interface every inference backend implements."""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from mspn_cli.errors import UsageError, first_line

log = logging.getLogger(__name__)


class Backend:
    """Runs one network on a float32 NCHW batch and returns its outputs as numpy arrays.

    `run(batch)` returns a list of arrays (one per network output, in the network's
    output order). Implementations must accept any batch size without re-tracing
    or re-compiling per call beyond a small, bounded cache.
    """

    name = "abstract"

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release native resources; the backend is unusable afterwards."""


# name -> (is_available(device) -> bool, factory(model, device, **options) -> Backend)
_FACTORIES: Dict[str, Callable[..., Backend]] = {}
_AVAILABLE: Dict[str, Callable[[str], bool]] = {}
# Lower rank = faster: `auto` picks the first one available on the device.
_RANKS: Dict[str, int] = {}
_PREFERENCE: List[str] = []


def register_backend(name: str, factory: Callable[..., Backend], available: Callable[[str], bool], rank: int) -> None:
    _FACTORIES[name] = factory
    _AVAILABLE[name] = available
    _RANKS[name] = rank
    _PREFERENCE[:] = sorted(_RANKS, key=lambda key: (_RANKS[key], key))


def _load_builtin_backends() -> None:
    # Imported for their `register_backend` side effect; optional ones may be absent.
    import importlib

    for module in (
        "mspn_cli.runtime.megengine_backend",
        "mspn_cli.runtime.lite_backend",
        "mspn_cli.runtime.onnxruntime_backend",
        "mspn_cli.runtime.torch_network",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def available_backends(device: str = "cpu") -> List[str]:
    _load_builtin_backends()
    return [name for name in _PREFERENCE if _AVAILABLE[name](device)]


def create_backend(name: str, model, device: str = "cpu", **options) -> Backend:
    """Create backend `name` ("auto" = fastest available) for a MegEngine `model` with loaded weights.

    With "auto", a backend that fails to start (its graph does not export, its runtime
    rejects the graph) is skipped with a warning for the next one; the megengine
    reference comes last and runs any network. A backend named explicitly fails loudly.
    """
    _load_builtin_backends()
    if name != "auto":
        if name not in _FACTORIES:
            raise UsageError(f"unknown backend '{name}'; choose from auto, {', '.join(_PREFERENCE)}")
        if not _AVAILABLE[name](device):
            raise UsageError(f"backend '{name}' is not available on device '{device}'")
        return _FACTORIES[name](model, device=device, **options)

    # Availability is asked lazily, in preference order: probing a later backend (the Lite
    # probe runs a child process) costs time that is wasted when an earlier one starts.
    failed: Optional[Tuple[str, Exception]] = None
    for candidate in _PREFERENCE:
        if not _AVAILABLE[candidate](device):
            continue
        if failed is not None:
            log.warning("backend '%s' could not start (%s); falling back to '%s'", failed[0], first_line(failed[1]), candidate)
        try:
            return _FACTORIES[candidate](model, device=device, **options)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # onnxruntime and MegEngine raise their own error types
            failed = (candidate, exc)
    if failed is None:
        raise UsageError(f"no inference backend is available on device '{device}'")
    raise failed[1]


def as_output_list(outputs) -> List[np.ndarray]:
    if isinstance(outputs, (list, tuple)):
        flat: List[np.ndarray] = []
        for item in outputs:
            flat.extend(as_output_list(item))
        return flat
    return [np.asarray(outputs)]


_thread_limit: Optional[int] = None


def limit_threads(count: Optional[int]) -> None:
    """Cap the threads of backends created from now on (None: no cap).

    A Ray actor given C CPUs of a 64-core node runs with the node's full affinity mask;
    it calls this with C so its onnxruntime sessions use C threads.
    """
    global _thread_limit
    _thread_limit = None if count is None else max(1, int(count))


def usable_cpus() -> int:
    """CPUs this process may run on (a cluster job given 4 of 64 cores gets 4), at least 1."""
    import os

    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # platforms without affinity masks
        cpus = 1
    return min(cpus, _thread_limit) if _thread_limit else cpus


def optional_import(name: str) -> Optional[object]:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None
