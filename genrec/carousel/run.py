"""``genrec carousel``: K products for every request of a parquet file, through the run's ``Retriever``.

The requests are read in fixed chunks of rows; chunk i is done by process ``i % N`` (``accelerate
launch`` gives N processes and each its rank) and written as its own part; the main process merges the
parts, in request order, once every process is done. A killed job rerun with the same inputs skips the
chunks whose parts exist, so the output holds every row exactly once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from genrec.carousel.config import CarouselConfig
from genrec.carousel.parts import PartStore, file_sha256
from genrec.carousel.requests import (
    ChunkHistories,
    DatasetHistories,
    RequestsInfo,
    chunk_histories,
    inspect_requests,
    iter_chunks,
    missing_users,
    request_columns,
)
from genrec.retriever import Retriever
from semid.common import DataError, torch_threads
from semid.progress import progress

log = logging.getLogger(__name__)


def run_carousel(
    run: Path,
    requests: Path,
    out: Path,
    data: Path | None = None,
    cfg: CarouselConfig | None = None,
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
    **options,
) -> dict:
    """Write ``out`` (parquet: user_id, retailer_id, rank, item_id, sid, score) for every request in
    ``requests``; ``options`` override ``cfg`` fields (k=..., chunk_size=...). ``data``: the dataset whose
    events give the histories of requests without one. ``on_chunk(index)`` is called after each part is
    written. Resumes an unfinished job with the same inputs. Returns the job's summary (on every process)."""
    cfg = replace(cfg or CarouselConfig(), **options)  # checks the options too
    run, requests, out = Path(run), Path(requests), Path(out)
    state = PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    with torch_threads(cfg.threads):
        retriever = Retriever.from_run(run, beam_width=cfg.beam_width, device=cfg.device or str(state.device),
                                       dtype=cfg.dtype)
        known = retriever.index.retailers
        info = inspect_requests(requests, cfg.chunk_size, known if known.size else None)
        dataset = _dataset(info, data, cfg)
        manifest = _manifest(info, retriever, dataset, cfg)
        store = PartStore(out)
        try:
            _agree(state, lambda: store.prepare(manifest, overwrite) if state.is_main_process else None)
            n_chunks = -(-info.rows // cfg.chunk_size)
            start = time.perf_counter()
            work = _Worker(state, retriever, dataset, store, cfg, on_chunk)
            _agree(state, lambda: work.run(info, n_chunks))
            counts = gather_object([work.decoded, work.resumed])
            totals = [_agree(state, lambda: store.merge(n_chunks, manifest) if state.is_main_process else None)]
            seconds = time.perf_counter() - start
        finally:
            store.unlock()
        if state.is_main_process:
            totals[0] = _summary(out, info, manifest, totals[0], n_chunks, counts, state.num_processes, seconds)
            _log_summary(totals[0])
        return broadcast_object_list(totals)[0]


class _Worker:
    """One process's share of the chunks: decode each one not done yet and write its part."""

    def __init__(self, state: PartialState, retriever: Retriever, dataset: DatasetHistories | None,
                 store: PartStore, cfg: CarouselConfig, on_chunk: Callable[[int], None] | None) -> None:
        self.state, self.retriever, self.dataset, self.store = state, retriever, dataset, store
        self.cfg, self.on_chunk = cfg, on_chunk
        self.decoded = self.resumed = 0  # requests decoded now / found done by an earlier attempt

    def run(self, info: RequestsInfo, n_chunks: int) -> None:
        """Go through this process's chunks in order."""
        rank, world, size = self.state.process_index, self.state.num_processes, self.cfg.chunk_size
        mine = np.arange(rank, n_chunks, world)
        done = np.array([self.store.done(int(i)) for i in mine], bool)
        rows = np.minimum(size, info.rows - mine * size)
        self.resumed = int(rows[done].sum())
        if self.resumed:
            log.info("resuming: %d of %d chunks of process %d already done", done.sum(), mine.size, rank)
        with progress(int(rows.sum()), "carousel" + (f" [process 1/{world}]" if world > 1 else ""), "requests",
                      self.cfg.progress and self.state.is_main_process, initial=self.resumed, logger=log,
                      unit_scale=True, smoothing=0.1) as bar:
            for index, table in iter_chunks(info.path, size, request_columns(info)):
                if index % world != rank or self.store.done(index):
                    continue
                part, stats = carousel_chunk(table, self.retriever, self.dataset, self.cfg)
                self.store.write(index, part, stats)
                self.decoded += table.num_rows
                bar.update(table.num_rows)
                if self.on_chunk is not None:
                    self.on_chunk(index)


def carousel_chunk(table: pa.Table, retriever: Retriever, dataset: DatasetHistories | None,
                   cfg: CarouselConfig) -> tuple[pa.Table, dict]:
    """The output rows of one chunk of requests (request order, then rank) and its counts."""
    ch = chunk_histories(table, dataset)
    n = ch.user_ids.size
    lengths = np.diff(ch.offsets)
    known = retriever.known(ch.items)
    row_of = np.repeat(np.arange(n), lengths)
    kept = np.bincount(row_of[known], minlength=n)
    no_items = (kept == 0) & ~ch.missing
    if cfg.on_missing == "error" and no_items.any():
        users = ch.user_ids[no_items]
        raise DataError(f"{users.size} requests have no product the run knows in their history, e.g. users "
                        f"{users[:10].tolist()}")
    items = ch.items[known]
    histories = np.split(items, np.cumsum(kept)[:-1]) if n else []
    use = np.flatnonzero(~ch.missing & ~no_items)
    retailers = ch.retailer_ids.to_pylist()
    parts = [
        _decode(ch, rows, [histories[i] for i in rows], [retailers[i] for i in rows], retriever, cfg)
        for rows in np.array_split(use, max(1, -(-use.size // cfg.batch_size)))  # one (maybe empty) at least
    ]
    out = pa.concat_tables(parts)
    skipped = ch.user_ids[ch.missing | no_items]
    stats = {
        "requests": n,
        "carousels": int(use.size),
        "rows": out.num_rows,
        "skipped_not_in_dataset": int(ch.missing.sum()),
        "skipped_no_known_items": int(no_items.sum()),
        "unknown_items": int((~known).sum()),
        "skipped_examples": skipped[:10].tolist(),
    }
    return out, stats


def _decode(ch: ChunkHistories, rows: np.ndarray, histories: list[np.ndarray], retailers: list[int | None],
            retriever: Retriever, cfg: CarouselConfig) -> pa.Table:
    """Output rows of the requests ``rows`` of a chunk: one per product found, ranked from 1."""
    if rows.size:
        cand = retriever.retrieve_arrays(histories, retailers, cfg.k, cfg.exclude_history)
        ids, sids, scores = cand.item_ids, cand.sids, cand.scores
    else:
        ids, sids, scores = np.zeros((0, cfg.k), np.int64), np.zeros((0, cfg.k), object), np.zeros((0, cfg.k))
    found = ids >= 0
    request = np.repeat(rows, found.sum(axis=1))
    return pa.table(
        {
            "user_id": pa.array(ch.user_ids[request], pa.int64()),
            "retailer_id": ch.retailer_ids.take(pa.array(request, pa.int64())),
            "rank": pa.array(np.cumsum(found, axis=1)[found], pa.int32()),
            "item_id": pa.array(ids[found], pa.int64()),
            "sid": pa.array(sids[found].tolist(), pa.string()),
            "score": pa.array(scores[found].astype(np.float32), pa.float32()),
        }
    )


def _dataset(info: RequestsInfo, data: Path | None, cfg: CarouselConfig) -> DatasetHistories | None:
    """The dataset's histories when some request needs them; in strict mode, fail now on absent users."""
    if not info.from_dataset:
        return None
    if data is None:
        raise DataError(
            f"{info.path}: {info.from_dataset:,} requests have no history column value; pass the dataset "
            "(--data DIR) to read their histories from its events"
        )
    dataset = DatasetHistories(Path(data))
    if cfg.on_missing == "error":
        count, examples = missing_users(info, dataset, cfg.chunk_size)
        if count:
            raise DataError(f"{info.path}: {count:,} requests name users with no events in {dataset.path}, "
                            f"e.g. {examples}")
    return dataset


def _manifest(info: RequestsInfo, retriever: Retriever, dataset: DatasetHistories | None,
              cfg: CarouselConfig) -> dict:
    """Everything the output depends on; a resume must match it exactly."""
    return {
        "requests_sha256": file_sha256(info.path),
        "requests_rows": info.rows,
        "dataset_events_sha256": file_sha256(dataset.path) if dataset is not None else None,
        "model_version": retriever.model_version,
        "codebook_version": retriever.codebook_version,
        **{key: value for key, value in asdict(cfg).items() if key not in ("threads", "device", "progress")},
    }


def _agree(state: PartialState, step: Callable[[], object]) -> object:
    """Run ``step`` on every process, then make every process fail if any did (so none waits forever on
    a collective the failed one never reaches); returns this process's result."""
    error: BaseException | None = None
    result = None
    try:
        result = step()
    except Exception as e:  # re-raised below, on every process
        error = e
    messages = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
    if error is not None:
        raise error
    failed = [(rank, msg) for rank, msg in enumerate(messages) if msg is not None]
    if failed:
        raise DataError(f"carousel: process {failed[0][0]} failed: {failed[0][1]}")
    return result


def _summary(out: Path, info: RequestsInfo, manifest: dict, totals: dict, n_chunks: int,
             counts: list[int], processes: int, seconds: float) -> dict:
    """What the job did, for the command line and for logs."""
    decoded, resumed = sum(counts[0::2]), sum(counts[1::2])
    return {
        "out": str(out),
        "requests": info.rows,
        "carousels": totals.get("carousels", 0),
        "rows": totals.get("rows", 0),
        "skipped_not_in_dataset": totals.get("skipped_not_in_dataset", 0),
        "skipped_no_known_items": totals.get("skipped_no_known_items", 0),
        "skipped_examples": totals.get("skipped_examples", []),
        "unknown_items": totals.get("unknown_items", 0),
        "chunks": n_chunks,
        "resumed_requests": resumed,
        "decoded_requests": decoded,
        "processes": processes,
        "seconds": round(seconds, 3),
        "requests_per_s": round(decoded / seconds, 1) if seconds > 0 else 0.0,
        "k": manifest["k"],
        "model_version": manifest["model_version"],
        "codebook_version": manifest["codebook_version"],
    }


def _log_summary(summary: dict) -> None:
    """Say what was skipped, if anything."""
    skipped = summary["skipped_not_in_dataset"] + summary["skipped_no_known_items"]
    if skipped:
        log.warning("carousel: skipped %d requests (%d users not in the dataset, %d with no known product), "
                    "e.g. users %s", skipped, summary["skipped_not_in_dataset"],
                    summary["skipped_no_known_items"], summary["skipped_examples"])
