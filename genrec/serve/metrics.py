"""Prometheus text exposition (format 0.0.4) written by hand: request counts by route and status, errors by
code, request latency, batch sizes and batch decode time, the model being served. Updates may come from
any thread; one lock keeps them whole."""
from __future__ import annotations

import math
import threading
from typing import Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    """A label value as the exposition format spells it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    """A counter family: one monotone value per label combination."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Gauge(Counter):
    """A gauge family: a value per label combination that may go anywhere."""

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = float(value)

    def render(self) -> list[str]:
        lines = super().render()
        lines[1] = f"# TYPE {self.name} gauge"
        return lines


class Histogram:
    """A histogram family: cumulative bucket counts, sum and count per label combination."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], label_names: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self.bounds = tuple(sorted(float(b) for b in buckets)) + (math.inf,)
        self.series: dict[Labels, list] = {}  # labels -> [bucket counts (not cumulative), sum, count]

    def observe(self, value: float, labels: Labels = ()) -> None:
        series = self.series.setdefault(labels, [[0] * len(self.bounds), 0.0, 0])
        series[0][next(i for i, b in enumerate(self.bounds) if value <= b)] += 1
        series[1] += value
        series[2] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, (counts, total, count) in sorted(self.series.items()):
            running = 0
            for bound, n in zip(self.bounds, counts):
                running += n
                le = 'le="' + _number(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {count}")
        return lines


class ServeMetrics:
    """The server's metrics; ``render`` gives the /metrics page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = Counter("genrec_requests_total", "HTTP requests by route, method and status.",
                                ("route", "method", "status"))
        self.errors = Counter("genrec_request_errors_total", "Refused or failed requests by route and error code.",
                              ("route", "code"))
        self.latency = Histogram("genrec_request_duration_seconds", "Time from request to response, by route.",
                                 LATENCY_BUCKETS, ("route",))
        self.batch_size = Histogram("genrec_batch_size", "Requests decoded together in one batched beam search.",
                                    BATCH_BUCKETS)
        self.batch_seconds = Histogram("genrec_batch_duration_seconds", "Wall time of one batched decode.",
                                       LATENCY_BUCKETS)
        self.reloads = Counter("genrec_reloads_total", "Model reloads by outcome.", ("outcome",))
        self.model = Gauge("genrec_model_info", "The model being served (value 1).",
                           ("model_version", "codebook_version", "run"))

    def observe_request(self, route: str, method: str, status: int, seconds: float, error: str | None) -> None:
        """One finished request; ``error`` is its error code when it was refused or failed."""
        with self._lock:
            self.requests.inc((route, method, str(status)))
            self.latency.observe(seconds, (route,))
            if error is not None or status >= 400:
                self.errors.inc((route, error or f"http_{status}"))

    def observe_batch(self, size: int, seconds: float) -> None:
        """One batched decode of ``size`` requests."""
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def observe_reload(self, ok: bool) -> None:
        with self._lock:
            self.reloads.inc(("ok" if ok else "failed",))

    def set_model(self, model_version: str, codebook_version: str, run: str) -> None:
        """Record the model now served (the previous one's series is dropped)."""
        with self._lock:
            self.model.values.clear()
            self.model.set((model_version, codebook_version, run), 1)

    def render(self) -> str:
        """The exposition text."""
        with self._lock:
            families = (self.requests, self.errors, self.latency, self.batch_size, self.batch_seconds,
                        self.reloads, self.model)
            return "\n".join(line for family in families for line in family.render()) + "\n"
