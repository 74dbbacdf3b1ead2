"""The model being served and its atomic replacement. A ``ServedModel`` is one loaded run plus what the
routes need from it (request checks, item -> SID, SID -> products); ``ModelSlot`` holds the current one and
swaps in a new run loaded in the background, so requests in flight finish on the model they started with."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from genrec.retriever import Retriever
from genrec.serve.batcher import Query
from genrec.serve.errors import ApiError
from genrec.serve.settings import ServeSettings
from semid.common import DataError
from semid.store import read_sids

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """One loaded run, warmed up: the index's trie forest built and one mixed-retailer decode done."""

    run: Path
    retriever: Retriever
    sid_items: np.ndarray  # item ids that have a SID, ascending
    sid_strings: np.ndarray  # their SID strings
    loaded_at: float  # time.time() of the load

    @classmethod
    def load(cls, run: Path, beam_width: int = 20, device: str = "cpu", dtype: str = "float32") -> "ServedModel":
        """Load and warm a run folder written by ``genrec train`` (DataError when it is not one)."""
        run = Path(run).resolve()
        if not run.is_dir():
            raise DataError(f"{run}: run folder not found")
        retriever = Retriever.from_run(run, beam_width=beam_width, device=device, dtype=dtype)
        sids = read_sids(run, expected_version=retriever.codebook_version)
        items = sids.column("item_id").to_numpy()
        order = np.argsort(items, kind="stable")
        strings = np.asarray(sids.column("sid").to_pylist(), dtype=object)[order]
        retailers = [None, *retriever.index.retailers.tolist()]  # builds the forest: requests only read it
        retriever.retrieve_arrays([np.zeros(0, np.int64)] * len(retailers), retailers, 1)
        return cls(run, retriever, items[order], strings, time.time())

    @property
    def model_version(self) -> str:
        return self.retriever.model_version

    @property
    def codebook_version(self) -> str:
        return self.retriever.codebook_version

    def query(self, history: list[int], retailer_id: int | None, k: int, exclude_history: bool,
              settings: ServeSettings, explain: bool = False) -> tuple[Query, list[int]]:
        """Check one retrieval request against the limits and this model: the query to decode and the
        unknown item ids that were dropped from the history. ApiError says what is wrong."""
        if not 1 <= k <= settings.max_k:
            raise ApiError(422, "k_out_of_range", f"k must be between 1 and {settings.max_k}, got {k}")
        if len(history) > settings.max_history:
            raise ApiError(422, "history_too_long",
                           f"history has {len(history)} items; at most {settings.max_history} are accepted")
        self.check_retailer(retailer_id)
        ids = np.asarray(history, dtype=np.int64)
        known = self.retriever.known(ids)
        unknown = list(dict.fromkeys(ids[~known].tolist()))
        if ids.size and not known.any():
            raise ApiError(422, "unknown_items", f"none of the history's items is known to this model: {unknown[:20]}",
                           unknown=unknown)
        return Query(ids[known], retailer_id, k, exclude_history, explain), unknown

    @cached_property
    def retailers(self) -> frozenset[int]:
        """The retailer ids the index serves (empty: it records no stock, and decodes any id over the whole
        catalog, as ``RetailerIndex.start_for`` does)."""
        return frozenset(self.retriever.index.retailers.tolist())

    def check_retailer(self, retailer_id: int | None) -> None:
        """ApiError 422 unless the index serves ``retailer_id`` (None: the whole catalog). A set lookup: it runs
        on the event loop for every request (asking the index costs a tensor per call)."""
        if retailer_id is None or not self.retailers or retailer_id in self.retailers:
            return
        known = self.retriever.index.retailers.tolist()
        raise ApiError(422, "unknown_retailer", f"unknown retailer {retailer_id}; known: {known[:50]}",
                       known_retailers=known[:50])

    def sid_of(self, item_id: int) -> str:
        """The SID string of a product this model can recommend (ApiError 404 otherwise)."""
        pos = int(np.searchsorted(self.sid_items, item_id))
        if not self.retriever.known([item_id])[0] or pos >= self.sid_items.size or self.sid_items[pos] != item_id:
            raise ApiError(404, "unknown_item", f"item {item_id} is not in this model's catalog", item_id=item_id)
        return str(self.sid_strings[pos])

    def products_of(self, sid: str, retailer_id: int | None) -> tuple[str, list[int]]:
        """The products under SID ``sid`` (that ``retailer_id`` stocks), best first, and the SID as the
        catalog spells it; ApiError 404 when no product has it, whether or not this codebook could spell it
        (the route has checked its shape)."""
        self.check_retailer(retailer_id)
        where = "" if retailer_id is None else f" stocked by retailer {retailer_id}"
        try:
            tokens = self.retriever.tokenizer.sid_to_tokens(sid)
        except DataError as e:
            raise ApiError(404, "unknown_sid", f"no product{where} has SID {sid!r}: {e}", sid=sid) from None
        items = self.retriever.index.lookup(tokens[None, :], retailer_id)[0]
        if not items.size:
            raise ApiError(404, "unknown_sid", f"no product{where} has SID {sid!r}", sid=sid)
        return self.sid_of(int(items[0])), items.tolist()


class ModelSlot:
    """The current ``ServedModel``; ``reload`` loads another run in a background thread and swaps it in
    with one assignment, one reload at a time. Readers take ``current`` once per request."""

    def __init__(self, model: ServedModel, settings: ServeSettings,
                 on_swap: Callable[[ServedModel], None] | None = None) -> None:
        self.current = model
        self.settings = settings
        self.on_swap = on_swap  # called with the new model after each swap
        self._lock = asyncio.Lock()

    @property
    def reloading(self) -> bool:
        """Whether a run is being loaded now."""
        return self._lock.locked()

    async def reload(self, run: Path | None = None) -> ServedModel:
        """Load ``run`` (default: the current run folder again), then make it current; on failure the old
        model stays and the error is raised."""
        async with self._lock:
            target = Path(run) if run is not None else self.current.run
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(
                None, ServedModel.load, target, self.settings.beam_width, self.settings.device, self.settings.dtype)
            self.current = model
            if self.on_swap is not None:
                self.on_swap(model)
            log.info("serving %s (model %s, codebook %s)", model.run, model.model_version, model.codebook_version)
            return model
