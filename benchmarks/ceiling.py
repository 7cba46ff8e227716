"""What the machine can do and how the benchmarks count work: the sgemm ceiling, conv GFLOP, timing.

    python benchmarks/ceiling.py --sgemm-only 2048     # one sgemm figure (bench.py runs it in a fresh interpreter)
"""

from __future__ import annotations

import io
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# A run longer than this is timed once: its one-time costs (shape planning,
# algorithm choice) are small next to it, and repeating it would take minutes.
LONG_RUN_SECONDS = 8.0


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def fastest(run: Callable[[], Any], repeats: int) -> Tuple[float, List[float]]:
    """Warm up once, then the fastest of `repeats` timed runs (seconds)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    if first >= LONG_RUN_SECONDS:
        return first, [first]
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return min(samples), samples


# --------------------------------------------------------------------------- measurements


def sgemm_gflops(n: int, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best, _ = fastest(lambda: a @ b, repeats)
    return 2.0 * n**3 / best / 1e9


def openblas_core() -> Optional[str]:
    """The kernel family numpy's OpenBLAS picked at load time (None if it is not OpenBLAS)."""
    import ctypes
    import glob

    folder = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for library in sorted(glob.glob(str(folder / "*openblas*"))):
        try:
            lib = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in ("openblas_get_corename64_", "openblas_get_corename"):
            function = getattr(lib, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return None


def best_coretype() -> Optional[str]:
    """The OpenBLAS kernel family this CPU's flags allow (None when not x86 or unknown)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return None
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def sgemm_ceiling(n: int) -> Dict[str, Any]:
    """numpy sgemm GFLOP/s as installed, and with OPENBLAS_CORETYPE forced when OpenBLAS
    misdetects the CPU (virtual machines often report a generic model, and OpenBLAS then
    falls back to its SSE3 "Prescott" kernels at a fraction of the speed).

    Each is measured in a fresh interpreter: the kernel choice happens when numpy loads,
    and MegEngine's and onnxruntime's thread pools must not be competing.
    """
    import subprocess

    def measure(coretype: Optional[str]) -> Optional[float]:
        env = dict(os.environ)
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        proc = subprocess.run([sys.executable, __file__, "--sgemm-only", str(n)], capture_output=True, text=True, env=env)
        try:
            return float(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    core = openblas_core()
    result: Dict[str, Any] = {"n": n, "openblas_core": core, "gflops_installed": measure(None)}
    forced = best_coretype()
    if core and forced and core.lower() != forced.lower():
        result["forced_coretype"] = forced
        result["gflops_forced"] = measure(forced)
    measured = [v for v in (result["gflops_installed"], result.get("gflops_forced")) if v]
    result["gflops"] = max(measured) if measured else sgemm_gflops(n)
    return result


def conv_gflop(model, example_shape: Sequence[int], measured_shape: Sequence[int]) -> float:
    """2 x multiply-adds of every (transposed) convolution at `measured_shape`.

    Traces at the small `example_shape`, then lets MegEngine's static shape inference
    size the graph for `measured_shape`, so nothing is run at the large size.
    """
    from megengine.utils.network import Network

    from mspn_cli.export.trace import trace_and_dump

    traced = trace_and_dump(model, np.zeros(example_shape, np.float32), optimize=False)
    network = Network.load(io.BytesIO(traced.data))
    (data,) = network.data_providers_filter.as_list()
    data.shape = tuple(measured_shape)
    network._compile()  # re-infers every var's static shape
    macs = 0
    for opr in network.all_oprs:
        kind = type(opr).__name__
        if kind == "ConvolutionForward":
            weight, out = opr.inputs[1].shape, opr.outputs[0].shape
            macs += int(np.prod(out)) * int(np.prod(weight[-3:]))  # (in channels per group) x kh x kw per output
        elif kind == "ConvolutionBackwardData":
            weight, data_in = opr.inputs[0].shape, opr.inputs[1].shape
            macs += int(np.prod(data_in)) * int(np.prod(weight[-3:]))  # (out channels per group) x kh x kw per input
    return 2.0 * macs / 1e9


def describe_sgemm(sgemm: Dict[str, Any]) -> str:
    text = f"{sgemm['gflops_installed'] or 0:.0f} GFLOP/s with OpenBLAS's '{sgemm['openblas_core']}' kernels"
    if sgemm.get("gflops_forced"):
        text += f", {sgemm['gflops_forced']:.0f} GFLOP/s with OPENBLAS_CORETYPE={sgemm['forced_coretype']}"
    return text


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def module_version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception:
        return None



if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sgemm-only":
        print(sgemm_gflops(int(sys.argv[2])))
    else:
        raise SystemExit(__doc__)
