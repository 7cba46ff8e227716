"""The catalogue of options: each is declared here once and means the same in every command.

Commands take these as parameter defaults and turn the network-related ones into one
`RunSettings` with `run_settings(...)`; nothing below the CLI sees an option value
other than through that object.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import typer

from mspn_cli.errors import UsageError
from mspn_cli.settings import RunSettings


def parse_det_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'800' -> (800, 1333 scaled); '512,853' -> (512, 853). Range checked by RunSettings."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise UsageError(f"--det-size must be SHORT or SHORT,MAX in pixels, got '{text}'") from None
    if len(values) == 1:
        values = [values[0], int(round(values[0] * 1333 / 800))]
    if len(values) != 2:
        raise UsageError(f"--det-size must be SHORT or SHORT,MAX in pixels, got '{text}'")
    return values[0], values[1]


# -- networks (become RunSettings) ---------------------------------------------
WEIGHTS = typer.Option(
    None, "--weights", help="MSPN weights: a path, a file:// or http(s):// URL. Default: the official file, downloaded once to $MSPN_HOME."
)
CONFIG = typer.Option(None, "--config", help="MSPN config TOML. Default: the packaged configs/mspn_4stage_coco_256x192.toml.")
DETECTOR_WEIGHTS = typer.Option(
    None, "--detector-weights", help="RetinaNet weights: a path or URL. Default: the official file, downloaded once."
)
DETECTOR_CONFIG = typer.Option(
    None, "--detector-config", help="RetinaNet config TOML. Default: configs/retinanet_res50_coco_3x_800size.toml."
)
DET_SIZE = typer.Option(
    None, "--det-size", help="Detector input size SHORT[,MAX] in pixels (default 800,1333). Smaller is faster, e.g. 512."
)
DEVICE = typer.Option(
    "cpu", "--device",
    help="cpu; cuda or cuda:N (an NVIDIA GPU through PyTorch: pip install 'mspn-cli[torch]'; eval-coco takes cuda:0,1,... "
    "for one worker per GPU); gpu or gpuN (MegEngine 1.13, CUDA 10.1: GPUs before 2020).",
)
BACKEND = typer.Option(
    "auto", "--backend", help="Inference backend: auto (fastest available; torch on cuda), megengine, mge-lite, onnxruntime or torch."
)
PRECISION = typer.Option(
    "fp32", "--precision", metavar="fp32|bf16|fp16",
    help="Arithmetic of both networks. fp32 reproduces the official results. bf16: several times faster on CPUs with AMX or "
    "AVX512_BF16, checked against fp32 on first use (refused where the CPU lacks it or the check fails); on a GPU "
    "(--device cuda) fp16 and bf16 run in PyTorch. fp16: GPUs only.",
)
BATCH_SIZE = typer.Option(None, "--batch-size", min=1, help="Persons per forward pass, across images (default from config: 8; x2 crops with flip).")
FLIP = typer.Option(None, "--flip/--no-flip", help="Flip test: average with the mirrored crop (default from config: on).")
BOX_THR = typer.Option(
    None, "--box-thr", min=0.0, max=1.0,
    help="Minimum person score, 0 to 1. Detected boxes: default 0.3 (0.05 keeps all the official detector keeps). Given --boxes: all are used unless set.",
)
MAX_PERSONS = typer.Option(None, "--max-persons", min=1, help="Keep at most this many persons per image, highest scores first (default: all).")

# -- inputs ----------------------------------------------------------------------
BOXES = typer.Option(
    None, "--boxes",
    help="Person boxes in COCO detection-results format (image_id or file_name, bbox [x,y,w,h], score). Without it, RetinaNet finds the persons.",
)
RECURSIVE = typer.Option(False, "--recursive", "-r", help="Look for images in sub-folders of folder inputs too.")
EVERY = typer.Option(1, "--every", min=1, help="Video: process every N-th frame.")
# -- video ---------------------------------------------------------------------
TRACK = typer.Option(True, "--track/--no-track", help="Video: give every person a track_id, stable across frames (online tracker).")
TRACK_BUFFER = typer.Option(
    None, "--track-buffer", min=0, metavar="N",
    help="Video: frames a lost track is kept for re-matching where its motion predicts (default from configs/tracking.toml: 30).",
    show_default=False,
)
SMOOTH_ONLINE = typer.Option(
    "none", "--smooth", metavar="none|oneeuro",
    help="Video: One-Euro filter on each tracked person's keypoints (online); records keep the raw ones as keypoints_raw.",
)
DET_EVERY = typer.Option(
    None, "--det-every", min=1, metavar="N",
    help="Video: run the detector on every N-th processed frame; in between, each tracked person's box comes from its last pose (default 1).",
    show_default=False,
)
MAX_FRAMES = typer.Option(None, "--max-frames", min=1, metavar="N", help="Video and live sources: stop after N processed frames per video.")
FOURCC = typer.Option(
    None, "--fourcc", metavar="CODE",
    help="Video output codec (4 characters). Default by container: .mp4/.webm/.mkv VP9 (VP90, plays in browsers), .avi MJPG, .mov mp4v.",
    show_default=False,
)
TRACKING_CONFIG = typer.Option(None, "--tracking-config", help="Tracking and smoothing config TOML (default: the packaged configs/tracking.toml).", show_default=False)
RADIUS = typer.Option(None, "--radius", min=0.5, metavar="PX", help="Joint dot radius in pixels for drawings (default: sized to each person).", show_default=False)
THICKNESS = typer.Option(None, "--thickness", min=0.5, metavar="PX", help="Limb width in pixels for drawings (default: sized to each person).", show_default=False)
FAIL_FAST = typer.Option(False, "--fail-fast", help="Stop at the first bad input instead of reporting it at the end.")
ALLOW_TRUNCATED = typer.Option(
    False, "--allow-truncated",
    help="Use truncated images (partial downloads) as they decode, missing rows filled in, instead of reporting them as bad inputs.",
)
ANN = typer.Option(
    None, "--ann",
    help="COCO person-keypoints annotation file to evaluate against (eval-coco: default "
    "COCO_ROOT/annotations/person_keypoints_val2017.json; merge-results: without it, merge only).",
)

# -- outputs ---------------------------------------------------------------------
JSON_OUT = typer.Option(None, "--json", help="Write COCO results to this JSON file ('-' for stdout).")
JSONL = typer.Option(False, "--jsonl", help="Stream one JSON line per image (or frame) to stdout as each finishes.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing output files (an input is never replaced).")
LABELS = typer.Option(
    None, "--labels", metavar="OUT.json",
    help="Also write the predictions as a COCO keypoint dataset (images, categories, annotations with visibility "
    "2 where a joint's confidence reaches --kpt-thr, else 0) that CVAT, FiftyOne or pycocotools import as labels.",
    show_default=False,
)
CSV_OUT = typer.Option(
    None, "--csv", metavar="OUT.csv",
    help="Also write one CSV row per person (image, box, score, x/y/confidence of each named joint), streamed as images finish.",
    show_default=False,
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or summary; errors only.")
SUMMARY = typer.Option(None, "--summary", help="Also write the 10 stats, settings and counts to this JSON file. Default: none.")
KPT_THR = typer.Option(
    0.3, "--kpt-thr", min=0.0, max=1.0,
    help="Draw a joint when its confidence (heatmap peak / 255, 0 to 1) is above this.",
)

# -- scale-out: resume, shards, engines --------------------------------------------
RESUME = typer.Option(
    True, "--resume/--no-resume",
    help="With --json OUT (else --labels or --csv OUT), finished images are kept in OUT.partial.jsonl; rerunning the same command continues "
    "from it (a checkpoint of other settings is refused). --no-resume starts over.",
)
SHARD = typer.Option(
    None, "--shard",
    help="Run only shard K of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/8): the i-th input goes to shard i % N. "
    "Writes a shard file to --json for `mspn merge-results`. Default: all inputs.",
)
ENGINE = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actors; needs pip install 'mspn-cli[ray]').")
RAY_ADDRESS = typer.Option(
    "auto", "--ray-address", help="--engine ray: the cluster to use; 'auto' = a running cluster if there is one, else a local one."
)
ACTORS = typer.Option(None, "--actors", min=1, help="--engine ray: actors (each loads the networks once). Default: cluster CPUs / --actor-cpus.")
ACTOR_CPUS = typer.Option(
    None, "--actor-cpus", min=0.01, help="--engine ray: CPUs per actor, which are its inference threads (default 2)."
)

ACTOR_GPUS = typer.Option(
    None, "--actor-gpus", min=0.01,
    help="--engine ray with --device cuda: GPUs per actor (Ray num_gpus; 1 = one actor per GPU, 0.5 = two share one).",
)


def run_settings(
    *, weights: Optional[str] = None, config: Optional[Path] = None, detector_weights: Optional[str] = None,
    detector_config: Optional[Path] = None, det_size: Optional[str] = None, device: str = "cpu",
    backend: str = "auto", precision: str = "fp32", flip: Optional[bool] = None, batch_size: Optional[int] = None,
    box_thr: Optional[float] = None, max_persons: Optional[int] = None, quiet: bool = False,
) -> RunSettings:
    """The options of a command, as the one settings object the library takes."""
    return RunSettings(
        weights=weights, config=optional_path(config), detector_weights=detector_weights,
        detector_config=optional_path(detector_config), det_size=parse_det_size(det_size), device=device,
        backend=backend, precision=str(precision).lower(), flip=flip, batch_size=batch_size, box_thr=box_thr,
        max_persons=max_persons, progress=not quiet,
    )


# The options that become RunSettings, by group: a command names the groups it runs and
# receives one `settings` argument instead of the individual values.
SETTINGS_OPTIONS = {
    "pose": (("weights", Optional[str], WEIGHTS), ("config", Optional[Path], CONFIG),
             ("flip", Optional[bool], FLIP), ("batch_size", Optional[int], BATCH_SIZE)),
    "detector": (("detector_weights", Optional[str], DETECTOR_WEIGHTS),
                 ("detector_config", Optional[Path], DETECTOR_CONFIG), ("det_size", Optional[str], DET_SIZE)),
    "persons": (("box_thr", Optional[float], BOX_THR), ("max_persons", Optional[int], MAX_PERSONS)),
    "runtime": (("device", str, DEVICE), ("backend", str, BACKEND), ("precision", str, PRECISION)),
}


ENGINE_OPTIONS = (("engine", str, ENGINE), ("ray_address", str, RAY_ADDRESS),
                  ("actors", Optional[int], ACTORS), ("actor_cpus", Optional[float], ACTOR_CPUS),
                  ("actor_gpus", Optional[float], ACTOR_GPUS))


def _resolved(parameter: inspect.Parameter, command: Callable[..., Any]) -> inspect.Parameter:
    """The parameter with its string annotation evaluated in the command's module (kept as text if it cannot be)."""
    if not isinstance(parameter.annotation, str):
        return parameter
    try:
        return parameter.replace(annotation=eval(parameter.annotation, getattr(command, "__globals__", {})))  # noqa: S307
    except NameError:  # a type imported only for checkers: the layer that fills this parameter removes it
        return parameter


def _inject(entries, target: str, build: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options `entries` to a command's signature and call it with `target=build(values)`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [_resolved(p, command) for p in signature.parameters.values() if p.name != target]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
                 for name, kind, default in entries]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name, _, _ in entries}
            return command(*args, **{target: build(values, kwargs)}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's
        return wrapper

    return decorate


def with_settings(*groups: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options of `groups` (plus runtime) and call it with `settings=RunSettings`.

    The command declares `settings` and `quiet`; the options themselves are declared once,
    above, and appear in `--help` after the command's own.
    """
    chosen = [entry for group in (*groups, "runtime") for entry in SETTINGS_OPTIONS[group]]
    return _inject(chosen, "settings", lambda values, others: run_settings(**values, quiet=others.get("quiet", False)))


def with_engine_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command --engine, --ray-address, --actors, --actor-cpus as one `engine_options` argument."""

    def build(values, _others):
        from mspn_cli.engines import EngineOptions

        return EngineOptions(values["engine"], values["ray_address"], values["actors"], values["actor_cpus"],
                             values["actor_gpus"])

    return _inject(ENGINE_OPTIONS, "engine_options", build)(command)


def optional_path(value: Optional[Path]) -> Optional[str]:
    return None if value is None else str(value)


# -- --help panels ------------------------------------------------------------------
# Every option of a command is listed under one heading in --help (cli/help_panels.py).
# Keyed by option name, so an option declared anywhere (a command's own -o, a new option)
# joins a panel by being named here; the networks' options (SETTINGS_OPTIONS) need no entry.
PANEL_INPUTS_OUTPUTS = "Inputs and outputs"
PANEL_NETWORKS = "Networks"
PANEL_VIDEO = "Video"
PANEL_SCALE_OUT = "Scale-out"
PANEL_OTHER = "Other options"
HELP_PANELS = {
    PANEL_INPUTS_OUTPUTS: ("--boxes", "--recursive", "--fail-fast", "--allow-truncated", "--ann", "--dets", "--images",
                           "--output", "--json", "--jsonl", "--vis", "--results", "--overwrite", "--quiet", "--summary",
                           "--kpt-thr", "--radius", "--thickness", "--format", "--input-size", "--batch", "--verify",
                           "--labels", "--csv", "--coco-root", "--keypoints", "--image-id", "--no-boxes"),
    PANEL_NETWORKS: ("--model",),
    PANEL_VIDEO: ("--every", "--track", "--track-buffer", "--smooth", "--det-every", "--max-frames", "--fourcc",
                  "--tracking-config", "--fill-gaps"),
    PANEL_SCALE_OUT: ("--resume", "--shard", "--workers", "--engine", "--ray-address", "--actors", "--actor-cpus",
                      "--actor-gpus"),
}
PANEL_ORDER = (PANEL_INPUTS_OUTPUTS, PANEL_NETWORKS, PANEL_VIDEO, PANEL_SCALE_OUT, PANEL_OTHER)
_NETWORK_PARAMETERS = {name for group in SETTINGS_OPTIONS.values() for name, _, _ in group}


def help_panel(parameter_name: str, option_names) -> str:
    """The --help heading of an option, by its names (e.g. ('-o', '--output'))."""
    for panel, listed in HELP_PANELS.items():
        if any(name in listed for name in option_names):
            return panel
    return PANEL_NETWORKS if parameter_name in _NETWORK_PARAMETERS else PANEL_OTHER
