"""A disk cache for exported graphs (ONNX, .mge), so later runs skip the export.

Graphs live in `<MSPN_HOME>/graphs/` (or the fallback folder `weights.store` picks when
$MSPN_HOME is unusable). A graph's file name is a digest of everything that changes
its content (`graph_key_fields`): the weights' sha256, the config values that shape
the network, the input spec, the format, and the exporter version.

A graph is used only once it is sealed: after it was loaded (and, on first use,
verified against MegEngine, or built from a packaged graph template), a sidecar
`<graph>.seal.json` records its size, sha256, exporter version and source. A graph whose sidecar is missing or disagrees (damaged,
truncated, replaced, from another exporter) is reported in one line and exported
again. The sha256 is looked up through the digest index (weights.checksum), so an
unchanged graph is not re-hashed on every run.

When no cache folder is usable at all, graphs go to a private temporary folder that
`release()` removes as soon as the backend has loaded them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from mspn_cli.errors import MspnError
from mspn_cli.export.onnx.common import EXPORTER_VERSION, ONNX_OPSET
from mspn_cli.export.specs import InputSpec

log = logging.getLogger(__name__)

SEAL_SUFFIX = ".seal.json"
FORMAT_SUFFIXES = {"onnx": ".onnx", "mge": ".mge"}


def graphs_dir() -> Optional[Path]:
    """`<cache root>/graphs`, or None when no cache folder is usable."""
    from mspn_cli.weights.store import usable_cache_root

    root = usable_cache_root()
    return root / "graphs" if root is not None else None


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


def graph_key_fields(fmt: str, spec: InputSpec, weights_key: str, extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Everything that changes an exported graph's content, for its cache key.

    `extra`: what else shapes the graph, e.g. the config's model section (input size)
    or, for .mge graphs, the MegEngine version and dump options.
    """
    if fmt not in FORMAT_SUFFIXES:
        raise ValueError(f"unknown graph format {fmt!r}")
    fields: Dict[str, Any] = {"weights": weights_key, **spec.key_fields(), "exporter": EXPORTER_VERSION, "format": fmt}
    if fmt == "onnx":
        fields["opset"] = ONNX_OPSET
    fields.update(extra or {})
    return fields


@dataclass
class ExportedGraph:
    path: Path
    created: bool  # False when the graph came from the cache
    traced: Optional[Any] = None  # the TracedGraph (example input and MegEngine's outputs) when created


class GraphCache:
    """Exported graphs keyed by content; `get_or_create` exports only on a miss.

    `directory` None: the usable cache folder's `graphs/`, or private temporary folders
    when there is none (removed by `release()`).
    """

    def __init__(self, directory: Optional[Path] = None):
        self.directory = Path(directory) if directory is not None else graphs_dir()
        self.exports = 0  # how many graphs this cache object had to export (tests read it)
        self._temporary: List[Path] = []

    @property
    def persistent(self) -> bool:
        return self.directory is not None

    def describe(self) -> str:
        return f"cached in {self.directory}" if self.persistent else "no usable cache folder: again on every run"

    def path_for(self, model_name: str, key_fields: Mapping[str, Any], suffix: str) -> Path:
        safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in model_name) or "model"
        key = cache_key(model=model_name, suffix=suffix, **key_fields)
        return (self.directory or Path(tempfile.gettempdir())) / f"{safe_name}-{key}{suffix}"

    # ---------------------------------------------------------------- sealing

    @staticmethod
    def seal_path(path: Path) -> Path:
        return path.with_name(path.name + SEAL_SUFFIX)

    def _digest_index(self):
        from mspn_cli.weights.checksum import DigestIndex

        return DigestIndex(self.directory)

    def seal(self, path: Path, verified: bool, source: str = "exporter") -> None:
        """Record that `path` loaded (and, if `verified`, matched MegEngine); only sealed graphs are reused.

        `source` "template": filled from a packaged graph template (export/graph_template.py).
        Such a graph is not run against MegEngine, but it counts as verified: its bytes are
        the exporter's by construction, which the template tests check against a fresh export.
        """
        if not self.persistent or Path(path).parent != self.directory:
            return
        from mspn_cli.io.writers import atomic_write

        record = {
            "exporter": EXPORTER_VERSION,
            "size": path.stat().st_size,
            "sha256": self._digest_index().sha256(path),
            "verified": bool(verified),
            "source": source,
        }
        try:
            with atomic_write(self.seal_path(path)) as handle:
                json.dump(record, handle)
        except (OSError, MspnError) as exc:
            log.warning("cannot record the exported graph %s as usable (%s); it will be exported again", path, exc)

    def sealed(self, path: Path, require_verified: bool = False) -> Optional[str]:
        """None when `path` is a usable sealed graph, else why not ("missing" or a reason it is damaged)."""
        if not path.is_file():
            return "missing"
        try:
            record = json.loads(self.seal_path(path).read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return "it was never completed and verified"
        if not isinstance(record, dict) or record.get("exporter") != EXPORTER_VERSION:
            return "it comes from another exporter version"
        if record.get("size") != size:
            return f"it is {size} bytes, {record.get('size')} were written"
        if require_verified and not (record.get("verified") or record.get("source") == "template"):
            return "it was never verified"
        try:
            digest = self._digest_index().sha256(path)
        except MspnError:
            return "it cannot be read"
        if digest != record.get("sha256"):
            return "its content changed since it was written"
        return None

    # ---------------------------------------------------------------- lookups

    def find(self, model_name: str, key_fields: Mapping[str, Any], suffix: str, require_verified: bool = False) -> Optional[Path]:
        """The sealed graph for these fields, or None (without exporting or complaining)."""
        if not self.persistent:
            return None
        path = self.path_for(model_name, key_fields, suffix)
        return path if self.sealed(path, require_verified) is None else None

    def get_or_create(
        self,
        model_name: str,
        key_fields: Mapping[str, Any],
        suffix: str,
        produce: Callable[[], bytes],
        notice: Optional[str] = None,
    ) -> Tuple[Path, bool]:
        """Return `(path, created)`; `produce()` is called only when no sealed graph is cached.

        `notice` is logged (WARNING, so users see it) before exporting. The caller seals
        a created graph once it has loaded it.
        """
        path = self.path_for(model_name, key_fields, suffix)
        if self.persistent:
            problem = self.sealed(path)
            if problem is None:
                return path, False
            if problem != "missing":
                log.warning("cached graph %s is unusable (%s); exporting it again", path, problem)
                discard(path)
        if notice:
            log.warning("%s", notice)
        data = produce()
        self.exports += 1
        if self.persistent:
            try:
                return self._write(path, data), True
            except (OSError, MspnError) as exc:
                log.warning("cannot write the graph cache %s (%s); keeping the graph for this run only", self.directory, exc)
        return self._write(self._temporary_folder() / path.name, data), True

    def _write(self, path: Path, data: bytes) -> Path:
        from mspn_cli.io.writers import write_bytes_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        return write_bytes_atomic(path, data)

    def _temporary_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="mspn-graph-"))
        self._temporary.append(folder)
        return folder

    def release(self) -> None:
        """Remove the temporary folders of graphs that could not be cached (call once they are loaded)."""
        while self._temporary:
            shutil.rmtree(self._temporary.pop(), ignore_errors=True)


def discard(path: Path) -> None:
    """Remove a cached graph (and its seal) that turned out to be wrong, so it is not reused."""
    for victim in (Path(path), GraphCache.seal_path(Path(path))):
        try:
            victim.unlink()
        except OSError:
            pass


def model_name_of(model) -> str:
    return type(model).__name__.lower()


def exported_graph(
    model,
    fmt: str,
    spec: InputSpec,
    *,
    weights_key: str,
    model_name: Optional[str] = None,
    cache: Optional[GraphCache] = None,
    mge_options: Optional[Mapping[str, Any]] = None,
    key_extra: Optional[Mapping[str, Any]] = None,
    cached_only: bool = False,
    purpose: str = "",
) -> Optional[ExportedGraph]:
    """The `fmt` ("onnx" or "mge") graph of `model` for input `spec`, from the cache or exported now.

    `weights_key` names the weights the model holds (a weight file's sha256, or
    `state_digest(model)`). A .mge graph is dumped with `optimize_for_inference` and
    `mge_options` (e.g. enable_nchw88). With `cached_only`, returns None instead of exporting.
    `purpose` names the backend in the progress line.
    """
    cache = cache or GraphCache()
    name = model_name or model_name_of(model)
    extra: Dict[str, Any] = dict(key_extra or {})
    if fmt == "mge":
        from mspn_cli._mge import import_megengine

        extra["megengine"] = import_megengine().__version__  # .mge files are tied to the MegEngine version
        extra["options"] = dict(mge_options or {})
    fields = graph_key_fields(fmt, spec, weights_key, extra)
    suffix = FORMAT_SUFFIXES[fmt]
    if cached_only:
        path = cache.find(name, fields, suffix)
        return ExportedGraph(path, False) if path is not None else None
    traced_holder: Dict[str, Any] = {}

    def produce() -> bytes:
        if fmt == "onnx":
            from mspn_cli.export.onnx import export_onnx_model

            # No onnx checker here: onnxruntime loads the graph next and verification runs it.
            proto, traced = export_onnx_model(
                model, spec.example(), dynamic_axes={"images": spec.axes_dict()}, input_name="images", check=False
            )
            traced_holder["traced"] = traced
            return proto.SerializeToString()
        from mspn_cli.export.trace import trace_and_dump

        traced = trace_and_dump(model, spec.example(), input_name="images", optimize=True, **dict(mge_options or {}))
        traced_holder["traced"] = traced
        return traced.data

    target = f" for {purpose}" if purpose else ""
    notice = f"exporting {name} to {fmt.upper() if fmt == 'onnx' else '.mge'}{target} (once; {cache.describe()})"
    path, created = cache.get_or_create(name, fields, suffix, produce, notice=notice)
    return ExportedGraph(path, created, traced_holder.get("traced"))


__all__ = [
    "ExportedGraph",
    "GraphCache",
    "cache_key",
    "discard",
    "exported_graph",
    "graph_key_fields",
    "graphs_dir",
    "model_name_of",
    "state_digest",
]
