"""The retailer index on disk: a folder of items.parquet (item_id, tokens, sid, popularity, established),
stock.parquet (retailer_id, item_id) and index.json (format, codebook version, sizes), each written
atomically."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid.catalog import read_json
from semid.common import DataError, atomic_write, write_json

FORMAT = "genrec-retailer-index"
FORMAT_VERSION = 1

ITEMS_FILE, STOCK_FILE, META_FILE = "items.parquet", "stock.parquet", "index.json"


@dataclass
class IndexFiles:
    """The contents of a saved index, as arrays."""

    ids: np.ndarray  # [n] int64, ascending
    rows: np.ndarray | None  # [n, L+1] int64 token rows (None when the catalog is empty)
    popularity: np.ndarray  # [n] float64
    sids: np.ndarray  # [n] object
    established: np.ndarray  # [n] bool (all False for an index saved before the column existed)
    stock: np.ndarray  # [m, 2] int64 (retailer_id, item_id)
    meta: dict  # index.json


def write_index(
    path: str | Path,
    ids: np.ndarray,
    rows: np.ndarray,
    popularity: np.ndarray,
    sids: np.ndarray,
    stock: np.ndarray | Iterable[np.ndarray],
    meta: dict,
    established: np.ndarray,
) -> Path:
    """Write the index to folder ``path``; ``meta`` gets the format fields added. ``stock``: (retailer_id,
    item_id) pairs [m, 2], or chunks of them written one at a time (a 5M catalog holds ~200M pairs)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    width = rows.shape[1]
    offsets = pa.array(np.arange(ids.size + 1) * width, pa.int32())
    tokens = pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1), pa.int32()))
    items = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "tokens": tokens,
            "sid": pa.array(sids.tolist(), pa.string()),
            "popularity": pa.array(popularity, pa.float64()),
            "established": pa.array(established, pa.bool_()),
        }
    )
    chunks = [stock] if isinstance(stock, np.ndarray) else stock

    def write_stock(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, STOCK_SCHEMA) as writer:
            wrote = False
            for pairs in chunks:
                if pairs.size or not wrote:
                    writer.write_table(_stock_table(pairs))
                    wrote = True
            if not wrote:
                writer.write_table(_stock_table(np.zeros((0, 2), np.int64)))

    atomic_write(path / ITEMS_FILE, lambda tmp: pq.write_table(items, tmp))
    atomic_write(path / STOCK_FILE, write_stock)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    write_json(meta, path / META_FILE, newline=True)
    return path


STOCK_SCHEMA = pa.schema([pa.field("retailer_id", pa.int32()), pa.field("item_id", pa.int64())])


def _stock_table(pairs: np.ndarray) -> pa.Table:
    return pa.table({"retailer_id": pa.array(pairs[:, 0], pa.int32()), "item_id": pa.array(pairs[:, 1], pa.int64())},
                    schema=STOCK_SCHEMA)


def iter_stock(path: str | Path, batch_rows: int = 1 << 23) -> Iterator[np.ndarray]:
    """The saved stock of index folder ``path`` as (retailer_id, item_id) chunks [m, 2] int64 of at most
    ``batch_rows`` pairs, so that ~200M pairs never sit in memory at once."""
    file = Path(path) / STOCK_FILE
    if not file.is_file():
        raise DataError(f"{file}: file not found")
    reader = pq.ParquetFile(file)
    missing = [c for c in ("retailer_id", "item_id") if c not in reader.schema_arrow.names]
    if missing:
        raise DataError(f"{file}: missing columns {missing}")
    for batch in reader.iter_batches(batch_size=batch_rows, columns=["retailer_id", "item_id"]):
        yield np.stack([batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64),
                        batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64)], axis=1)


def read_index(path: str | Path, codebook_version: str | None = None, with_stock: bool = True) -> IndexFiles:
    """Read a saved index folder; with ``codebook_version`` the recorded one must match. ``with_stock=False``
    leaves ``stock`` empty (read it a chunk at a time with ``iter_stock``)."""
    path = Path(path)
    meta = _read_meta(path / META_FILE)
    if codebook_version is not None and meta.get("codebook_version") != codebook_version:
        raise DataError(
            f"{path / META_FILE}: index was built for codebook version {meta.get('codebook_version')!r}, "
            f"not {codebook_version!r}"
        )
    items = _read_parquet(path / ITEMS_FILE, ["item_id", "tokens", "sid", "popularity"])
    stock = _read_parquet(path / STOCK_FILE, ["retailer_id", "item_id"]) if with_stock else None
    rows = _token_matrix(items.column("tokens"), path / ITEMS_FILE) if items.num_rows else None
    pairs = np.stack(
        [stock.column("retailer_id").to_numpy().astype(np.int64), stock.column("item_id").to_numpy().astype(np.int64)],
        axis=1,
    ) if stock is not None and stock.num_rows else np.zeros((0, 2), np.int64)
    return IndexFiles(
        ids=items.column("item_id").to_numpy().astype(np.int64),
        rows=rows,
        popularity=items.column("popularity").to_numpy().astype(np.float64),
        sids=np.asarray(items.column("sid").to_pylist(), dtype=object),
        established=(items.column("established").to_numpy(zero_copy_only=False).astype(bool)
                     if "established" in items.column_names else np.zeros(items.num_rows, bool)),
        stock=pairs,
        meta=meta,
    )


def _token_matrix(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """A list<int> column whose lists all have the same length -> int64 matrix."""
    arr = column.combine_chunks()
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if arr.null_count or lengths.min() != lengths.max() or lengths[0] < 1:
        raise DataError(f"{path}: column 'tokens' must hold one non-empty list of equal length per product")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64).reshape(len(arr), int(lengths[0]))


def _read_meta(path: Path) -> dict:
    """index.json, checked."""
    meta = read_json(path, "index metadata")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: index format version {meta.get('format_version')} is not supported")
    return meta


def _read_parquet(path: Path, columns: list[str]) -> pa.Table:
    """A parquet file with the named columns, or a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    return table
