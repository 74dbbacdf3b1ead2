"""Pure ASGI middleware, outermost first: metrics (every response counted and timed, by route template),
internal errors (a bug becomes a logged JSON 500, the connection stays usable), the optional API key (bearer
token; /healthz and /readyz stay open), the body limit (413 before any parsing, from Content-Length or, for
chunked bodies, while reading) and admission (503 while the retrieval queue is full, before the body is
parsed)."""
from __future__ import annotations

import hmac
import logging
import time

from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genrec.serve.batcher import MicroBatcher, Unavailable
from genrec.serve.errors import ARRIVAL_KEY, ERROR_CODE_KEY, error_response, unavailable_response
from genrec.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/"})  # answered without the API key (probes; the playground page holds no secret)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class MetricsMiddleware:
    """Counts and times every HTTP response; the route label is the route's template (``other`` for paths
    no route matches), so labels stay few whatever paths clients send. Requests refused before routing (401,
    413) are matched against ``routes``."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: list) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def _route(self, scope: Scope) -> str:
        routed = scope.get("route")  # set by the router once it has matched
        if routed is not None and hasattr(routed, "path"):
            return routed.path
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        scope.setdefault("state", {})[ARRIVAL_KEY] = start  # request deadlines count from here
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            error = scope.get("state", {}).get(ERROR_CODE_KEY)
            self.metrics.observe_request(self._route(scope), scope["method"], status,
                                         time.perf_counter() - start, error)


class InternalErrorMiddleware:
    """An exception no handler turned into a response is logged and answered with a JSON 500 (if nothing
    was sent yet) instead of reaching the server, which would drop the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as e:  # a bug, not bad input: log it, answer if we still can
            log.exception("error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_response(scope, 500, "internal_error", f"internal error: {type(e).__name__}")
                await response(scope, receive, send)


class ApiKeyMiddleware:
    """With a key set, every path but the probes needs ``Authorization: Bearer <key>`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.expected is None or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization") or b""
        if not hmac.compare_digest(given, self.expected):
            reason = "missing" if not given else "wrong"
            response = error_response(scope, 401, "unauthorized",
                                      f"API key {reason}: send 'Authorization: Bearer <key>'")
            response.headers["WWW-Authenticate"] = "Bearer"
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reads the whole request body up front, refusing with 413 as soon as it is known to exceed
    ``max_bytes`` (a declared Content-Length, or the bytes received so far of a chunked body), then hands
    the body on to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, scope: Scope) -> JSONResponse:
        return error_response(scope, 413, "body_too_large", f"request body exceeds {self.max_bytes} bytes",
                              limit_bytes=self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope)(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope)(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AdmissionMiddleware:
    """Refuses requests to ``paths`` with 503 + Retry-After while the batcher cannot queue them (queue full,
    shutting down), before their JSON is parsed and checked: under overload a refusal costs as little as it
    can. Placed inside the body limit, so the body has been read off the connection."""

    def __init__(self, app: ASGIApp, batcher: MicroBatcher, paths: tuple[str, ...]) -> None:
        self.app, self.batcher, self.paths = app, batcher, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            try:
                self.batcher.admit()
            except Unavailable as e:
                return await unavailable_response(scope, e.code, e.message, e.retry_after_s)(scope, receive, send)
        return await self.app(scope, receive, send)
