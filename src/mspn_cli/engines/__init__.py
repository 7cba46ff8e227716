"""Engines: who runs the planned image tasks. Same task rows in, same result rows out.

`local` runs them in this process (one `PosePipeline`); `ray` ships them to Ray Data
actors, each holding one `PosePipeline`, on a local or remote cluster. The driver
(`mspn keypoints`) writes outputs and checkpoints from the outcomes either engine
yields, so both give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Protocol, Sequence

from mspn_cli.errors import UsageError
from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.settings import RunSettings

__all__ = ["ENGINES", "EngineOptions", "Engine", "open_engine"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    name: str = "local"
    ray_address: str = "auto"  # "auto": a running cluster if there is one, else a local one
    actors: Optional[int] = None  # None: as many as the cluster's CPUs allow
    actor_cpus: Optional[float] = None  # None: configs/scale_out.toml
    actor_gpus: Optional[float] = None  # GPUs per actor (Ray num_gpus); with --device cuda. None: none

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got '{self.name}'")
        if self.actors is not None and self.actors < 1:
            raise UsageError("--actors must be at least 1")
        if self.actor_cpus is not None and self.actor_cpus <= 0:
            raise UsageError("--actor-cpus must be positive")
        if self.actor_gpus is not None and self.actor_gpus <= 0:
            raise UsageError("--actor-gpus must be positive")
        if self.name == "local" and (self.actors is not None or self.actor_cpus is not None or self.actor_gpus is not None):
            raise UsageError("--actors, --actor-cpus and --actor-gpus apply to --engine ray")


def check_ray_devices(options: EngineOptions, device: str) -> None:
    """Ray actors on GPUs: --device cuda with --actor-gpus, each actor seeing its own GPU(s) as cuda:0."""
    from mspn_cli.runtime.devices import is_cuda_device

    cuda = is_cuda_device(device)
    if options.actor_gpus and not cuda:
        raise UsageError("--actor-gpus needs --device cuda (the torch backend)")
    if cuda and not options.actor_gpus:
        raise UsageError("--engine ray with --device cuda needs --actor-gpus (e.g. 1: one actor per GPU)")
    if cuda and device.strip().lower() not in ("cuda", "cuda:0"):
        raise UsageError(f"--engine ray: use --device cuda, not {device}; Ray gives each actor its GPU(s) as cuda:0")


class Engine(Protocol):
    def run(self, tasks: Sequence[ImageTask], annotated: Dict[int, Path]) -> Iterator[ImageOutcome]:
        """One outcome per task, in order of completion. Annotated images in `annotated` are
        either drawn where the task ran (ray) or returned with the outcome's image (local)."""

    def close(self) -> None: ...


def open_engine(options: EngineOptions, settings: RunSettings, need_detector: bool, drawing: Dict[str, Any],
                pose_backend: Any = None, detector_backend: Any = None) -> Engine:
    """The engine `options` name; networks load here (local) or in the actors (ray).

    `drawing`: the `engines.drawing.annotation_drawer` arguments for annotated images.
    """
    if options.name == "ray":
        from mspn_cli.engines.ray_engine import RayEngine

        check_ray_devices(options, settings.device)

        return RayEngine(settings, need_detector, drawing, options, pose_backend=pose_backend, detector_backend=detector_backend)
    from mspn_cli.engines.local import LocalEngine

    return LocalEngine.from_settings(settings, need_detector, pose_backend=pose_backend, detector_backend=detector_backend)
