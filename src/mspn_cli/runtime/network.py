"""From a configured network to a ready backend: weights resolved, graph cached, session open.

`load_network` builds the MegEngine network and loads its weights strictly;
`attach_backend` puts a configured network behind a backend.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from mspn_cli.errors import UsageError, first_line

# Re-exported: callers load networks and name their graphs through this module.
from mspn_cli.runtime.network_loading import (  # noqa: F401
    ProgressArg,
    download_progress_of,
    graph_key_extra,
    input_spec_of,
    load_network,
)

log = logging.getLogger(__name__)


def _sealed_graph_path(config, weights_sha256: str):
    """The sealed, verified cached ONNX graph of `config`'s network with these weights, or None."""
    from mspn_cli.export.cache import FORMAT_SUFFIXES, GraphCache, graph_key_fields

    spec = input_spec_of(config)
    fields = graph_key_fields("onnx", spec, weights_sha256, graph_key_extra(config))
    return GraphCache().find(config.model.name, fields, FORMAT_SUFFIXES["onnx"], require_verified=True)


def _cached_onnxruntime_backend(config, weights_path, weights_sha256: str, device: str):
    """The onnxruntime backend on a sealed, verified cached graph, or None (the warm path).

    Needs neither MegEngine nor the weights' contents: the weights are named by their
    sha256 from the digest index.
    """
    from mspn_cli.export.cache import GraphCache
    from mspn_cli.runtime.onnxruntime_backend import OnnxRuntimeBackend, onnxruntime_can_run

    if not onnxruntime_can_run(device):
        return None
    path = _sealed_graph_path(config, weights_sha256)
    if path is None:
        return None
    try:
        return OnnxRuntimeBackend.from_cached_graph(path, input_spec_of(config), GraphCache())
    except Exception as exc:  # onnxruntime rejects the file: the cold path exports it again
        log.warning("cached graph %s does not load (%s); exporting it again", path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        from mspn_cli.export.cache import discard

        discard(path)
        return None


# -- precision (issue 20): which backends compute in a reduced precision on request ------
# Every backend runs fp32; these also run the precision named, where the hardware has it.
REDUCED_PRECISION_BACKENDS = {"bf16": ("openvino",)}


def backend_for_precision(backend: str, precision: str) -> str:
    """The backend to use for `precision`: `backend` itself, or for auto the one that runs it.

    Refuses (UsageError, exit 2) a backend that cannot compute in `precision`, and a CPU
    without native bf16, before any weights are read or graphs exported.
    """
    from mspn_cli.runtime.precision import check_precision_name

    precision = check_precision_name(precision)
    if precision == "fp32":
        return backend
    able = REDUCED_PRECISION_BACKENDS.get(precision, ())
    if backend == "auto" and able:
        from mspn_cli.runtime import available_backends

        if able[0] not in available_backends("cpu"):
            raise UsageError(f"--precision {precision} runs on the {able[0]} backend, which is not installed (pip install {able[0]})")
        backend = able[0]
    if backend not in able:
        runs_it = f"use --backend {' or '.join(able)}" if able else "no backend here computes in it"
        raise UsageError(f"--precision {precision} does not run on the {backend} backend; {runs_it}, or --precision fp32")
    if backend == "openvino":
        from mspn_cli.runtime.openvino_backend import check_precision_runs

        check_precision_runs(precision)
    return backend


def _cached_openvino_backend(config, weights_sha256: str, device: str, precision: str):
    """The openvino backend on a sealed, verified cached graph, or None (the warm path, as onnxruntime's)."""
    from mspn_cli.runtime.openvino_backend import OpenVinoBackend, openvino_can_run

    if not openvino_can_run(device):
        return None
    path = _sealed_graph_path(config, weights_sha256)
    if path is None:
        return None
    try:
        return OpenVinoBackend.from_onnx_graph(path, input_spec_of(config), device=device, precision=precision)
    except UsageError:  # a refused precision is the user's answer, not a broken graph
        raise
    except Exception as exc:  # noqa: BLE001 - OpenVINO rejects the file: onnxruntime or the cold path next
        log.warning("OpenVINO cannot open the cached graph %s (%s)", path, first_line(exc))
        return None


def onnx_graph_path(config, weights_path, weights_sha256: str, progress: ProgressArg = True):
    """The sealed ONNX graph file of `config`'s network holding these weights, for any backend that runs ONNX.

    From the graph cache if there; else filled once from the packaged graph template
    with numpy and onnx (no MegEngine) and cached; only for a config or input spec
    without a template is the network built in MegEngine, exported and verified.
    When no cache folder is usable, the file is in a temporary folder kept for the process.
    """
    from mspn_cli.export.cache import FORMAT_SUFFIXES, GraphCache, graph_key_fields
    from mspn_cli.export.graph_template import graph_from_template

    cache = GraphCache()
    fields = graph_key_fields("onnx", input_spec_of(config), weights_sha256, graph_key_extra(config))
    path = cache.find(config.model.name, fields, FORMAT_SUFFIXES["onnx"], require_verified=True)
    if path is None:
        path = graph_from_template(config.model.name, fields, weights_path, cache)
    if path is None:  # no template for this config: the exporter, through onnxruntime's backend
        instance, _, _ = attach_backend(config, "onnxruntime", str(weights_path), "cpu", progress)
        path = instance.graph_path
        instance.close()
    return Path(path)


def _cached_graph_backend(config, backend: str, weights_path, weights_sha256: str, device: str, precision: str):
    """`backend` (openvino, onnxruntime, or auto: the first of them that runs) on the sealed cached graph, or None."""
    instance = None
    if backend in ("auto", "openvino"):
        instance = _cached_openvino_backend(config, weights_sha256, device, precision)
    if instance is None and backend in ("auto", "onnxruntime"):
        instance = _cached_onnxruntime_backend(config, weights_path, weights_sha256, device)
    return instance


def _graph_from_template(config, weights_path, weights_sha256: str):
    """The graph filled from the packaged template into the cache (sealed), or None where no template fits."""
    from mspn_cli.export.cache import GraphCache, graph_key_fields
    from mspn_cli.export.graph_template import graph_from_template
    from mspn_cli.runtime.base import optional_import

    if optional_import("onnx") is None:
        return None
    cache = GraphCache()
    if not cache.persistent:  # nowhere to keep it: _template_onnxruntime_backend uses a temporary folder
        return None
    fields = graph_key_fields("onnx", input_spec_of(config), weights_sha256, graph_key_extra(config))
    return graph_from_template(config.model.name, fields, weights_path, cache)


def sealed_onnx_graph(config, weights: Optional[str], progress: ProgressArg) -> Tuple[Path, Path, str]:
    """(graph path, weights path, weights sha256): `onnx_graph_path` for a weights argument as commands take it."""
    from mspn_cli.weights import resolve_weights, verified_sha256

    weights_path = resolve_weights(weights, config.weights, progress=download_progress_of(progress))
    weights_sha256 = verified_sha256(weights_path, config.weights)
    return onnx_graph_path(config, weights_path, weights_sha256, progress), weights_path, weights_sha256


def _template_onnxruntime_backend(config, weights_path, weights_sha256: str, device: str):
    """The onnxruntime backend on the graph filled from the packaged template (cold path, no
    MegEngine), or None when no template fits `config`."""
    from mspn_cli.errors import ExportError, first_line
    from mspn_cli.export.cache import GraphCache, discard, graph_key_fields
    from mspn_cli.export.graph_template import graph_from_template
    from mspn_cli.runtime.base import optional_import
    from mspn_cli.runtime.onnxruntime_backend import OnnxRuntimeBackend, onnxruntime_can_run

    if not onnxruntime_can_run(device) or optional_import("onnx") is None:
        return None
    spec = input_spec_of(config)
    cache = GraphCache()
    fields = graph_key_fields("onnx", spec, weights_sha256, graph_key_extra(config))
    try:
        path = graph_from_template(config.model.name, fields, weights_path, cache)
        if path is None:
            return None
        try:
            return OnnxRuntimeBackend.from_cached_graph(path, spec, cache)
        except Exception as exc:
            discard(path)
            raise ExportError(f"onnxruntime cannot load the graph {path} built from its template: {first_line(exc)}") from exc
    finally:
        cache.release()


def attach_backend(
    config, backend: Union[str, Any], weights: Optional[str], device: str, progress: ProgressArg, graph_tag: str = "",
    precision: str = "fp32",
) -> Tuple[Any, Any, str]:
    """A backend running `config`'s network: (backend, weights path, weights sha256).

    For openvino and onnxruntime (and auto, whose first choices they are), a verified
    graph in the cache is opened directly, else the graph is filled once from the packaged
    template (no MegEngine) and opened; only for a config without a template is the
    MegEngine network built, loaded and exported. `precision` other than fp32 picks (auto)
    or demands the backend that runs it. `graph_tag` is no longer needed (the input spec
    comes from the config).
    """
    from mspn_cli.runtime.base import require_backend_runtime
    from mspn_cli.weights import resolve_weights, verified_sha256

    from mspn_cli.runtime.torch_network import attach_torch_backend, check_torch_device, uses_torch

    require_backend_runtime(backend, device)  # a backend that needs MegEngine where it is absent: one line, now
    if uses_torch(backend, device):  # --backend torch, or auto on --device cuda[:N]
        check_torch_device(device, precision)  # before any weights are read or graphs built
        graph_path, weights_path, weights_sha256 = sealed_onnx_graph(config, weights, progress)
        return attach_torch_backend(config, graph_path, device, precision), weights_path, weights_sha256
    name = config.model.name
    started = time.perf_counter()
    backend = backend_for_precision(backend, precision)
    if backend in ("auto", "onnxruntime", "openvino"):
        weights_path = resolve_weights(weights, config.weights, progress=download_progress_of(progress))
        weights_sha256 = verified_sha256(weights_path, config.weights)
        instance = _cached_graph_backend(config, backend, weights_path, weights_sha256, device, precision)
        if instance is None and _graph_from_template(config, weights_path, weights_sha256) is not None:
            # Filled and sealed once from the packaged template (no MegEngine): open it as a cached graph.
            instance = _cached_graph_backend(config, backend, weights_path, weights_sha256, device, precision)
        if instance is None and backend in ("auto", "onnxruntime"):  # no usable cache folder
            instance = _template_onnxruntime_backend(config, weights_path, weights_sha256, device)
        if instance is not None:
            log.info("%s: graph %s opened in %.1f s", name, instance.graph_path, time.perf_counter() - started)
            return instance, weights_path, weights_sha256
    from mspn_cli.runtime import create_backend

    model, weights_path, weights_sha256 = load_network(name, config.weights, weights, progress, device)
    spec = input_spec_of(config)
    started = time.perf_counter()
    instance = create_backend(
        backend, model, device=device, model_name=name, weights_key=weights_sha256, key_extra=graph_key_extra(config),
        input_shape=spec.shape, dynamic_axes=spec.axes_dict(), precision=precision,
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
        """`backend`: a backend name, or any object with `run(batch)` standing in for the network.

        `self.precision` is what the backend reports it computes in (read back from the
        compiled model where the runtime can say), else fp32: every other backend runs fp32.
        """
        self.weights_path = None
        self.weights_sha256 = ""
        if _is_backend_instance(backend):
            self.backend = backend
        else:
            self.backend, self.weights_path, self.weights_sha256 = attach_backend(
                self.config, backend, weights, device, progress, graph_tag, precision=precision
            )
        self.backend_name = getattr(self.backend, "name", type(self.backend).__name__)
        self.precision = getattr(self.backend, "precision", None) or "fp32"
        log.info("%s: running on backend '%s', device %s, precision %s", self.config.model.name, self.backend_name, device, self.precision)
