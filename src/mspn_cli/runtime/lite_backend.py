"""MegEngine Lite: the network dumped as an optimised `.mge` graph and run by `megenginelite`.

The graph is dumped with `optimize_for_inference` (NCHW88 layout for AVX2 kernels,
conv + bias + relu fused), which makes MegEngine's own CPU inference about 2.5x faster
than the traced graph of the `megengine` backend. It needs nothing beyond MegEngine,
so it is the fallback when onnxruntime is not installed. Lite's CPU kernels run on
one thread in practice, whatever thread count is requested.
"""

from __future__ import annotations

import io
from typing import List, Optional

import numpy as np

from mspn_cli._mge import import_megengine, megengine_installed, silenced_stderr
from mspn_cli.errors import ExportError, UsageError
from mspn_cli.export.cache import discard, exported_graph
from mspn_cli.export.specs import InputSpec
from mspn_cli.errors import first_line
from mspn_cli.export.verify import verify_mge
from mspn_cli.runtime.base import optional_import, register_backend, usable_cpus
from mspn_cli.runtime.exported import ExportedGraphBackend

# optimize_for_inference options, fastest first. NCHW88 suits AVX2 kernels but Lite
# cannot run some graphs in it (e.g. a batch norm on 4 channels fails to broadcast);
# the next variant is tried when one fails to load, run or reproduce the model.
LITE_GRAPH_VARIANTS = (
    {"enable_nchw88": True, "enable_fuse_conv_bias_nonlinearity": True},
    {"enable_fuse_conv_bias_nonlinearity": True},
    {},
)


def _describe(options) -> str:
    return "+".join(key.replace("enable_", "") for key in sorted(options)) or "default optimisation"


def lite_available(device: str = "cpu") -> bool:
    if not str(device or "cpu").lower().startswith("cpu") or not megengine_installed():
        return False
    import_megengine("--backend mge-lite")  # megenginelite loads MegEngine's shared library; import it quietly first
    if optional_import("megenginelite") is None:
        return False
    from mspn_cli.runtime.lite_probe import lite_runs_here

    return lite_runs_here()


class LiteNetworkRunner:
    """A loaded `megenginelite.LiteNetwork` with numpy in, numpy out."""

    def __init__(self, network):
        self.network = network
        self.input_name = network.get_input_name(0)
        self.output_names = list(network.get_all_output_name())

    def run(self, batch: np.ndarray) -> List[np.ndarray]:
        self.network.get_io_tensor(self.input_name).set_data_by_copy(np.ascontiguousarray(batch, dtype=np.float32))
        self.network.forward()
        self.network.wait()
        # Copies: Lite reuses its output buffers on the next forward.
        return [np.array(self.network.get_io_tensor(name).to_numpy(), copy=True) for name in self.output_names]


def load_lite_network(source, threads: Optional[int] = None) -> LiteNetworkRunner:
    """Load a `.mge` graph (a path or the file's bytes) for CPU inference."""
    from megenginelite import LiteConfig, LiteDeviceType, LiteNetwork, LiteOptions

    options = LiteOptions()
    options.weight_preprocess = True  # transform weights for the chosen kernels once, at load
    options.var_sanity_check_first_run = False
    network = LiteNetwork(LiteConfig(device_type=LiteDeviceType.LITE_CPU, option=options))
    threads = int(threads or usable_cpus())
    if threads > 1:
        network.threads_number = threads  # must be set before load
    if isinstance(source, (bytes, bytearray)):
        source = io.BufferedReader(io.BytesIO(bytes(source)))  # the file object LiteNetwork.load accepts
    else:
        source = str(source)
    with silenced_stderr():
        network.load(source)
    return LiteNetworkRunner(network)


class LiteBackend(ExportedGraphBackend):
    """Runs `model` as a MegEngine Lite network on the CPU (options: see ExportedGraphBackend)."""

    name = "mge-lite"

    def _check_available(self, device: str) -> None:
        if not lite_available(device):
            raise UsageError(f"the mge-lite backend needs megenginelite and a CPU device (got '{device}')")

    def _prepare(self, spec: InputSpec) -> None:
        def graph_for(options, cached_only):
            return exported_graph(
                self.model, "mge", spec, model_name=self.model_name, weights_key=self._weights_key(),
                cache=self.cache, mge_options=options, key_extra=self.key_extra, cached_only=cached_only,
                purpose="MegEngine Lite",
            )

        # A variant in the cache has run correctly before (failed ones are deleted).
        for options in LITE_GRAPH_VARIANTS:
            graph = graph_for(options, cached_only=True)
            if graph is not None:
                try:
                    network = load_lite_network(graph.path, self.threads)
                except Exception:
                    discard(graph.path)
                    continue
                return self._use(network, spec, graph)
        problems = []
        for options in LITE_GRAPH_VARIANTS:
            graph = graph_for(options, cached_only=False)
            try:
                network = load_lite_network(graph.path, self.threads)
                verified = self.verify and graph.traced is not None
                if verified:
                    verify_mge(network.run, graph.traced)
                self.cache.seal(graph.path, verified=verified)
            except Exception as exc:  # Lite raises RuntimeError for layouts it cannot run
                discard(graph.path)
                problems.append(f"{_describe(options)}: {first_line(exc)}")
                continue
            return self._use(network, spec, graph)
        raise ExportError("MegEngine Lite cannot run this network (" + "; ".join(problems) + "); use the megengine backend")

    def _use(self, network: "LiteNetworkRunner", spec: InputSpec, graph) -> None:
        self.runner = network
        self.spec = spec
        self.graph_path = graph.path
        self.exported = graph.created
        self.output_names = network.output_names

    def _execute(self, batch: np.ndarray) -> List[np.ndarray]:
        return self.runner.run(batch)


register_backend("mge-lite", LiteBackend, lite_available, rank=10)

__all__ = ["LiteBackend", "LiteNetworkRunner", "lite_available", "load_lite_network"]
