"""Running the app: ``serve`` (the ``genrec serve`` command: uvicorn in the foreground until SIGINT/SIGTERM,
then a drain of ``--drain-s`` seconds (/readyz says 'draining', requests are still served) and a graceful
shutdown) and ``ServerThread`` (uvicorn on a free loopback port in a background thread, for tests and
benchmarks)."""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from genrec.serve.app import create_app
from genrec.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def _uvicorn_config(app: FastAPI, settings: ServeSettings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level=settings.log_level, access_log=settings.access_log,
        timeout_graceful_shutdown=settings.shutdown_timeout_s, timeout_keep_alive=int(round(settings.keep_alive_s)),
        lifespan="on",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM/SIGINT, first drains for ``drain_s`` seconds (the app's /readyz
    answers 503 while requests are still served), then shuts down gracefully; a second signal ends the
    drain at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_s: float) -> None:
        super().__init__(config)
        self.app, self.drain_s = app, drain_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.drain_s <= 0 or self._timer is not None:
            if self._timer is not None:
                self._timer.cancel()
            return super().handle_exit(sig, frame)
        self.app.state.draining = True
        log.info("draining for %.1fs before shutting down", self.drain_s)
        self._timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        self._timer.daemon = True
        self._timer.start()


def serve(run: Path, settings: ServeSettings) -> None:
    """Serve ``run`` over HTTP until interrupted; in-flight requests finish before the process exits and
    SIGHUP (with --allow-reload) reloads the run folder without dropping requests."""
    app = create_app(run, settings)
    if not _is_loopback(settings.host) and not os.environ.get(settings.api_key_env):
        log.warning("listening on %s without an API key (set %s to require one)", settings.host, settings.api_key_env)
    _DrainingServer(_uvicorn_config(app, settings, settings.host, settings.port), app, settings.drain_s).run()


class SignalledServer(uvicorn.Server):
    """A uvicorn server that sets ``ready`` once it accepts connections (or ``failed`` if startup fails),
    so a caller waits on an event instead of polling ``started``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()  # also on failure: the waiter then sees ``started`` False

    def wait_started(self, timeout_s: float, what: str) -> None:
        """Block until the server accepts connections; RuntimeError if it did not within ``timeout_s``."""
        if not self.ready.wait(timeout_s) or not self.started:
            raise RuntimeError(f"{what} did not start")


class ServerThread:
    """uvicorn serving ``app`` on a free port of 127.0.0.1 in a daemon thread; use as a context manager
    (``url`` is set once it accepts connections) or call ``start`` / ``stop``."""

    def __init__(self, app: FastAPI, settings: ServeSettings | None = None, start_timeout_s: float = 30.0) -> None:
        settings = settings or app.state.settings
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = SignalledServer(_uvicorn_config(app, settings, "127.0.0.1", self.port))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="genrec-serve", daemon=True)
        self._start_timeout_s = start_timeout_s

    def start(self) -> "ServerThread":
        """Start serving and wait until the server accepts connections."""
        self._thread.start()
        self.server.wait_started(self._start_timeout_s, f"server on {self.url}")
        return self

    def drain(self) -> None:
        """Begin draining: /readyz answers 503 'draining' while requests are still served (``stop`` ends it)."""
        self.app.state.draining = True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful shutdown: stop accepting, finish requests in flight, drain the batcher."""
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
