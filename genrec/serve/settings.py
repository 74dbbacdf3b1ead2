"""Settings of ``genrec serve``: where it listens, how it batches, what it accepts. One dataclass so the CLI,
tests and benchmarks configure the server the same way; ``add_arguments`` / ``from_arguments`` turn its
fields into command-line flags (``max_wait_ms`` -> ``--max-wait-ms``, ``semid.config.add_flags``), so the two
cannot drift apart."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from semid.config import Checks, add_flags, from_flags


def _setting(default: object, help_text: str):
    """A field with its default and the one-line explanation that is also its flag's help."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class ServeSettings:
    """Everything ``create_app`` and ``serve`` need besides the run folder."""

    host: str = _setting("127.0.0.1", "address to listen on; loopback by default since the API key is optional")
    port: int = _setting(8000, "TCP port")
    max_batch: int = _setting(32, "most requests decoded in one batched beam search; 1 turns micro-batching off")
    max_wait_ms: float = _setting(5.0, "how long the oldest waiting request may wait for others to join its batch")
    max_queue: int = _setting(0, "most retrieval requests waiting for a batch; beyond it 503 with Retry-After "
                              "(0: 8 x max_batch; the deadline, not this bound, should decide at ordinary overload)")
    request_timeout_ms: float = _setting(2000.0, "deadline of a retrieval request from its arrival: one that "
                                         "cannot be answered in time gets 503 and is never decoded; clients may "
                                         "shorten it with the X-Request-Timeout-Ms header (0: no deadline)")
    deadline_headroom: float = _setting(0.2, "share of each deadline kept for what the server cannot see (the "
                                        "connection, the client): it plans to answer within the rest")
    max_history: int = _setting(1000, "longest history accepted, in items (the decoder reads only its last ones)")
    max_k: int = _setting(100, "most products one request may ask for")
    max_body_bytes: int = _setting(65_536, "larger request bodies get 413 before any parsing (chunked ones too)")
    api_key_env: str = _setting("GENREC_API_KEY", "env var holding the bearer token; unset or empty: no key")
    beam_width: int = _setting(20, "beams of the constrained search (raised to k when k is larger)")
    device: str = _setting("cpu", "torch device of the decoder")
    dtype: str = _setting("auto", "decoder weights: float32, bfloat16, or auto (bfloat16 on CUDA and on CPUs "
                          "with native bf16 matmul: batched decoding ~1.7x faster at equal recall)")
    allow_reload: bool = _setting(False, "allow POST /admin/reload and SIGHUP to load a run (off: both refused)")
    runs_root: str = _setting("", "folder of the runs a reload may load, named relative to it (empty: only the "
                              "served run folder itself can be reloaded)")
    drain_s: float = _setting(0.0, "on SIGTERM, how long /readyz answers 503 'draining' while requests are "
                              "still served, before the listener closes (load balancers' time to notice)")
    shutdown_timeout_s: float = _setting(30.0, "graceful shutdown: longest wait for requests in flight")
    keep_alive_s: float = _setting(75.0, "idle keep-alive of client connections; longer than clients' and load "
                                   "balancers' own, so a connection is never closed just as a client reuses it")
    log_level: str = _setting("info", "uvicorn's log level")
    access_log: bool = _setting(False, "log one line per request (costs throughput)")

    def __post_init__(self) -> None:
        c = Checks(self, "serve")
        c.within(0, 65535, "port")
        c.at_least(1, "max_batch", "max_history", "max_k", "max_body_bytes", "beam_width")
        c.at_least(0, "max_wait_ms", "max_queue", "request_timeout_ms", "drain_s", "shutdown_timeout_s")
        c.above(0, "keep_alive_s")
        c.within(0, 1, "deadline_headroom", open_high=True)
        c.one_of("dtype", ("auto", "float32", "bfloat16"))

    @property
    def queue_limit(self) -> int:
        """``max_queue``, or its default: eight full batches."""
        return self.max_queue or 8 * self.max_batch

    @property
    def request_timeout_s(self) -> float | None:
        return self.request_timeout_ms / 1000.0 if self.request_timeout_ms else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, with its default and help (booleans as ``--x`` / ``--no-x``)."""
    add_flags(parser, ServeSettings)


def from_arguments(args: argparse.Namespace) -> ServeSettings:
    """The settings the flags of ``add_arguments`` ask for."""
    return from_flags(ServeSettings, args)
