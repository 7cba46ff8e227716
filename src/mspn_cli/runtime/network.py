"""From a configured network to a ready backend: weights resolved, graph cached, session open.

`load_network` builds the MegEngine network and loads its weights strictly;
`attach_backend` puts a configured network behind a backend.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Tuple, Union

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
    from mspn_cli.weights import indexed_sha256, load_checkpoint, load_weights_into, resolve_weights

    started = time.perf_counter()
    path = resolve_weights(weights, weights_config, progress=download_progress_of(progress))
    use_device(device)
    model = build_model(model_name)
    load_weights_into(model, load_checkpoint(path), str(path))
    sha256 = indexed_sha256(path)
    log.info("%s: weights %s (sha256 %s) loaded in %.1f s", model_name, path, sha256[:12], time.perf_counter() - started)
    return model, path, sha256


def attach_backend(
    config, backend: Union[str, Any], weights: Optional[str], device: str, progress: ProgressArg, graph_tag: str
) -> Tuple[Any, Any, str]:
    """A backend running `config`'s network: (backend, weights path, weights sha256)."""
    from mspn_cli.runtime import create_backend

    name = config.model.name
    model, weights_path, weights_sha256 = load_network(name, config.weights, weights, progress, device)
    # Exported graphs are cached per network, input layout and weights.
    cache_key = f"{name}-{graph_tag}-{weights_sha256[:16]}"
    started = time.perf_counter()
    instance = create_backend(backend, model, device=device, cache_key=cache_key)
    log.info("%s: backend ready in %.1f s", name, time.perf_counter() - started)
    return instance, weights_path, weights_sha256


def _is_backend_instance(backend: Any) -> bool:
    return hasattr(backend, "run") and callable(backend.run)


class NetworkRunner:
    """Base of PoseEstimator and PersonDetector: a configured network behind a backend."""

    config: Any

    def attach_backend(self, backend: Union[str, Any], weights: Optional[str], device: str, progress: ProgressArg, graph_tag: str) -> None:
        """`backend`: a backend name, or any object with `run(batch)` standing in for the network."""
        self.weights_path = None
        self.weights_sha256 = ""
        if _is_backend_instance(backend):
            self.backend = backend
        else:
            self.backend, self.weights_path, self.weights_sha256 = attach_backend(
                self.config, backend, weights, device, progress, graph_tag
            )
        self.backend_name = getattr(self.backend, "name", type(self.backend).__name__)
        log.info("%s: running on backend '%s', device %s", self.config.model.name, self.backend_name, device)
