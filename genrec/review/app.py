"""``genrec review``: the catalog-audit queue as a small FastAPI app for human reviewers on loopback.

Routes: ``GET /`` (the page), ``GET /api/cases?offset=&limit=&status=all|open|decided``, ``GET
/api/cases/{item_id}``, ``PUT /api/cases/{item_id}/decision`` (``{"decision": "label_wrong"|"code_wrong"|
"ambiguous", "proposed_category"?, "note"?, "reviewer"?, "base_version"?}``), ``GET /api/categories``. Every
refusal is a JSON 4xx ``{"error", "message"}``: unknown product 404, unknown decision or over-long note 422,
malformed JSON 400, a stale ``base_version`` 409."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse

from genrec.review.store import MAX_CATEGORY, MAX_NOTE, Decision, ReviewError, ReviewStore
from genrec.run.layout import REVIEW_DB_FILE

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "static" / "review.html"
INT64 = dict(ge=-(2**63), le=2**63 - 1)


class DecisionBody(BaseModel):
    """A reviewer's verdict on one case (unknown fields refused, no type coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decision: str  # checked against the known decisions by the store, so the error names them
    proposed_category: Annotated[str, Field(max_length=MAX_CATEGORY)] | None = None
    note: str = ""  # length checked by the store (note_too_long)
    reviewer: Annotated[str, Field(max_length=100)] = ""
    base_version: Annotated[int, Field(ge=0)] | None = None


def _error(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def create_review_app(store: ReviewStore, title: str = "genrec review") -> FastAPI:
    """The review app over ``store`` (already loaded with the audit)."""
    app = FastAPI(title=title, summary="Catalog audit review queue")
    app.state.store = store

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/api/cases")
    def cases(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              status: Literal["all", "open", "decided"] = "all") -> dict:
        return store.cases(offset, limit, status)

    @app.get("/api/cases/{item_id}")
    def case(item_id: Annotated[int, PathParam(**INT64)]) -> dict:
        return store.case(item_id)

    @app.put("/api/cases/{item_id}/decision")
    def decide(item_id: Annotated[int, PathParam(**INT64)], body: DecisionBody) -> dict:
        return store.decide(item_id, Decision(**body.model_dump()))

    @app.get("/api/categories")
    def categories() -> list[str]:
        return store.categories()

    @app.exception_handler(ReviewError)
    async def review_error(request: Request, exc: ReviewError):
        return _error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "request body is not valid JSON")
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
        return _error(422, "invalid_request", "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5]),
                      details=details[:20])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    return app


def open_review(run: Path, db: Path | None = None, min_support: int = 5, top: int | None = None) -> tuple[ReviewStore, dict]:
    """Audit ``run``'s codebook and load the cases into the database ``db`` (default ``RUN/review.sqlite``),
    keeping the decisions whose case did not change; returns the store and what the load kept."""
    from genrec.run.semids import audit_run
    from semid.store import load_codebook

    audit = audit_run(Path(run), min_support=min_support, top=top)  # a missing run fails here, creating nothing
    store = ReviewStore(db or Path(run) / REVIEW_DB_FILE)
    return store, store.load_audit(audit, load_codebook(Path(run)).codebook_version)
