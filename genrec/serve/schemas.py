"""Request and response bodies of the HTTP API. Requests are strict (no "5" for 5, no unknown fields) so a
wrong type is refused rather than guessed; integers are bounded to what the data types hold. The limits the
settings set (largest k, longest history) are part of the request models, built by ``retrieve_request``
from the same settings the server runs with: pydantic enforces exactly what /openapi.json declares."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

from genrec.serve.settings import ServeSettings

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# A Semantic ID as the catalog spells it: codewords (decimal, no leading zeros) joined by "_". Any SID of
# this shape is a valid request; one no product has (wrong length, codeword out of range) is a 404.
SID_PATTERN = r"^(0|[1-9][0-9]{0,8})(_(0|[1-9][0-9]{0,8})){0,15}$"
# A run to reload, relative to --runs-root: path segments that do not start with a dot (so no "..").
RUN_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,15}$"
TIMEOUT_HEADER = "X-Request-Timeout-Ms"

ItemId = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX, json_schema_extra={"format": "int64"})]
RetailerId = Annotated[int, Field(strict=True, ge=INT32_MIN, le=INT32_MAX, json_schema_extra={"format": "int32"})]


class RetrieveRequest(BaseModel):
    """A shopper's history (item ids, oldest first) -> the k products most likely next."""

    model_config = ConfigDict(extra="forbid")

    history: list[ItemId]
    retailer_id: RetailerId | None = None  # None: the whole catalog
    k: Annotated[int, Field(strict=True, ge=1)]
    exclude_history: Annotated[bool, Field(strict=True)] = False  # never return products already in the history
    # each item also carries ``features``: the ranker's feature values and every source that proposed it
    explain: Annotated[bool, Field(strict=True)] = False


def retrieve_request(settings: ServeSettings) -> type[RetrieveRequest]:
    """``RetrieveRequest`` with the settings' limits: k in 1..max_k, at most max_history items."""
    return create_model(
        "RetrieveRequest", __base__=RetrieveRequest, __doc__=RetrieveRequest.__doc__,
        history=(Annotated[list[ItemId], Field(max_length=settings.max_history,
                                               description="item ids, oldest first; unknown ones are skipped")], ...),
        k=(Annotated[int, Field(strict=True, ge=1, le=settings.max_k, description="products to return")], ...),
    )


class RetrievedItem(BaseModel):
    item_id: int
    sid: str
    score: float  # the ranker's score, higher first (genrec.retriever.Candidate)
    # who proposed it: generated, buy again, co-purchase, new product or similar (genrec.rank.candidates)
    source: str
    # with explain: feature name -> value (null where it does not apply), and "sources": every source's name
    features: dict[str, float | None | list[str]] | None = None


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


class ReadyResponse(BaseModel):
    """200 when ready to take traffic; 503 while a run is loading or the server drains."""

    ready: bool
    status: str  # ready, reloading or draining
    queued: int
    max_queue: int


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # relative to --runs-root; default: reload the current run folder
    run: Annotated[str, Field(strict=True, pattern=RUN_PATTERN)] | None = None


class ReloadResponse(BaseModel):
    run: str
    model_version: str
    codebook_version: str
    previous_model_version: str
    seconds: float


class ErrorResponse(BaseModel):
    """Every refusal: a machine-readable code, a message for people, sometimes more fields."""

    model_config = ConfigDict(extra="allow")

    error: str  # machine-readable code, e.g. unknown_items
    message: str
