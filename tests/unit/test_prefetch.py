"""io.sources.prefetch: order, errors handed over, how far it reads ahead, and stopping early.

The verdicts wait on events the loads set, never on the clock.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from mspn_cli.errors import Interrupted
from mspn_cli.io.sources import prefetch


def test_results_come_in_input_order_with_errors_handed_over():
    def load(n):
        if n == 3:
            raise ValueError("bad three")
        return n * 10

    got = list(prefetch(range(6), load, depth=2))
    assert [item for item, _, _ in got] == list(range(6))
    assert [value for _, value, _ in got] == [0, 10, 20, None, 40, 50]
    assert isinstance(got[3][2], ValueError) and [e for _, _, e in got if e is not None] == [got[3][2]]


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_reads_at_most_depth_items_beyond_the_one_yielded(depth):
    pulled = []

    def items():
        for n in range(10):
            pulled.append(n)
            yield n

    for item, value, error in prefetch(items(), lambda n: n, depth=depth):
        assert error is None and value == item
        # The consumer holds `item`; the loader has been handed at most `depth` more.
        assert max(pulled) <= item + depth
        if item + depth < 10:
            assert max(pulled) == item + depth  # and it does read that far ahead


def _when_main_thread_waits_in_join(then) -> threading.Thread:
    """Call `then` once the main thread waits in Thread.join inside prefetch (polled: a verdict on progress, not time)."""
    main = threading.main_thread().ident

    def watch():
        while True:
            frame = sys._current_frames().get(main)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            if "_wait_for_tstate_lock" in names and "prefetch" in names:
                return then()
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_stopping_early_waits_for_the_load_in_progress_only_and_skips_the_rest():
    """Interrupted while the loader is stuck on item 1: the stop waits for that load (no decode
    may run on while the process exits) and the items queued behind it are never loaded."""
    release = threading.Event()
    started, loaded = [], []
    stuck = threading.Event()

    def load(n):
        started.append(n)
        if n == 1:
            stuck.set()
            release.wait()
        loaded.append(n)
        return n

    stream = prefetch(range(8), load, depth=4)
    assert next(stream)[1] == 0
    stuck.wait()  # the loader now blocks on item 1; items 2 to 4 are queued behind it
    watcher = _when_main_thread_waits_in_join(release.set)
    with pytest.raises(Interrupted):
        stream.throw(Interrupted(15))  # what a SIGTERM raises while the run waits here
    watcher.join(timeout=60)  # a hang guard: on success it has already released item 1
    assert release.is_set() and started == [0, 1] and loaded == [0, 1]
    assert not any(t.name == "mspn-prefetch" and t.is_alive() for t in threading.enumerate())


def test_a_consumer_that_breaks_stops_the_loader_after_what_it_was_handed():
    loaded = []

    def load(n):
        loaded.append(n)
        return n

    stream = prefetch(range(100), load, depth=3)
    for item, _, _ in stream:
        if item == 2:
            break
    stream.close()
    for thread in threading.enumerate():
        if thread.name == "mspn-prefetch":
            thread.join()  # returns: the loader was told to end
    assert set(loaded) <= set(range(2 + 3 + 1))  # never more than it was handed
