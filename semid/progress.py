"""Progress that suits where the output goes: a tqdm bar when stderr is a terminal; off one (a log file, a
pipe, CI) a few INFO lines instead, one at each quarter of the work and one at the end, never a stream of
carriage returns. ``progress(...)`` replaces ``tqdm(total=...)`` in our loops."""
from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

MILESTONES = 4  # off a terminal: a line at 25%, 50%, 75% and 100%


def on_terminal() -> bool:
    """Whether stderr, where progress goes, is an interactive terminal."""
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0,
             logger: logging.Logger | None = None, **bar_options):
    """A tqdm bar on a terminal (``bar_options`` go to it), ``LogProgress`` off one, a no-op when not
    ``enabled``. All three take ``update(n)``, ``set_postfix(**values)`` and ``close()``, and are context
    managers."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if on_terminal():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, **bar_options)
    return LogProgress(total, desc, unit, initial, logger or logging.getLogger(desc))


class LogProgress:
    """Progress as INFO log lines: ``desc: done/total unit (pct%), elapsed, postfix`` when a quarter of the
    work is crossed and once at the end."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, logger: logging.Logger) -> None:
        self.total, self.desc, self.unit, self.n, self.log = max(int(total), 0), desc, unit, int(initial), logger
        self.postfix = ""
        self._start = time.perf_counter()
        self._next = self._milestone_after(self.n)
        self._closed = False

    def _milestone_after(self, n: int) -> int:
        """The first quarter mark above ``n`` (in units of work)."""
        if not self.total:
            return 1
        quarter = n * MILESTONES // self.total + 1
        return -(-quarter * self.total // MILESTONES)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and self.n < self.total:
            self._say()
            self._next = self._milestone_after(self.n)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._say()

    def _say(self) -> None:
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        self.log.info("%s: %s/%s %s%s, %.1fs%s", self.desc, f"{self.n:,}", f"{self.total:,}", self.unit, share,
                      time.perf_counter() - self._start, extra)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
