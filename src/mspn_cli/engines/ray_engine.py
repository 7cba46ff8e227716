"""The Ray engine: planned image tasks through Ray Data, one `PosePipeline` per actor.

The driver ships task rows (JSON text, one per image) with `ray.data.from_items`;
`map_batches` runs `PoseActor`, a callable class holding one detector and one
estimator, in a fixed-size `ActorPoolStrategy` pool, so each model loads once per
actor. Actors decode with the project's own reader (`io.sources.read_image`: OpenCV
BGR, with its alpha and grayscale handling), draw annotated images where they run
(the output folder is on the shared filesystem the inputs are on), and send back
result rows; a bad image comes back as a row with its error. Each actor holds one
block at a time and a free actor takes the next one, so blocks start in task order and
a slow block holds back no other. The driver turns rows into outcomes as blocks
arrive, in whatever order; it writes outputs in task order.

Weights and graphs: the driver builds the pipeline once before the actors start, which
resolves and verifies the weights and fills the graph cache under $MSPN_HOME; actors
get the driver's $MSPN_HOME and open the cached graphs (on a cluster, $MSPN_HOME must
be on a shared filesystem, or each node resolves the same URLs itself). Actors run as
many inference threads as the CPUs Ray gives them.

Ray is imported only here, only when `--engine ray` is used.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from mspn_cli.errors import MspnError, UsageError, first_line
from mspn_cli.io.result_rows import outcome_from_row, outcome_to_row
from mspn_cli.io.tasks import ImageOutcome, ImageTask
from mspn_cli.settings import RunSettings

log = logging.getLogger(__name__)

__all__ = ["RayEngine", "PoseActor", "import_ray", "INSTALL_HINT"]

INSTALL_HINT = "--engine ray needs Ray, which is not installed; install it with: pip install 'mspn-cli[ray]'"
_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_QUIET_RAY = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def import_ray():
    """The `ray` module with Ray Data, or a UsageError (exit 2) saying how to install it."""
    # Ray's tips and INFO lines stay off the user's stderr (the user may set the variable).
    for name, value in _QUIET_RAY.items():
        os.environ.setdefault(name, value)
    try:
        import ray
        import ray.data  # noqa: F401 - the extra's `data` part
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)  # Ray Data's console lines; its log file keeps everything
    return ray


def _assigned_cpus() -> Optional[int]:
    """CPUs Ray gave this actor (its `num_cpus`), not the node's count."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else None


class PoseActor:
    """One Ray Data actor: one `PosePipeline`, task rows in, result rows out."""

    def __init__(self, settings: Dict[str, Any], need_detector: bool, drawing: Dict[str, Any], workdir: Optional[str] = None,
                 pose_backend: Any = None, detector_backend: Any = None):
        from mspn_cli.pipeline import PosePipeline
        from mspn_cli.runtime.base import limit_threads

        if workdir is not None:  # relative input paths mean what they meant to the driver
            try:
                os.chdir(workdir)
            except OSError:
                raise UsageError(f"the driver's working folder {workdir} does not exist where a Ray actor runs; "
                                 "give absolute input paths on a shared filesystem") from None
        limit_threads(_assigned_cpus())
        run_settings = RunSettings.from_dict(settings).replace(progress=False)
        self.pipeline = PosePipeline.from_settings(run_settings, need_detector, pose_backend=pose_backend,
                                                   detector_backend=detector_backend)
        self.drawing = drawing

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from mspn_cli.engines.drawing import annotation_drawer
        from mspn_cli.io.outputs import ImageResultsWriter

        rows = [row for text in batch["group"] for row in json.loads(text)]
        tasks = [ImageTask.from_row(row) for row in rows]
        annotated = {row["index"]: Path(row["annotated"]) for row in rows if row.get("annotated")}
        writer = ImageResultsWriter(None, False, annotated, draw=annotation_drawer(**self.drawing))
        results: List[str] = []
        for outcome in self.pipeline.run_tasks(tasks, keep_image=lambda task: task.index in annotated):
            if outcome.error is None:
                writer.add(outcome)  # draws the annotated image, exactly as the local driver does
            results.append(json.dumps(outcome_to_row(outcome)))
        return {"rows": np.array(["[" + ", ".join(results) + "]"], dtype=object)}


class RayEngine:
    """Runs tasks on a Ray cluster: the one at `ray_address`, else (for "auto") a local one."""

    def __init__(self, settings: RunSettings, need_detector: bool, drawing: Dict[str, Any], options, pose_backend: Any = None,
                 detector_backend: Any = None):
        from mspn_cli.config import load_scale_out_config

        self.ray = import_ray()
        self.config = load_scale_out_config().ray
        self.settings = settings
        self.need_detector = need_detector
        self.drawing = dict(drawing)
        self.options = options
        self.pose_backend = pose_backend
        self.detector_backend = detector_backend
        self._owns_connection = False
        self._warm_up()
        self._connect()

    def _warm_up(self) -> None:
        """Resolve and verify the weights and fill the graph cache once, here, before any actor starts."""
        from mspn_cli.pipeline import PosePipeline

        pipeline = PosePipeline.from_settings(self.settings, self.need_detector, pose_backend=self.pose_backend,
                                              detector_backend=self.detector_backend)
        # The actors get the same settings on the same kind of node: a precision the driver's
        # backends read back (and, for bf16, checked) is the one they run; one they cannot run, they refuse.
        self.precision = pipeline.precision
        del pipeline

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (a test, a notebook) already chose the cluster
            return
        saved = {name: signal.getsignal(getattr(signal, name)) for name in _STOP_SIGNALS if hasattr(signal, name)}
        quiet = {"logging_level": logging.WARNING, "include_dashboard": False}
        try:
            address = self.options.ray_address
            if address == "auto":
                try:
                    ray.init(address="auto", **quiet)
                except ConnectionError:
                    cpus = self.config.local_cpus or _usable_cpus()
                    log.info("no running Ray cluster found; starting a local one with %d CPU(s)", cpus)
                    ray.init(num_cpus=cpus, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot connect to the Ray cluster at --ray-address {self.options.ray_address}: "
                             f"{first_line(exc)}") from None
        finally:  # Ray installs its own SIGTERM handler in the driver; ours keeps finished work
            for name, handler in saved.items():
                signal.signal(getattr(signal, name), handler)
        self._owns_connection = True

    def _actor_count(self, actor_cpus: float) -> int:
        if self.options.actors is not None:
            return self.options.actors
        resources = self.ray.cluster_resources()
        count = int(float(resources.get("CPU", 1)) // actor_cpus)
        if self.options.actor_gpus:  # as many actors as the cluster's GPUs hold, too
            count = min(count, int(float(resources.get("GPU", 0)) // self.options.actor_gpus))
        return max(1, count)

    def run(self, tasks: Sequence[ImageTask], annotated: Dict[int, Path]) -> Iterator[ImageOutcome]:
        if not tasks:
            return
        ray = self.ray
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        by_index = {task.index: task for task in tasks}
        # One dataset row = one group of task rows = one block = one actor call, so results (and
        # checkpoint lines) come back group by group; Ray Data would otherwise bundle small blocks.
        rows = [json.dumps({**task.to_row(), "annotated": _absolute(annotated.get(task.index))}) for task in tasks]
        per_group = max(self.config.images_per_block, math.ceil(len(rows) / self.config.max_blocks))
        groups = [{"group": "[" + ", ".join(rows[start:start + per_group]) + "]"} for start in range(0, len(rows), per_group)]
        dataset = ray.data.from_items(groups, override_num_blocks=len(groups))
        actor_cpus = float(self.options.actor_cpus or self.config.actor_cpus)
        relative = any(not os.path.isabs(task.path) for task in tasks)
        env = {name: os.environ[name] for name in ("MSPN_HOME", "MSPN_DEBUG") if name in os.environ}
        results = dataset.map_batches(
            PoseActor,
            batch_size=1,  # one group per call
            # One block in flight per actor. Ray Data's default queues a second block on a busy actor and
            # lets the actor run its queue out of order, so one slow block (an input on a stalled
            # filesystem, a pipe) held back a block queued behind it, even the first one, while another
            # actor sat idle. A free actor now takes the next block, in task order.
            compute=ray.data.ActorPoolStrategy(size=self._actor_count(actor_cpus), max_tasks_in_flight_per_actor=1),
            num_cpus=actor_cpus,
            # No actor restarts. Ray Data keeps the actors' constructor arguments in the object
            # store, where a restart may not find them (Ray's core worker says so in an `E` line
            # on every run when restarts are on, ray-project/ray#53727). An actor that dies fails
            # the run in one line instead, and rerunning the command resumes from the checkpoint.
            max_restarts=0,
            # Ray sets each actor's CUDA_VISIBLE_DEVICES to its own GPU(s), so --device cuda is that GPU there.
            **({"num_gpus": self.options.actor_gpus} if self.options.actor_gpus else {}),
            batch_format="numpy",
            fn_constructor_kwargs={
                "settings": self.settings.to_dict(), "need_detector": self.need_detector, "drawing": self.drawing,
                "workdir": os.getcwd() if relative else None,
                "pose_backend": self.pose_backend, "detector_backend": self.detector_backend,
            },
            runtime_env={"env_vars": env} if env else None,
        )
        try:
            # No prefetch: with it, iter_batches holds a finished block back until the next one is ready.
            for batch in results.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                for text in batch["rows"]:
                    for row in json.loads(text):
                        yield outcome_from_row(row, by_index[row["index"]])
        except KeyboardInterrupt:
            raise
        except MspnError:
            raise
        except Exception as exc:  # Ray wraps what an actor raised
            raise _user_error(exc) from None

    def close(self) -> None:
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_connection = False


def _usable_cpus() -> int:
    from mspn_cli.runtime.base import usable_cpus

    return usable_cpus()


def _absolute(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(Path(path).resolve())


def _user_error(exc: BaseException) -> MspnError:
    """The package error an actor raised (Ray wraps it), or one line saying what Ray reported."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MspnError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return MspnError(f"the Ray engine failed: {first_line(exc)}")
