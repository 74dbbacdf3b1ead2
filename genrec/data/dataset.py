"""A dataset is a folder of parquet files (README.md, "Data"): items, events, optional assortment, and a
``meta.json`` saying where it came from. Writing is atomic: a temporary folder renamed into place, so a
failed import never leaves a half-written dataset behind."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid.catalog import ITEMS_SCHEMA, conform, read_items
from semid.common import DataError, atomic_dir

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("session_id", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),  # order number or time
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),  # add-to-cart order within the session
        pa.field("retailer_id", pa.int32()),
    ]
)

ASSORTMENT_SCHEMA = pa.schema(
    [
        pa.field("retailer_id", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
    ]
)

__all__ = ["Dataset", "DataError", "EVENTS_SCHEMA", "ASSORTMENT_SCHEMA", "ITEMS_SCHEMA", "events_path", "read_dataset",
           "read_events"]


@dataclass
class Dataset:
    """Items, events and (optionally) which retailer stocks what, plus free-form metadata."""

    items: pa.Table
    events: pa.Table
    assortment: pa.Table | None = None
    meta: dict = field(default_factory=dict)
    item_columns: tuple[str, ...] | None = None  # only these of ITEMS_SCHEMA were read (never written back)

    def __post_init__(self) -> None:
        whole = self.item_columns is None
        schema = ITEMS_SCHEMA if whole else pa.schema([ITEMS_SCHEMA.field(c) for c in self.item_columns])
        self.items = conform(self.items, schema, "items.parquet", keep_extra=whole)
        self.events = conform(self.events, EVENTS_SCHEMA, "events.parquet")
        if self.assortment is not None:
            self.assortment = conform(self.assortment, ASSORTMENT_SCHEMA, "assortment.parquet")

    def validate(self) -> None:
        """Check the contract: non-empty, unique item ids, events and assortment name only known items."""
        if self.items.num_rows == 0:
            raise DataError("items.parquet: no items")
        if self.events.num_rows == 0:
            raise DataError("events.parquet: no events")
        ids = self.items.column("item_id").to_numpy()
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise DataError(f"items.parquet: {dup.size} duplicate item_id values, e.g. {dup[:5].tolist()}")
        for name, table in (("events.parquet", self.events), ("assortment.parquet", self.assortment)):
            if table is None:
                continue
            unknown = pc.invert(pc.is_in(table.column("item_id"), value_set=pa.array(uniq)))
            n = pc.sum(unknown).as_py() or 0
            if n:
                bad = np.unique(table.column("item_id").filter(unknown).to_numpy())
                raise DataError(
                    f"{name}: {n} rows name {bad.size} item_id values not in items.parquet, "
                    f"e.g. {bad[:5].tolist()}"
                )

    def write(self, out: str | Path, overwrite: bool = False) -> Path:
        """Validate, then write atomically to ``out`` (a folder)."""
        if self.item_columns is not None:
            raise DataError(f"a dataset read with only the item columns {list(self.item_columns)} cannot be written")
        self.validate()
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise DataError(f"{out}: output folder exists and is not empty (use --overwrite)")
        return atomic_dir(out, self._write_files)

    def _write_files(self, folder: Path) -> None:
        pq.write_table(self.items, folder / "items.parquet")
        pq.write_table(self.events, folder / "events.parquet")
        if self.assortment is not None:
            pq.write_table(self.assortment, folder / "assortment.parquet")
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))


def read_dataset(path: str | Path, item_extras: bool = True, item_columns: Sequence[str] | None = None) -> Dataset:
    """Read a dataset folder written by an importer or ``genrec data synth``. ``item_extras``: keep
    items.parquet's columns beyond the contract (False: not a catalog's precomputed vectors, which training
    and evaluation never read from here); ``item_columns``: only these of the contract's (``read_items``)."""
    path = Path(path)
    events = events_path(path)  # a DataError when the folder or its events are missing
    assortment_path = path / "assortment.parquet"
    meta_path = path / "meta.json"
    return Dataset(
        items=read_items(path, extras=item_extras, columns=item_columns),
        item_columns=None if item_columns is None else tuple(item_columns),
        events=pq.read_table(events),
        assortment=pq.read_table(assortment_path) if assortment_path.is_file() else None,
        meta=json.loads(meta_path.read_text()) if meta_path.is_file() else {},
    )


def events_path(path: str | Path) -> Path:
    """The events.parquet of a dataset folder (a DataError when it is missing)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: dataset folder not found")
    events = path / "events.parquet"
    if not events.is_file():
        raise DataError(f"{events}: file not found")
    return events


def read_events(path: str | Path) -> pa.Table:
    """A dataset folder's events alone, conformed to ``EVENTS_SCHEMA`` (no items or assortment read)."""
    return conform(pq.read_table(events_path(path)), EVENTS_SCHEMA, "events.parquet")
