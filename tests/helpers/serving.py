"""Ordering a server's work by events, never by timing: ``Gate`` holds its decodes until released,
``FakeClock`` moves only when told, ``until`` waits for a state of the server (not for time to pass)."""
from __future__ import annotations

import threading

import genrec.serve.batcher as batcher_module

WAIT_S = 60.0  # upper bound of any wait on a server's state: reached only when something is broken


class Gate:
    """Stands in for the batcher's ``_decode`` (the ``gate`` fixture installs it): records each batch's size,
    signals that a decode began and holds it until released, then decodes for real."""

    def __init__(self) -> None:
        self.real = batcher_module._decode
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, jobs):
        self.sizes.append(len(jobs))
        self.entered.set()
        assert self.release.wait(WAIT_S), "gate never released"
        return self.real(jobs)


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def until(condition, timeout_s: float = WAIT_S) -> None:
    """Wait for ``condition()`` to hold (a state of the server, not time passing); fail after ``timeout_s``."""
    done = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        done.wait(0.005)
    raise AssertionError("condition not reached")
