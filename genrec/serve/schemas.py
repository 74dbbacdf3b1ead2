"""Request and response bodies of the HTTP API. Requests are strict (no "5" for 5, no unknown fields) so a
wrong type is refused rather than guessed; integers are bounded to what the data types hold."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

ItemId = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
RetailerId = Annotated[int, Field(strict=True, ge=INT32_MIN, le=INT32_MAX)]


class RetrieveRequest(BaseModel):
    """A shopper's history (item ids, oldest first) -> the k products most likely next."""

    model_config = ConfigDict(extra="forbid")

    history: list[ItemId]
    retailer_id: RetailerId | None = None  # None: the whole catalog
    k: Annotated[int, Field(strict=True)]
    exclude_history: Annotated[bool, Field(strict=True)] = False  # never return products already in the history


class RetrievedItem(BaseModel):
    item_id: int
    sid: str
    score: float  # the decoder's log-probability of the SID (lower for products filled from nearby SIDs)


class RetrieveResponse(BaseModel):
    items: list[RetrievedItem]
    codebook_version: str
    model_version: str
    skipped: list[int]  # history ids unknown to the model, left out of the query


class ItemResponse(BaseModel):
    item_id: int
    sid: str
    codebook_version: str


class SidResponse(BaseModel):
    sid: str  # as the catalog spells it
    retailer_id: int | None
    items: list[int]  # best (most popular) first
    codebook_version: str


class HealthResponse(BaseModel):
    status: str
    model_version: str
    codebook_version: str
    items: int
    queued: int


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: Annotated[str, Field(strict=True, min_length=1)] | None = None  # default: reload the current run folder


class ReloadResponse(BaseModel):
    run: str
    model_version: str
    codebook_version: str
    previous_model_version: str
    seconds: float


class ErrorResponse(BaseModel):
    error: str  # machine-readable code, e.g. unknown_items
    message: str
