"""From a configured network to a ready backend: weights resolved, graph cached, session open.

`load_network` builds the MegEngine network and loads its weights strictly;
`attach_backend` puts a configured network behind a backend.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Tuple, Union

# Re-exported: callers load networks and name their graphs through this module.
from mspn_cli.runtime.network_loading import (  # noqa: F401
    ProgressArg,
    download_progress_of,
    graph_key_extra,
    input_spec_of,
    load_network,
)

log = logging.getLogger(__name__)


def _cached_onnxruntime_backend(config, weights_path, weights_sha256: str, device: str):
    """The onnxruntime backend on a sealed, verified cached graph, or None (the warm path).

    Needs neither MegEngine nor the weights' contents: the weights are named by their
    sha256 from the digest index.
    """
    from mspn_cli.export.cache import FORMAT_SUFFIXES, GraphCache, graph_key_fields
    from mspn_cli.runtime.onnxruntime_backend import OnnxRuntimeBackend, onnxruntime_can_run

    if not onnxruntime_can_run(device):
        return None
    spec = input_spec_of(config)
    cache = GraphCache()
    fields = graph_key_fields("onnx", spec, weights_sha256, graph_key_extra(config))
    path = cache.find(config.model.name, fields, FORMAT_SUFFIXES["onnx"], require_verified=True)
    if path is None:
        return None
    try:
        return OnnxRuntimeBackend.from_cached_graph(path, spec, cache)
    except Exception as exc:  # onnxruntime rejects the file: the cold path exports it again
        log.warning("cached graph %s does not load (%s); exporting it again", path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        from mspn_cli.export.cache import discard

        discard(path)
        return None


def attach_backend(
    config, backend: Union[str, Any], weights: Optional[str], device: str, progress: ProgressArg, graph_tag: str = "",
    precision: str = "fp32",
) -> Tuple[Any, Any, str]:
    """A backend running `config`'s network: (backend, weights path, weights sha256).

    For onnxruntime (and auto, whose first choice it is), a verified graph in the cache
    is opened directly; only otherwise is the MegEngine network built, loaded and exported.
    `graph_tag` is no longer needed (the input spec comes from the config); kept for callers.
    """
    from mspn_cli.weights import indexed_sha256, resolve_weights

    from mspn_cli.runtime.torch_network import attach_torch_backend, uses_torch

    if uses_torch(backend, device):  # --backend torch, or auto on --device cuda[:N]
        return attach_torch_backend(config, weights, device, precision, progress)
    name = config.model.name
    started = time.perf_counter()
    if backend in ("auto", "onnxruntime"):
        weights_path = resolve_weights(weights, config.weights, progress=download_progress_of(progress))
        weights_sha256 = indexed_sha256(weights_path)
        instance = _cached_onnxruntime_backend(config, weights_path, weights_sha256, device)
        if instance is not None:
            log.info("%s: cached graph %s opened in %.1f s", name, instance.graph_path, time.perf_counter() - started)
            return instance, weights_path, weights_sha256
    from mspn_cli.runtime import create_backend

    model, weights_path, weights_sha256 = load_network(name, config.weights, weights, progress, device)
    spec = input_spec_of(config)
    started = time.perf_counter()
    instance = create_backend(
        backend, model, device=device, model_name=name, weights_key=weights_sha256, key_extra=graph_key_extra(config),
        input_shape=spec.shape, dynamic_axes=spec.axes_dict(),
    )
    log.info("%s: backend ready in %.1f s", name, time.perf_counter() - started)
    return instance, weights_path, weights_sha256


def _is_backend_instance(backend: Any) -> bool:
    return hasattr(backend, "run") and callable(backend.run)


class NetworkRunner:
    """Base of PoseEstimator and PersonDetector: a configured network behind a backend."""

    config: Any

    def attach_backend(self, backend: Union[str, Any], weights: Optional[str], device: str, progress: ProgressArg, graph_tag: str,
                       precision: str = "fp32") -> None:
        """`backend`: a backend name, or any object with `run(batch)` standing in for the network."""
        self.weights_path = None
        self.weights_sha256 = ""
        if _is_backend_instance(backend):
            self.backend = backend
        else:
            self.backend, self.weights_path, self.weights_sha256 = attach_backend(
                self.config, backend, weights, device, progress, graph_tag, precision
            )
        self.backend_name = getattr(self.backend, "name", type(self.backend).__name__)
        log.info("%s: running on backend '%s', device %s", self.config.model.name, self.backend_name, device)
