"""Importing MegEngine quietly.

On machines without CUDA, MegEngine's C++ core prints a banner and debug lines about
the missing driver straight to file descriptor 2. They are noise for a CPU user, so
the first import and device queries run with fd 2 pointed at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

os.environ.setdefault("MGE_LOG_LEVEL", "ERROR")  # silence info/debug logging from the C++ core
# MegEngine enables flush-to-zero, after which numpy warns on its first float introspection.
warnings.filterwarnings("ignore", message="The value of the smallest subnormal")


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Large blocks at or above this size come straight from mmap and go back to the OS when freed.
HEAP_MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def cap_heap_growth() -> bool:
    """Stop glibc from parking MegEngine's freed tensor memory on the heap.

    glibc raises its mmap threshold each time a large mmapped block is freed, so after
    the first forward pass MegEngine's activations (tens of MB each) are carved from
    the heap instead, and fragmentation keeps them there: measured on MSPN at 8 crops,
    RSS went 1.0 -> 1.9 -> 7.5 GB over three identical calls, and to 9 GB after a
    change of batch size. A fixed threshold (which mallopt sets) keeps it at 1.3-1.5 GB
    and is no slower. A threshold the user set in MALLOC_MMAP_THRESHOLD_ is left alone.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))


MEGENGINE_REQUIREMENT = "megengine==1.13.*"
DEFAULT_FEATURE = "the MegEngine reference (--backend megengine or mge-lite, export --format mge, parity checks)"


def megengine_installed() -> bool:
    """Whether `import megengine` would find the package; imports nothing."""
    if "megengine" in sys.modules:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec("megengine") is not None
    except (ImportError, ValueError):
        return False


def megengine_missing(feature: str = DEFAULT_FEATURE):
    """The one-line error for `feature` where MegEngine is not installed: what, and how to get it."""
    from mspn_cli.errors import MegEngineMissing

    if sys.version_info[:2] <= (3, 10):
        how = f"pip install '{MEGENGINE_REQUIREMENT}'"
    else:
        how = f"pip install '{MEGENGINE_REQUIREMENT}' on Python 3.10 (this is Python {sys.version_info[0]}.{sys.version_info[1]})"
    return MegEngineMissing(f"{feature} needs MegEngine 1.13, which installs on CPython 3.10 only: {how}")


def require_megengine(feature: str = DEFAULT_FEATURE) -> None:
    """Raise `megengine_missing(feature)` unless MegEngine is installed (imports nothing)."""
    if not megengine_installed():
        raise megengine_missing(feature)


# Whether import_megengine() has run MegEngine's quiet first operation in this process.
_initialised = False


def import_megengine(feature: str = DEFAULT_FEATURE):
    """Import and return the `megengine` module without its CUDA chatter.

    Where MegEngine is not installed: errors.MegEngineMissing (a UsageError and a
    ModuleNotFoundError) saying that `feature` needs it and how to get it.
    """
    global _initialised
    if _initialised:
        return sys.modules["megengine"]
    require_megengine(feature)
    cap_heap_growth()
    megengine = import_megengine_modules()
    with silenced_stderr():
        # The first device query and the first tensor initialise the compute node,
        # which is when the driver messages are printed: do both in here. (Decided by
        # this flag, not by "megengine" in sys.modules: whoever imported MegEngine
        # before may not have run anything yet.)
        megengine.is_cuda_available()
        (megengine.tensor([0.0]) + 1).numpy()
    _initialised = True
    return megengine


def import_megengine_modules():
    """`megengine` with its functional and module packages, imported quietly, running nothing.

    Enough to define networks. No operation runs, so MegEngine's event-polling thread,
    which takes about a third of a core once started, does not start yet; the first
    operation prints the driver messages unless import_megengine() ran it.
    """
    with silenced_stderr():
        import megengine
        import megengine.functional  # noqa: F401
        import megengine.module  # noqa: F401

        megengine.logger.set_log_level("ERROR")
    return megengine


def gpu_count() -> int:
    mge = import_megengine("--device gpu")
    with silenced_stderr():
        return int(mge.get_device_count("gpu"))


def silence_exit_chatter() -> None:
    """Point fd 2 at /dev/null once the interpreter shuts down.

    MegEngine's CUDA stub prints "failed to load cuda func" lines from C++ destructors
    at exit. atexit handlers run last-registered-first, so registering after the import
    runs this before MegEngine's own teardown.
    """
    import atexit

    def _redirect() -> None:
        try:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
        except (OSError, ValueError):
            pass

    atexit.register(_redirect)
