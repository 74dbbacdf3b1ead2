"""The HTTP API of ``genrec serve``: ``create_app(run, settings)`` loads a run and returns the FastAPI app.
Routes: POST /v1/retrieve, GET /v1/items/{item_id}, GET /v1/sids/{sid}, GET /healthz, GET /readyz,
GET /metrics, POST /admin/reload. Retrieval goes through the micro-batcher and its admission control (a
bounded queue, per-request deadlines: 503 with Retry-After when a request cannot be served in time); every
other refusal is a JSON 4xx. The routes are built from the settings, so /openapi.json declares every limit
the server enforces (pydantic enforces what the schema says)."""
import asyncio
import logging
import os
import re
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Header, Path as PathParam, Query as QueryParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse

from genrec.serve.batcher import MicroBatcher, Unavailable
from genrec.serve.errors import ARRIVAL_KEY, ApiError, error_response, unavailable_response
from genrec.serve.metrics import CONTENT_TYPE, ServeMetrics
from genrec.serve.middleware import (
    OPEN_PATHS, AdmissionMiddleware, ApiKeyMiddleware, BodyLimitMiddleware, InternalErrorMiddleware,
    MetricsMiddleware,
)
from genrec.serve.model import ModelSlot, ServedModel
from genrec.serve.playground import router as playground_router
from genrec.serve.schemas import (
    INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, SID_PATTERN, TIMEOUT_HEADER, ErrorResponse, HealthResponse,
    ItemResponse, ReadyResponse, ReloadRequest, ReloadResponse, RetrievedItem, RetrieveResponse, SidResponse,
    retrieve_request,
)
from genrec.serve.settings import ServeSettings
from semid.common import DataError

log = logging.getLogger(__name__)

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                          "schema": {"type": "integer", "minimum": 1}}},
}
_MEANING = {400: "body is not JSON", 401: "API key missing or wrong", 403: "reloading is off, or the run is "
            "outside --runs-root", 404: "no such product or SID", 413: "body too large", 415: "body is not JSON",
            422: "request invalid or naming what the model does not know", 500: "internal error",
            503: "overloaded (queue full, deadline unreachable or passed) or shutting down: retry after Retry-After"}


_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def _errors(*statuses: int) -> dict:
    """The error responses of a route: each with the JSON error body (and its headers), spelled out so that a
    route answering text (/metrics) still declares its errors as JSON."""
    return {s: {"description": _MEANING[s], "content": _ERROR_BODY, **({"headers": _HEADERS[s]} if s in _HEADERS
                                                                       else {})} for s in statuses}


def build_router(settings: ServeSettings, Retrieve: type[BaseModel]) -> APIRouter:
    """The routes, with the request limits of ``settings`` in their parameters and ``Retrieve`` (from
    ``retrieve_request(settings)``) as the retrieval body."""
    router = APIRouter()
    TimeoutMs = Annotated[int, Header(  # no null: a header is absent or a number
        alias=TIMEOUT_HEADER, ge=1, le=INT32_MAX,
        description="the client's own deadline in ms; it can shorten the server's "
                    f"({settings.request_timeout_ms:g} ms{', none' if not settings.request_timeout_ms else ''}), "
                    "never lengthen it")]

    @router.post("/v1/retrieve", response_model=RetrieveResponse,
                 responses=_errors(400, 401, 413, 415, 422, 500, 503))
    async def retrieve(body: Retrieve, request: Request, timeout_ms: TimeoutMs = None) -> RetrieveResponse:
        """The k products most likely next after ``history``; unknown history ids are skipped and reported.
        503 with Retry-After when the request cannot be answered within its deadline."""
        state = request.app.state
        arrived = request.scope.get("state", {}).get(ARRIVAL_KEY)  # noted by the outermost middleware
        waited = 0.0 if arrived is None else time.perf_counter() - arrived
        deadline = state.batcher.deadline(timeout_ms, waited)
        model = state.slot.current  # one snapshot: checked against and decoded by the same model
        query, skipped = model.query(body.history, body.retailer_id, body.k, body.exclude_history, state.settings,
                                     body.explain)
        found = await state.batcher.submit(model.retriever, query, deadline)
        return RetrieveResponse(
            items=[RetrievedItem(item_id=c.item_id, sid=c.sid, score=c.score, source=c.source,
                                 **({"features": c.features} if body.explain else {})) for c in found],
            codebook_version=model.codebook_version, model_version=model.model_version, skipped=skipped,
        )

    @router.get("/v1/items/{item_id}", response_model=ItemResponse, responses=_errors(401, 404, 422, 500))
    async def item(item_id: Annotated[int, PathParam(ge=INT64_MIN, le=INT64_MAX)], request: Request) -> ItemResponse:
        """A product's Semantic ID."""
        model = request.app.state.slot.current
        return ItemResponse(item_id=item_id, sid=model.sid_of(item_id), codebook_version=model.codebook_version)

    @router.get("/v1/sids/{sid}", response_model=SidResponse, responses=_errors(401, 404, 422, 500))
    async def sid_products(
        sid: Annotated[str, PathParam(pattern=SID_PATTERN, description="codewords joined by '_', e.g. 6_19_32_63")],
        request: Request, retailer_id: Annotated[int | None, QueryParam(ge=INT32_MIN, le=INT32_MAX)] = None,
    ) -> SidResponse:
        """The products with Semantic ID ``sid`` (those ``retailer_id`` stocks, when given), most popular first."""
        model = request.app.state.slot.current
        spelled, items = model.products_of(sid, retailer_id)
        return SidResponse(sid=spelled, retailer_id=retailer_id, items=items, codebook_version=model.codebook_version)

    @router.get("/healthz", response_model=HealthResponse, responses=_errors(500))
    async def healthz(request: Request) -> HealthResponse:
        """Liveness and what is served; open without the API key, answered under any load."""
        state = request.app.state
        model = state.slot.current
        return HealthResponse(status="ok", model_version=model.model_version, codebook_version=model.codebook_version,
                              items=len(model.retriever.index), queued=state.batcher.queued)

    @router.get("/readyz", response_model=ReadyResponse,
                responses={503: {"model": ReadyResponse, "description": "loading a run or draining"},
                           **_errors(500)})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 503 while a run is loading or the server drains before shutting down; open without the
        API key."""
        state = request.app.state
        status = "draining" if state.draining else "reloading" if state.slot.reloading else "ready"
        body = ReadyResponse(ready=status == "ready", status=status, queued=state.batcher.queued,
                             max_queue=state.settings.queue_limit)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @router.get("/metrics", response_class=PlainTextResponse, responses=_errors(401, 500))
    async def metrics(request: Request) -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(request.app.state.metrics.render(), media_type=CONTENT_TYPE)

    @router.post("/admin/reload", response_model=ReloadResponse,
                 responses=_errors(400, 401, 403, 413, 415, 422, 500))
    async def reload(request: Request, body: ReloadRequest | None = None) -> ReloadResponse:
        """Load a run (``run``, relative to --runs-root; default: the served run folder again) in the
        background and swap it in; requests in flight finish on the old model. Off unless the server was
        started with --allow-reload (403). A run that fails to load leaves the old one serving (422)."""
        state = request.app.state
        if not state.settings.allow_reload:
            state.metrics.observe_reload("refused")
            raise ApiError(403, "reload_disabled", "reloading is off: start the server with --allow-reload")
        target = _reload_target(state.settings, None if body is None else body.run)
        previous = state.slot.current.model_version
        start = time.perf_counter()
        model = await _reload(state.slot, state.metrics, state.settings, target)
        return ReloadResponse(run=_shown(model.run, state.settings), model_version=model.model_version,
                              codebook_version=model.codebook_version, previous_model_version=previous,
                              seconds=round(time.perf_counter() - start, 3))

    return router


def _runs_root(settings: ServeSettings) -> Path | None:
    return Path(settings.runs_root).resolve() if settings.runs_root else None


def _reload_target(settings: ServeSettings, run: str | None) -> Path | None:
    """The folder a reload of ``run`` loads (None: the served run again); ApiError 403 unless it lies under
    --runs-root once every link is resolved."""
    if run is None:
        return None
    root = _runs_root(settings)
    if root is None:
        raise ApiError(403, "outside_runs_root", "no --runs-root is set: only the served run can be reloaded "
                       "(send no run)")
    target = (root / run).resolve()
    if not target.is_relative_to(root):
        raise ApiError(403, "outside_runs_root", f"run {run!r} lies outside --runs-root")
    return target


def _shown(path: Path, settings: ServeSettings) -> str:
    """A run folder as the API may show it: relative to --runs-root, else its name alone."""
    root = _runs_root(settings)
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name


def _scrub(text: str, settings: ServeSettings) -> str:
    """``text`` with --runs-root written as '.', and any other absolute path as <path>."""
    root = _runs_root(settings)
    if root is not None:
        text = text.replace(str(root) + os.sep, "").replace(str(root), ".")
    return re.sub(r"(?<![\w.])/[^\s'\":,;)]+", "<path>", text)


async def _reload(slot: ModelSlot, metrics: ServeMetrics, settings: ServeSettings, run: Path | None) -> ServedModel:
    """``slot.reload`` with the outcome counted; a load failure becomes ApiError 422 (no host paths in it)."""
    try:
        model = await slot.reload(run)
    except Exception as e:  # whatever breaks while loading a run, the old model keeps serving
        metrics.observe_reload("failed")
        name = _shown(run or slot.current.run, settings)
        raise ApiError(422, "reload_failed", _scrub(f"could not load run {name!r}: {e}", settings)) from None
    metrics.observe_reload("ok")
    return model


_RENAMED = {  # a single validation error that has its own code (and wording) since before the schema held it
    (("body", "k"), "greater_than_equal"): "k_out_of_range",
    (("body", "k"), "less_than_equal"): "k_out_of_range",
    (("body", "history"), "too_long"): "history_too_long",
    (("path", "sid"), "string_pattern_mismatch"): "invalid_sid",
}


def _install_handlers(app: FastAPI, settings: ServeSettings) -> None:
    """Every refusal as ``{"error", "message", ...}``."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(request.scope, exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            reason = (bad_json[0].get("ctx") or {}).get("error", "")
            return error_response(request.scope, 400, "malformed_json", f"request body is not valid JSON: {reason}")
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
            return error_response(request.scope, 415, "unsupported_media_type",
                                  f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})")
        details = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
        if len(errors) == 1 and (tuple(errors[0]["loc"]), errors[0]["type"]) in _RENAMED:
            e = errors[0]
            code = _RENAMED[tuple(e["loc"]), e["type"]]
            message = {
                "k_out_of_range": lambda: f"k must be between 1 and {settings.max_k}, got {e['input']}",
                "history_too_long": lambda: f"history has {len(e['input'])} items; at most {settings.max_history} "
                                            "are accepted",
                "invalid_sid": lambda: f"{e['input']!r} is not a SID: codewords (decimal) joined by '_'",
            }[code]()
            return error_response(request.scope, 422, code, message, details=details)
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(request.scope, 422, "invalid_request", message, details=details[:20])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(request.scope, exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return error_response(request.scope, 422, "invalid_request", str(exc))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable):
        return unavailable_response(request.scope, exc.code, exc.message, exc.retry_after_s)


def _watch_sighup(slot: ModelSlot, metrics: ServeMetrics, settings: ServeSettings, tasks: set) -> bool:
    """On SIGHUP reload the served run folder (with --allow-reload; otherwise log that it is off, rather
    than die of the signal). Only possible when serving from the main thread."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()

    async def reload_logged() -> None:
        try:
            await _reload(slot, metrics, settings, None)
        except ApiError as e:
            log.error("SIGHUP reload: %s", e.message)

    def on_signal() -> None:
        if not settings.allow_reload:
            metrics.observe_reload("refused")
            log.warning("SIGHUP ignored: reloading is off (start the server with --allow-reload)")
            return
        task = loop.create_task(reload_logged())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_signal)
    return True


def _openapi(app: FastAPI, keyed: bool, bodies: list[type[BaseModel]]) -> Callable[[], dict]:
    """The OpenAPI document, with the bearer key declared on every route it guards when one is set. The
    request ``bodies`` (and the error body) are written as pydantic writes them (FastAPI's document model
    turns integer bounds into floats: 2**63 - 1 would read 9.223372036854776e+18, past int64)."""

    def build() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for model in bodies:
                doc["components"]["schemas"][model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}")
            if keyed:
                doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, operations in doc["paths"].items():
                    for operation in operations.values():
                        if path not in OPEN_PATHS:
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    return build


def create_app(run: str | Path, settings: ServeSettings | None = None,
               clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """Load ``run`` (a folder written by ``genrec train``; DataError when it is not one) and build the app.
    The API key is read now from the environment variable ``settings.api_key_env``. Request deadlines are
    read from ``clock`` (monotonic seconds)."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    model = ServedModel.load(Path(run), settings.beam_width, settings.device, settings.dtype)

    def show(m: ServedModel) -> None:
        metrics.set_model(m.model_version, m.codebook_version, str(m.run))

    slot = ModelSlot(model, settings, on_swap=show)
    show(model)
    batcher = MicroBatcher(settings.max_batch, settings.max_wait_ms / 1000.0, metrics.observe_batch,
                           max_queue=settings.queue_limit, timeout_s=settings.request_timeout_s,
                           headroom=settings.deadline_headroom, clock=clock,
                           on_shed=metrics.observe_shed, on_drop=metrics.observe_deadline_drop)
    metrics.watch_queue(lambda: batcher.queued, settings.queue_limit)
    api_key = os.environ.get(settings.api_key_env) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        reloads: set = set()
        hup = _watch_sighup(slot, metrics, settings, reloads)
        try:
            yield
        finally:  # uvicorn has finished the requests in flight (or given up on them): drain what is queued
            app.state.draining = True
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await batcher.close()

    app = FastAPI(title="genrec", summary="Generative retrieval over Semantic IDs", lifespan=lifespan)
    app.state.settings, app.state.slot, app.state.batcher, app.state.metrics = settings, slot, batcher, metrics
    app.state.draining = False  # set by ``drain`` (SIGTERM with --drain-s, ServerThread.drain) and at shutdown
    retrieve_body = retrieve_request(settings)
    router = build_router(settings, retrieve_body)
    app.include_router(router)
    app.include_router(playground_router)  # GET / (the playground page), substitutes, catalog search
    app.openapi = _openapi(app, api_key is not None, [retrieve_body, ReloadRequest, ErrorResponse])
    _install_handlers(app, settings)
    app.add_middleware(AdmissionMiddleware, batcher=batcher, paths=("/v1/retrieve",))  # innermost
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=list(router.routes))  # outermost
    return app
