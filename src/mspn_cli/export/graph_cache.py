"""A disk cache for exported graphs (ONNX, .mge), so later runs skip the export.

Graphs live in `<MSPN_HOME>/graphs/`, next to the weights cache. A graph's file name
is derived from everything that changes its content: the model name, a digest of the
weights, the input specification (example shape and dynamic axes), the export format
and the exporter version. Files are written to a temporary name in the same folder
and renamed into place, so a reader never sees a half-written graph, and two
processes exporting the same graph at once both end with a complete file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np


def graphs_dir() -> Path:
    from mspn_cli.weights.store import mspn_home

    return mspn_home() / "graphs"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    from mspn_cli.io.writers import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path


def state_digest(model) -> str:
    """A sha256 over the model's parameter and buffer values (names, shapes, dtypes, bytes).

    Used when the caller did not say which weights file the model holds. Reads the
    tensors directly (Module.state_dict() is several times slower); about 0.3 s for MSPN.
    """
    digest = hashlib.sha256()
    named = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in sorted(named, key=lambda item: item[0]):
        array = np.ascontiguousarray(tensor.numpy())
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def cache_key(**fields: Any) -> str:
    """A short stable digest of `fields` (JSON-serialisable values)."""
    text = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class GraphCache:
    """Exported graphs keyed by content; `get_or_create` exports only on a miss."""

    def __init__(self, directory: Optional[Path] = None):
        self.directory = Path(directory) if directory is not None else graphs_dir()
        self.exports = 0  # how many graphs this cache object had to export (tests read it)

    def path_for(self, model_name: str, key: str, suffix: str) -> Path:
        safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in model_name) or "model"
        return self.directory / f"{safe_name}-{key}{suffix}"

    def lookup(self, model_name: str, key_fields: Mapping[str, Any], suffix: str) -> Tuple[Path, bool]:
        """Return `(path, cached)`: where the graph for these fields lives, and whether it is there."""
        path = self.path_for(model_name, cache_key(model=model_name, suffix=suffix, **key_fields), suffix)
        return path, path.is_file() and path.stat().st_size > 0

    def get_or_create(
        self, model_name: str, key_fields: Mapping[str, Any], suffix: str, produce: Callable[[], bytes]
    ) -> Tuple[Path, bool]:
        """Return `(path, created)`; `produce()` is called only when the graph is not cached."""
        path, cached = self.lookup(model_name, key_fields, suffix)
        if cached:
            return path, False
        data = produce()
        self.exports += 1
        try:
            atomic_write_bytes(path, data)
        except OSError:
            # A read-only or full cache must not stop inference: keep the graph in a
            # private temporary file instead.
            fallback = Path(tempfile.mkdtemp(prefix="mspn-graph-")) / path.name
            atomic_write_bytes(fallback, data)
            return fallback, True
        return path, True


@dataclass
class ExportedGraph:
    path: Path
    created: bool  # False when the graph came from the cache
    traced: Optional[Any] = None  # the TracedGraph (example input and MegEngine's outputs) when created


def model_name_of(model) -> str:
    return type(model).__name__.lower()


def exported_graph(
    model,
    fmt: str,
    spec,
    *,
    weights_key: str,
    model_name: Optional[str] = None,
    cache: Optional[GraphCache] = None,
    mge_options: Optional[Mapping[str, Any]] = None,
    cached_only: bool = False,
) -> Optional[ExportedGraph]:
    """The `fmt` ("onnx" or "mge") graph of `model` for input `spec`, from the cache or exported now.

    `weights_key` names the weights the model holds (a weight file's sha256, or
    `state_digest(model)`). A .mge graph is dumped with `optimize_for_inference` and
    `mge_options` (e.g. enable_nchw88). With `cached_only`, returns None instead of exporting.
    """
    from mspn_cli._mge import import_megengine
    from mspn_cli.runtime import onnx_export

    mge = import_megengine()
    cache = cache or GraphCache()
    name = model_name or model_name_of(model)
    fields: Dict[str, Any] = {
        "weights": weights_key,
        "input_shape": list(spec.shape),
        "dynamic_axes": [list(item) for item in spec.dynamic_axes],
        "exporter": onnx_export.EXPORTER_VERSION,
        "format": fmt,
    }
    if fmt == "onnx":
        fields["opset"] = onnx_export.ONNX_OPSET
        suffix = ".onnx"
    elif fmt == "mge":
        fields["megengine"] = mge.__version__  # .mge files are tied to the MegEngine version
        fields["options"] = dict(mge_options or {})
        suffix = ".mge"
    else:
        raise ValueError(f"unknown graph format {fmt!r}")
    if cached_only:
        path, cached = cache.lookup(name, fields, suffix)
        return ExportedGraph(path, False) if cached else None
    traced_holder: Dict[str, Any] = {}

    def produce() -> bytes:
        if fmt == "onnx":
            proto, traced = onnx_export.export_onnx_model(
                model, spec.example(), dynamic_axes={"images": spec.axes_dict()}, input_name="images"
            )
            traced_holder["traced"] = traced
            return proto.SerializeToString()
        traced = onnx_export.trace_and_dump(model, spec.example(), input_name="images", optimize=True, **dict(mge_options or {}))
        traced_holder["traced"] = traced
        return traced.data

    path, created = cache.get_or_create(name, fields, suffix, produce)
    return ExportedGraph(path, created, traced_holder.get("traced"))


def discard(path: Path) -> None:
    """Remove a cached graph that turned out to be wrong, so it is not reused."""
    try:
        Path(path).unlink()
    except OSError:
        pass


__all__ = [
    "ExportedGraph",
    "GraphCache",
    "atomic_write_bytes",
    "cache_key",
    "discard",
    "exported_graph",
    "graphs_dir",
    "model_name_of",
    "state_digest",
]
