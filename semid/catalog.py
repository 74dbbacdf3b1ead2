"""The item catalog contract (``items.parquet``): what every product is, what gets embedded, where it sits
in the taxonomy."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from semid.common import DataError

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


def read_items(path: str | Path) -> pa.Table:
    """Read ``items.parquet`` (or a dataset folder holding one), checked against ITEMS_SCHEMA."""
    path = Path(path)
    if path.is_dir():
        path = path / "items.parquet"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return conform(pq.read_table(path), ITEMS_SCHEMA, str(path), keep_extra=True)


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
