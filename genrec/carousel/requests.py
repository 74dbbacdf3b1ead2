"""Carousel requests: a parquet file of (user_id, retailer_id, optional history) rows, checked once up front
and then read in fixed-size chunks, each request's history taken from the row or, when the row has none,
from a dataset's events."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genrec.data.sequences import build_histories
from semid.common import DataError

REQUIRED = ("user_id", "retailer_id")  # retailer_id may be null: recommend from the whole catalog
HISTORY = "history"  # optional list<int>; a null (or an absent column) means: read it from the dataset
EVENT_COLUMNS = ["user_id", "session_id", "ts", "item_id", "position"]


@dataclass
class RequestsInfo:
    """What the up-front pass learned about a requests file."""

    path: Path
    rows: int
    has_history: bool  # the file has a history column
    from_dataset: int  # requests whose history must come from the dataset
    retailers: np.ndarray  # distinct non-null retailer ids requested, ascending


@dataclass
class ChunkHistories:
    """One chunk's requests with their histories as ragged arrays (``items[offsets[i]:offsets[i+1]]``)."""

    user_ids: np.ndarray  # (n,) int64
    retailer_ids: pa.Array  # (n,) int32, null where the request names no retailer
    offsets: np.ndarray  # (n + 1,) int64
    items: np.ndarray  # flat int64 item ids, oldest first per request
    missing: np.ndarray  # (n,) bool: the request needed the dataset and its user has no events there


class DatasetHistories:
    """Every shopper's history in a dataset's events, for requests that give only a user id."""

    def __init__(self, data: Path) -> None:
        path = Path(data) / "events.parquet"
        if not path.is_file():
            raise DataError(f"{path}: file not found (--data must be a dataset folder)")
        self.path = path
        self.histories = build_histories(pq.read_table(path, columns=EVENT_COLUMNS))

    def lookup(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, items, found) of ``user_ids``' histories; users without events get empty ones."""
        h = self.histories  # never empty: build_histories refuses events without rows
        pos = np.minimum(np.searchsorted(h.user_ids, user_ids), h.user_ids.size - 1)
        found = h.user_ids[pos] == user_ids
        starts = np.where(found, h.offsets[pos], 0)
        ends = np.where(found, h.offsets[pos + 1], 0)
        offsets, items = gather_ragged(h.items, starts, ends)
        return offsets, items, found


def gather_ragged(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``values[starts[i]:ends[i]]`` for every i, vectorised: (offsets, flat)."""
    lengths = (ends - starts).astype(np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    index = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
    return offsets, values[index]


def inspect_requests(path: Path, batch_rows: int, known_retailers: np.ndarray | None) -> RequestsInfo:
    """Check the file's columns and types, that user ids are set and that every requested retailer is
    known (``known_retailers`` None: any retailer is served by the whole catalog), streaming the file."""
    pf = _open(path)
    has_history = HISTORY in pf.schema_arrow.names
    columns = list(REQUIRED) + ([HISTORY] if has_history else [])
    from_dataset, retailers = 0, np.zeros(0, np.int64)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        if batch.column("user_id").null_count:
            raise DataError(f"{path}: user_id has {batch.column('user_id').null_count} null values")
        if has_history:
            history = batch.column(HISTORY)
            from_dataset += history.null_count
            if pc.list_flatten(history).null_count:
                raise DataError(f"{path}: a history holds null item ids")
        else:
            from_dataset += batch.num_rows
        values = batch.column("retailer_id").drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
        retailers = np.union1d(retailers, values)
    if known_retailers is not None:
        unknown = np.setdiff1d(retailers, known_retailers)
        if unknown.size:
            raise DataError(
                f"{path}: unknown retailer_id {unknown[:10].tolist()} (the run's index knows "
                f"{known_retailers[:20].tolist()}{' ...' if known_retailers.size > 20 else ''})"
            )
    return RequestsInfo(path, pf.metadata.num_rows, has_history, from_dataset, retailers)


def missing_users(info: RequestsInfo, dataset: DatasetHistories, batch_rows: int) -> tuple[int, list[int]]:
    """How many requests need the dataset for a user it has no events of, and the first few such users."""
    count, examples = 0, []
    for _, table in iter_chunks(info.path, batch_rows, request_columns(info)):
        user_ids = table.column("user_id").to_numpy().astype(np.int64)
        if info.has_history:
            user_ids = user_ids[table.column(HISTORY).is_null().to_numpy(zero_copy_only=False)]
        absent = user_ids[~dataset.lookup(user_ids)[2]]
        count += absent.size
        examples.extend(absent[: 10 - len(examples)].tolist())
    return count, examples


def iter_chunks(path: Path, chunk_size: int, columns: list[str]) -> Iterator[tuple[int, pa.Table]]:
    """(index, table) of consecutive ``chunk_size``-row chunks (the last one shorter): chunk i is always
    rows [i * chunk_size, (i + 1) * chunk_size), whatever the file's row groups."""
    pf = pq.ParquetFile(path)
    buffer: list[pa.RecordBatch] = []
    held, index = 0, 0
    for batch in pf.iter_batches(batch_size=chunk_size, columns=columns):
        buffer.append(batch)
        held += batch.num_rows
        while held >= chunk_size:
            table = pa.Table.from_batches(buffer)
            yield index, table.slice(0, chunk_size)
            rest = table.slice(chunk_size)
            buffer, held, index = rest.to_batches(), rest.num_rows, index + 1
    if held:
        yield index, pa.Table.from_batches(buffer)


def request_columns(info: RequestsInfo) -> list[str]:
    """The columns a chunk is read with."""
    return list(REQUIRED) + ([HISTORY] if info.has_history else [])


def chunk_histories(table: pa.Table, dataset: DatasetHistories | None) -> ChunkHistories:
    """The chunk's user ids, retailers and histories: a row's own history where it has one, else its
    user's history in ``dataset``."""
    user_ids = table.column("user_id").to_numpy().astype(np.int64)
    retailer_ids = table.column("retailer_id").combine_chunks().cast(pa.int32())
    n = user_ids.size
    if HISTORY in table.column_names:
        history = table.column(HISTORY).combine_chunks()
        lengths = pc.list_value_length(history).fill_null(0).to_numpy().astype(np.int64)
        own = pc.list_flatten(history).to_numpy().astype(np.int64)
        need = history.is_null().to_numpy(zero_copy_only=False)
    else:
        lengths, own, need = np.zeros(n, np.int64), np.zeros(0, np.int64), np.ones(n, bool)
    missing = np.zeros(n, bool)
    if need.any():
        if dataset is None:
            raise DataError(f"{int(need.sum())} requests have no history: pass the dataset to read them from")
        ds_offsets, ds_items, found = dataset.lookup(user_ids[need])
        missing[need] = ~found
        return _merge_histories(user_ids, retailer_ids, lengths, own, need, ds_offsets, ds_items, missing)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return ChunkHistories(user_ids, retailer_ids, offsets, own, missing)


def _merge_histories(user_ids, retailer_ids, lengths, own, need, ds_offsets, ds_items, missing) -> ChunkHistories:
    """Interleave the rows' own histories with those looked up for the rows that had none."""
    n = user_ids.size
    lengths = lengths.copy()
    lengths[need] = np.diff(ds_offsets)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    items = np.empty(offsets[-1], np.int64)
    row_of = np.repeat(np.arange(n), lengths)
    from_ds = need[row_of]
    items[~from_ds] = own
    items[from_ds] = ds_items
    return ChunkHistories(user_ids, retailer_ids, offsets, items, missing)


def _open(path: Path) -> pq.ParquetFile:
    """The requests file, with its required columns present and integer-typed."""
    if not Path(path).is_file():
        raise DataError(f"{path}: requests file not found")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a parquet file ({e})") from None
    schema = pf.schema_arrow
    for name in REQUIRED:
        if name not in schema.names:
            raise DataError(f"{path}: missing required column {name!r} (has: {schema.names})")
        if not pa.types.is_integer(schema.field(name).type):
            raise DataError(f"{path}: column {name!r} must be integers, got {schema.field(name).type}")
    if HISTORY in schema.names:
        kind = schema.field(HISTORY).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
            raise DataError(f"{path}: column {HISTORY!r} must be a list of item ids (list<int64>), got {kind}")
    return pf
