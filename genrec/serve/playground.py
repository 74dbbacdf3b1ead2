"""The playground of ``genrec serve``: ``GET /`` is a static page (no secret in it) to build a history from
the catalog, pick a retailer and see what ``POST /v1/retrieve`` returns, names and all; plus the catalog
routes it needs and the substitutes read off the SIDs. Every route but the page sits under /v1, so the API
key rules of the app apply to them as to any other; the page sends the key the user types.

Routes: ``GET /``, ``GET /v1/items/{item_id}/substitutes?k=&retailer_id=``, ``GET /v1/catalog/search?q=&limit=``,
``GET /v1/catalog/items?ids=..``, ``GET /v1/catalog/retailers``."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path as PathParam, Query as QueryParam, Request
from pydantic import BaseModel
from starlette.responses import HTMLResponse

from genrec.serve.errors import ApiError
from genrec.serve.schemas import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, ErrorResponse
from semid.substitutes import Substitutes

PAGE = Path(__file__).parent / "static" / "playground.html"
ERRORS = {status: {"model": ErrorResponse} for status in (401, 404, 422)}
router = APIRouter()
_LOCK = asyncio.Lock()


class CatalogItem(BaseModel):
    item_id: int
    title: str
    category: str  # "department > aisle" (root to leaf), "" where the catalog has none
    sid: str


class Substitute(BaseModel):
    item_id: int
    sid: str
    title: str
    category: str
    shared_levels: int  # leading SID codewords shared with the item
    cosine: float  # embedding cosine to the item


class SubstitutesResponse(CatalogItem):
    retailer_id: int | None
    codebook_version: str
    items: list[Substitute]  # deepest shared prefix first, then most similar


class SearchResponse(BaseModel):
    query: str
    items: list[CatalogItem]


class ItemsResponse(BaseModel):
    items: list[CatalogItem]
    unknown: list[int]


class RetailersResponse(BaseModel):
    retailers: list[int]


async def catalog_of(request: Request) -> tuple[object, Substitutes]:
    """(the served model, its run's catalog for substitutes and names), loaded once per served run."""
    model = request.app.state.slot.current
    key = (str(model.run), model.codebook_version)
    cached = getattr(request.app.state, "playground_catalog", None)
    if cached is None or cached[0] != key:
        async with _LOCK:
            cached = getattr(request.app.state, "playground_catalog", None)
            if cached is None or cached[0] != key:
                subs = await asyncio.get_running_loop().run_in_executor(None, Substitutes.from_run, model.run)
                lower = np.asarray([t.lower() for t in subs.titles], dtype=object)
                cached = (key, subs, lower)
                request.app.state.playground_catalog = cached
    return model, cached[1]


def _describe(subs: Substitutes, row: int) -> dict:
    return {"item_id": int(subs.item_ids[row]), "title": str(subs.titles[row]), "category": str(subs.categories[row]),
            "sid": str(subs.sids[row])}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    """The playground page (static; it calls the API from the browser)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/v1/items/{item_id}/substitutes", response_model=SubstitutesResponse, responses=ERRORS)
async def substitutes(
    item_id: Annotated[int, PathParam(ge=INT64_MIN, le=INT64_MAX)], request: Request,
    k: Annotated[int, QueryParam(ge=1, le=100)] = 10,
    retailer_id: Annotated[int | None, QueryParam(ge=INT32_MIN, le=INT32_MAX)] = None,
) -> dict:
    """Products ranked by the depth of the SID prefix they share with ``item_id``, then by embedding cosine,
    among those ``retailer_id`` stocks (the whole catalog without one)."""
    model, subs = await catalog_of(request)
    model.check_retailer(retailer_id)
    row = subs.row_of(item_id)
    if row is None:
        raise ApiError(404, "unknown_item", f"item {item_id} is not in this model's catalog", item_id=item_id)
    stocked = None if retailer_id is None else model.retriever.index.stocked(retailer_id)
    return {**_describe(subs, row), "retailer_id": retailer_id, "codebook_version": model.codebook_version,
            "items": subs.for_item(item_id, k=k, stocked=stocked)}


@router.get("/v1/catalog/search", response_model=SearchResponse, responses=ERRORS)
async def search(request: Request, q: Annotated[str, QueryParam(min_length=1, max_length=200)],
                 limit: Annotated[int, QueryParam(ge=1, le=50)] = 20) -> dict:
    """Products whose id is ``q`` or whose name contains it (case-insensitive), at most ``limit``."""
    _, subs = await catalog_of(request)
    lower = request.app.state.playground_catalog[2]
    q = q.strip().lower()
    rows: list[int] = []
    if q.isdigit() and (row := subs.row_of(int(q))) is not None:
        rows.append(row)
    for row in range(len(lower)):
        if len(rows) >= limit:
            break
        if q in lower[row] and row not in rows:
            rows.append(row)
    return {"query": q, "items": [_describe(subs, r) for r in rows]}


@router.get("/v1/catalog/items", response_model=ItemsResponse, responses=ERRORS)
async def items(request: Request, ids: Annotated[list[int], QueryParam(max_length=200)]) -> dict:
    """Names, categories and SIDs of the products ``ids`` (unknown ids listed apart)."""
    _, subs = await catalog_of(request)
    rows = [(i, subs.row_of(i)) for i in ids]
    return {"items": [_describe(subs, r) for _, r in rows if r is not None],
            "unknown": [i for i, r in rows if r is None]}


@router.get("/v1/catalog/retailers", response_model=RetailersResponse, responses=ERRORS)
async def retailers(request: Request) -> dict:
    """The retailers the served index knows."""
    return {"retailers": request.app.state.slot.current.retriever.index.retailers.tolist()}
