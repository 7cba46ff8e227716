"""The parts of a configured network both backends' loaders share (runtime/network.py for
MegEngine, Lite and onnxruntime, runtime/torch_network.py for PyTorch): weights resolved and
loaded strictly, the input spec it is exported with, the config values that key its graph.

A module of its own so that network.py (which hands --backend torch to torch_network.py) and
torch_network.py (which needs these) depend on it, not on each other.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Union

from mspn_cli.weights.download import DownloadProgress, LoggedProgress

log = logging.getLogger(__name__)

ProgressArg = Union[bool, DownloadProgress, None]


def download_progress_of(progress: ProgressArg) -> Optional[DownloadProgress]:
    """`True` -> one logged line per download, `False`/None -> nothing, a callback -> itself."""
    if isinstance(progress, DownloadProgress):
        return progress
    return LoggedProgress() if progress else None


def load_network(model_name: str, weights_config, weights: Optional[str], progress: ProgressArg = True, device: str = "cpu"):
    """Build a network and load weights into it strictly. Returns (model, weights path, sha256)."""
    from mspn_cli.models import build_model
    from mspn_cli.runtime.megengine_backend import use_device
    from mspn_cli.weights import load_checkpoint, load_weights_into, resolve_weights, verified_sha256

    started = time.perf_counter()
    path = resolve_weights(weights, weights_config, progress=download_progress_of(progress))
    sha256 = verified_sha256(path, weights_config)  # a pinned sha256 holds for any file loaded
    use_device(device)
    model = build_model(model_name)
    load_weights_into(model, load_checkpoint(path), str(path))
    log.info("%s: weights %s (sha256 %s) loaded in %.1f s", model_name, path, sha256[:12], time.perf_counter() - started)
    return model, path, sha256


def input_spec_of(config):
    """The input spec a configured network is exported with (the caller declares it, not the model).

    MSPN: N crops of the config's input size. The detector accepts any N x 3 x H x W; it
    is traced on a small non-square image (every pyramid level at least 2 cells, so a
    swapped H/W shows up in verification) to keep first use quick.
    """
    from mspn_cli.config import PoseConfig
    from mspn_cli.export.specs import InputSpec

    if isinstance(config, PoseConfig):
        height, width = config.model.input_size
        return InputSpec.make((1, 3, int(height), int(width)), {0: "N"})
    height = 2 * max(config.anchors.strides)
    width = height + 2 * config.preprocess.size_divisor
    return InputSpec.make((1, 3, height, width), {0: "N", 2: "H", 3: "W"})


def graph_key_extra(config) -> dict:
    """Config values that shape the exported graph, beyond the weights and the input spec."""
    import dataclasses

    return {"model_config": dataclasses.asdict(config.model)}
