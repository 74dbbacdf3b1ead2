"""The item catalog contract (``items.parquet``): what every product is, what gets embedded, where it sits
in the taxonomy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semid.common import DataError

ITEMS_FILE = "items.parquet"  # the catalog's file in a dataset folder and in a run folder
COPY_BATCH = 16_384  # rows per batch when a catalog is copied (copy_items)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # what is embedded
        pa.field("brand", pa.string()),
        pa.field("category_path", pa.list_(pa.string())),  # root to leaf
        pa.field("first_seen", pa.int64()),
    ]
)


def conform(table: pa.Table, schema: pa.Schema, name: str, keep_extra: bool = False) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema``; optional (nullable) columns may be missing.
    ``keep_extra`` keeps other columns after the schema's (e.g. a precomputed embedding column)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            try:
                columns.append(table.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise DataError(f"{name}: column {field.name!r} cannot be read as {field.type}: {e}") from e
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise DataError(f"{name}: missing required column {field.name!r} (has: {table.column_names})")
    for field, col in zip(schema, columns):
        if not field.nullable and col.null_count:
            raise DataError(f"{name}: column {field.name!r} has {col.null_count} empty values")
    out = pa.Table.from_arrays(columns, schema=schema)
    if keep_extra:
        for extra in (c for c in table.column_names if c not in schema.names):
            out = out.append_column(extra, table.column(extra))
    return out


def items_file(path: str | Path) -> Path:
    """``items.parquet`` itself, or the one in a dataset folder; a DataError when it is not there."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEMS_FILE
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def read_items(path: str | Path, extras: bool = True, columns: Sequence[str] | None = None) -> pa.Table:
    """Read ``items.parquet`` (or a dataset folder holding one), checked against ITEMS_SCHEMA. ``extras``:
    with the file's other columns too (a column of precomputed vectors, say); False reads only the schema's,
    so a catalog's vectors are not held where only its products are needed. ``columns``: only these of the
    schema's (checked as the schema says), for readers that never look at titles and texts."""
    path = items_file(path)
    schema = ITEMS_SCHEMA
    if columns is not None:
        unknown = sorted(set(columns) - set(ITEMS_SCHEMA.names))
        if unknown:
            raise ValueError(f"read_items: {unknown} are not items.parquet columns ({ITEMS_SCHEMA.names})")
        schema, extras = pa.schema([ITEMS_SCHEMA.field(c) for c in columns]), False
    names = None
    if not extras:
        present = pq.read_schema(path).names
        names = [c for c in schema.names if c in present]
    return conform(pq.read_table(path, columns=names), schema, str(path), keep_extra=extras)


def copy_items(src: str | Path, dst: str | Path, batch: int = COPY_BATCH) -> None:
    """Write ``read_items(src)`` to ``dst`` a batch of rows at a time: the same rows and columns, extras
    included, without the whole catalog (its vectors, say) in memory at once."""
    src = items_file(src)
    with pq.ParquetFile(src, pre_buffer=False) as file:  # pre-buffering would read the whole file first
        writer = None
        try:
            for part in file.iter_batches(batch_size=batch):
                table = conform(pa.Table.from_batches([part]), ITEMS_SCHEMA, str(src), keep_extra=True)
                if writer is None:
                    writer = pq.ParquetWriter(dst, table.schema)
                writer.write_table(table)
            if writer is None:  # no rows: the empty table, as pq.write_table would write it
                pq.write_table(read_items(src), dst)
        finally:
            if writer is not None:
                writer.close()


def read_json(path: str | Path, what: str = "file") -> dict:
    """Read a JSON object, with errors naming the file (missing, not JSON, not an object)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def item_columns(catalog: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Index of each id in the ascending ``catalog``; -1 where absent."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    pos = np.searchsorted(catalog, item_ids)
    pos_c = np.minimum(pos, catalog.size - 1)
    return np.where(catalog[pos_c] == item_ids, pos_c, -1).astype(np.int64)


def catalog_rows(catalog: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Row of each id in ``catalog`` (any order, unique ids); -1 where absent."""
    catalog = np.asarray(catalog, dtype=np.int64)
    if catalog.size == 0:
        return np.full(np.shape(item_ids), -1, dtype=np.int64)
    order = np.argsort(catalog, kind="stable")
    cols = item_columns(catalog[order], item_ids)
    return np.where(cols >= 0, order[np.maximum(cols, 0)], -1)


def counts_per_item(catalog: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """How often each catalog item occurs in ``item_ids`` (ids outside the catalog are ignored)."""
    cols = item_columns(catalog, item_ids)
    return np.bincount(cols[cols >= 0], minlength=catalog.size).astype(np.float64)
