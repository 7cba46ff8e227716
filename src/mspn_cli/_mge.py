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


def import_megengine():
    """Import and return the `megengine` module without its CUDA chatter."""
    if "megengine" in sys.modules:
        return sys.modules["megengine"]
    with silenced_stderr():
        import megengine
        import megengine.functional  # noqa: F401
        import megengine.module  # noqa: F401

        megengine.logger.set_log_level("ERROR")
        # The first device query and the first tensor initialise the compute node,
        # which is when the driver messages are printed: do both in here.
        megengine.is_cuda_available()
        (megengine.tensor([0.0]) + 1).numpy()
    return megengine


def gpu_count() -> int:
    mge = import_megengine()
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
