"""What the backends running an exported graph (onnxruntime, MegEngine Lite) share.

Both export the MegEngine network once, cache the graph under `<MSPN_HOME>/graphs/`
keyed by the weights, and then accept any batch whose shape fits the exported input spec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from mspn_cli.errors import UsageError
from mspn_cli.export.cache import GraphCache, state_digest
from mspn_cli.export.specs import InputSpec, declared_input_spec, input_spec_for_batch
from mspn_cli.runtime.base import Backend, usable_cpus


class ExportedGraphBackend(Backend):
    """Options: `cache_key` (or `weights_key`) names the weights (e.g. the weight file's
    sha256) so the cached graph is found without hashing the model; `key_extra` adds
    what else shapes the graph (the config's model section) to the cache key;
    `cache_dir` overrides `<MSPN_HOME>/graphs`; `input_shape` / `dynamic_axes` declare
    the input spec (else the model's `export_input_spec`, else the first batch's shape);
    `threads` defaults to the CPUs this process may use; `verify` compares a freshly
    exported graph with MegEngine before using it.

    Subclasses implement `_prepare(spec)` (export or load the graph; set `self.runner`)
    and `_execute(batch)`.
    """

    def __init__(
        self,
        model,
        device: str = "cpu",
        cache_dir: Optional[os.PathLike] = None,
        weights_key: Optional[str] = None,
        cache_key: Optional[str] = None,
        key_extra: Optional[Mapping[str, Any]] = None,
        model_name: Optional[str] = None,
        input_shape: Optional[Sequence[int]] = None,
        dynamic_axes=None,
        threads: Optional[int] = None,
        verify: bool = True,
        **_ignored,
    ):
        self._check_available(device)
        self.model = model
        self.cache = GraphCache(Path(cache_dir) if cache_dir else None)
        self.weights_key = cache_key or weights_key
        self.key_extra = dict(key_extra or {})
        self.model_name = model_name
        self.threads = int(threads or usable_cpus())
        self.verify = verify
        self.runner = None
        self.graph_path: Optional[Path] = None
        self.exported = False  # True when this backend had to export (no cached graph)
        self.spec: Optional[InputSpec] = None
        spec = InputSpec.make(input_shape, dynamic_axes if dynamic_axes is not None else {0: "N"}) if input_shape is not None else declared_input_spec(model)
        if spec is not None:
            self._prepare_and_release(spec)
        # Otherwise the graph is exported for the first batch's shape, in run().

    def _check_available(self, device: str) -> None:
        raise NotImplementedError

    def _weights_key(self) -> str:
        if not self.weights_key:
            self.weights_key = state_digest(self.model)
        return self.weights_key

    def _prepare_and_release(self, spec: InputSpec) -> None:
        try:
            self._prepare(spec)
        finally:
            self.cache.release()  # graphs that could not be cached are loaded by now

    def _prepare(self, spec: InputSpec) -> None:
        raise NotImplementedError

    def _execute(self, batch: np.ndarray) -> List[np.ndarray]:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.runner is None:
            self._prepare_and_release(input_spec_for_batch(batch.shape))
        if not self.spec.accepts(batch.shape):
            raise UsageError(
                f"the {self.name} backend was prepared for inputs shaped like {self.spec.shape} "
                f"(variable axes {sorted(self.spec.axes_dict())}); got {tuple(batch.shape)}"
            )
        return self._execute(batch)

    def close(self) -> None:
        self.runner = None
