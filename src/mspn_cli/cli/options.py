"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

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
DEVICE = typer.Option("cpu", "--device", help="cpu or gpu (or a MegEngine device such as gpu1).")
BACKEND = typer.Option(
    "auto", "--backend", help="Inference backend: auto (fastest available), megengine, mge-lite or onnxruntime."
)
BATCH_SIZE = typer.Option(None, "--batch-size", min=1, help="Persons per forward pass, across images (default from config: 8; x2 crops with flip).")
FLIP = typer.Option(None, "--flip/--no-flip", help="Flip test: average with the mirrored crop (default from config: on).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or summary; errors only.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing output files.")
FAIL_FAST = typer.Option(False, "--fail-fast", help="Stop at the first bad input instead of reporting it at the end.")
RECURSIVE = typer.Option(False, "--recursive", "-r", help="Look for images in sub-folders of folder inputs too.")
KPT_THR = typer.Option(0.3, "--kpt-thr", help="Keypoint score threshold for drawing.")


def optional_path(value: Optional[Path]) -> Optional[str]:
    return None if value is None else str(value)
