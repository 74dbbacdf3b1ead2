"""Ordering a server's work by events, never by timing: ``Gate`` holds its decodes until released,
``SlowModel`` does too while computing (holding the GIL, as a Python-heavy beam search does), ``FakeClock``
moves only when told, ``until`` waits for a state of the server (not for time to pass)."""
from __future__ import annotations

import threading
import time

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


class SlowModel(Gate):
    """A deliberately slow model in place of ``_decode`` (the ``slow_model`` fixture installs it): each decode
    computes in pure Python until released, so it holds the GIL except when the interpreter switches threads,
    then decodes for real. Nothing it does blocks on I/O: whatever else the server does meanwhile (reading
    requests, refusing them) it does while this decode runs."""

    def __call__(self, jobs):
        self.sizes.append(len(jobs))
        self.entered.set()
        give_up = time.monotonic() + WAIT_S  # a bound on a broken test, not a timing
        spins = 0
        while not self.release.is_set():
            spins = (spins + sum(range(2000))) % 9973  # busy in the interpreter: the GIL is held
            assert time.monotonic() < give_up, "slow model never released"
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
