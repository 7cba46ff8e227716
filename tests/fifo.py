"""Named pipes that hold a child `mspn` at one input until the test lets it go.

A pipe is released by a writer that opens it *blocking*: that open returns only once the
child has opened the read end, so the release can never come too early (an O_NONBLOCK
open fails with ENXIO while no reader is there, and a child that opened the pipe after
such a release would wait for ever). The writer runs on a thread; when the block ends
and no reader ever came (the child stopped before reaching the pipe), the test opens the
read end itself so the writer returns.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def fed(pipe: Path, data: bytes = b""):
    """Inside the block: as soon as a reader opens `pipe`, write `data` and close (an end of file).

    With no data the reader sees an empty file: the input fails to decode, which is what a
    test wants from an input it never meant to finish.
    """

    def write():
        with open(pipe, "wb") as handle:  # blocks until the child opens the read end
            handle.write(data)

    writer = threading.Thread(target=write, daemon=True, name=f"feed {Path(pipe).name}")
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():  # no reader came: open the read end so the writer returns
            os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=30)
