"""The dataset contract: schema conformance, validation and atomic writes."""
from __future__ import annotations

import pyarrow as pa
import pytest

from genrec.data.dataset import Dataset, read_dataset
from semid.common import DataError


def _items(ids=(1, 2, 3)):
    return pa.table(
        {
            "item_id": list(ids),
            "title": [f"p{i}" for i in ids],
            "text": [f"product {i}" for i in ids],
            "category_path": [["a", "b"]] * len(ids),
        }
    )


def _events(item_ids=(1, 2, 3)):
    n = len(item_ids)
    return pa.table(
        {"user_id": [1] * n, "session_id": [1] * n, "ts": [0] * n, "item_id": list(item_ids),
         "position": list(range(n))}
    )


def test_round_trip_fills_optional_columns(tmp_path):
    ds = Dataset(_items(), _events(), meta={"source": "test"})
    ds.write(tmp_path / "ds")
    back = read_dataset(tmp_path / "ds")
    assert back.items.schema == ds.items.schema
    assert back.items.column("brand").null_count == 3
    assert back.events.column("position").type == pa.int32()
    assert back.meta == {"source": "test"}
    assert back.assortment is None


def test_missing_required_column_is_named():
    with pytest.raises(DataError, match="items.parquet: missing required column 'title'"):
        Dataset(_items().drop(["title"]), _events())


@pytest.mark.parametrize(
    "items, events, message",
    [
        (_items((1, 1, 2)), _events((1, 2)), "duplicate item_id"),
        (_items(), _events((1, 9)), r"events.parquet: 1 rows name 1 item_id values not in items.parquet, e.g. \[9\]"),
        (_items(), _events(()), "no events"),
    ],
)
def test_validation_errors_leave_nothing_behind(tmp_path, items, events, message):
    with pytest.raises(DataError, match=message):
        Dataset(items, events).write(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    Dataset(_items(), _events()).write(tmp_path / "ds")
    with pytest.raises(DataError, match="exists and is not empty"):
        Dataset(_items(), _events()).write(tmp_path / "ds")
    Dataset(_items((1, 2, 3, 4)), _events()).write(tmp_path / "ds", overwrite=True)
    assert read_dataset(tmp_path / "ds").items.num_rows == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unknown_assortment_items_rejected():
    assortment = pa.table({"retailer_id": [1, 1], "item_id": [1, 42]})
    with pytest.raises(DataError, match="assortment.parquet: 1 rows"):
        Dataset(_items(), _events(), assortment=assortment).validate()
