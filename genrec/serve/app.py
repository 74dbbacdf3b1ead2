"""The HTTP API of ``genrec serve``: ``create_app(run, settings)`` loads a run and returns the FastAPI app.
Routes: POST /v1/retrieve, GET /v1/items/{item_id}, GET /v1/sids/{sid}, GET /healthz, GET /metrics,
POST /admin/reload. Retrieval goes through the micro-batcher; every refusal is a JSON 4xx."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, FastAPI, Path as PathParam, Query as QueryParam, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse

from genrec.serve.batcher import MicroBatcher, ShuttingDown
from genrec.serve.errors import ApiError, error_response
from genrec.serve.metrics import ServeMetrics
from genrec.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, InternalErrorMiddleware, MetricsMiddleware
from genrec.serve.model import ModelSlot, ServedModel
from genrec.serve.playground import router as playground_router
from genrec.serve.schemas import (
    INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, ErrorResponse, HealthResponse, ItemResponse, ReloadRequest,
    ReloadResponse, RetrievedItem, RetrieveRequest, RetrieveResponse, SidResponse,
)
from genrec.serve.settings import ServeSettings
from semid.catalog import DataError

log = logging.getLogger(__name__)
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 415, 422, 503)}

router = APIRouter()


@router.post("/v1/retrieve", response_model=RetrieveResponse, responses=ERRORS)
async def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
    """The k products most likely next after ``history``; unknown history ids are skipped and reported."""
    state = request.app.state
    model = state.slot.current  # one snapshot: checked against and decoded by the same model
    query, skipped = model.query(body.history, body.retailer_id, body.k, body.exclude_history, state.settings)
    found = await state.batcher.submit(model.retriever, query)
    return RetrieveResponse(
        items=[RetrievedItem(item_id=c.item_id, sid=c.sid, score=c.score) for c in found],
        codebook_version=model.codebook_version, model_version=model.model_version, skipped=skipped,
    )


@router.get("/v1/items/{item_id}", response_model=ItemResponse, responses=ERRORS)
async def item(item_id: Annotated[int, PathParam(ge=INT64_MIN, le=INT64_MAX)], request: Request) -> ItemResponse:
    """A product's Semantic ID."""
    model = request.app.state.slot.current
    return ItemResponse(item_id=item_id, sid=model.sid_of(item_id), codebook_version=model.codebook_version)


@router.get("/v1/sids/{sid}", response_model=SidResponse, responses=ERRORS)
async def sid_products(
    sid: str, request: Request,
    retailer_id: Annotated[int | None, QueryParam(ge=INT32_MIN, le=INT32_MAX)] = None,
) -> SidResponse:
    """The products with Semantic ID ``sid`` (those ``retailer_id`` stocks, when given), most popular first."""
    model = request.app.state.slot.current
    spelled, items = model.products_of(sid, retailer_id)
    return SidResponse(sid=spelled, retailer_id=retailer_id, items=items, codebook_version=model.codebook_version)


@router.get("/healthz", response_model=HealthResponse)
async def healthz(request: Request) -> HealthResponse:
    """Liveness and what is served; open without the API key."""
    state = request.app.state
    model = state.slot.current
    return HealthResponse(status="ok", model_version=model.model_version, codebook_version=model.codebook_version,
                          items=len(model.retriever.index), queued=state.batcher.queued)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition."""
    return PlainTextResponse(request.app.state.metrics.render(), media_type=PROMETHEUS_TYPE)


@router.post("/admin/reload", response_model=ReloadResponse, responses=ERRORS)
async def reload(request: Request, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load a run (default: the current run folder again) in the background and swap it in; requests in
    flight finish on the old model. A run that fails to load leaves the old one serving (422)."""
    state = request.app.state
    previous = state.slot.current.model_version
    start = time.perf_counter()
    model = await _reload(state.slot, state.metrics, None if body is None or body.run is None else Path(body.run))
    return ReloadResponse(run=str(model.run), model_version=model.model_version,
                          codebook_version=model.codebook_version, previous_model_version=previous,
                          seconds=round(time.perf_counter() - start, 3))


async def _reload(slot: ModelSlot, metrics: ServeMetrics, run: Path | None) -> ServedModel:
    """``slot.reload`` with the outcome counted; a load failure becomes ApiError 422."""
    try:
        model = await slot.reload(run)
    except Exception as e:  # whatever breaks while loading a run, the old model keeps serving
        metrics.observe_reload(False)
        raise ApiError(422, "reload_failed", f"could not load run {run or slot.current.run}: {e}") from None
    metrics.observe_reload(True)
    return model


def _install_handlers(app: FastAPI) -> None:
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

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown):
        return error_response(request.scope, 503, "shutting_down", str(exc))


def _watch_sighup(slot: ModelSlot, metrics: ServeMetrics, tasks: set) -> bool:
    """Reload the current run folder on SIGHUP (only possible when serving from the main thread)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()

    async def reload_logged() -> None:
        try:
            await _reload(slot, metrics, None)
        except ApiError as e:
            log.error("SIGHUP reload: %s", e.message)

    def on_signal() -> None:
        task = loop.create_task(reload_logged())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_signal)
    return True


def create_app(run: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """Load ``run`` (a folder written by ``genrec train``; DataError when it is not one) and build the app.
    The API key is read now from the environment variable ``settings.api_key_env``."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    model = ServedModel.load(Path(run), settings.beam_width, settings.device, settings.dtype)
    def show(m: ServedModel) -> None:
        metrics.set_model(m.model_version, m.codebook_version, str(m.run))

    slot = ModelSlot(model, settings, on_swap=show)
    show(model)
    batcher = MicroBatcher(settings.max_batch, settings.max_wait_ms / 1000.0, metrics.observe_batch)
    api_key = os.environ.get(settings.api_key_env) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        reloads: set = set()
        hup = _watch_sighup(slot, metrics, reloads)
        try:
            yield
        finally:  # uvicorn has finished the requests in flight (or given up on them): drain what is queued
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await batcher.close()

    app = FastAPI(title="genrec", summary="Generative retrieval over Semantic IDs", lifespan=lifespan)
    app.state.settings, app.state.slot, app.state.batcher, app.state.metrics = settings, slot, batcher, metrics
    app.include_router(router)
    app.include_router(playground_router)  # GET / (the playground page), substitutes, catalog search
    _install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # innermost
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=list(router.routes))  # outermost
    return app
