"""SID assignment: uniqueness, deterministic disambiguation, string format, versions, extension."""
import numpy as np
import pyarrow as pa
import pytest

from semid.common import DataError
from semid.sids import (
    SID_SCHEMA,
    assign_sids,
    codebook_version_of,
    codes_matrix,
    collision_summary,
    extend_sids,
    parse_sid,
)

IDS = np.array([40, 10, 30, 20, 50])
CODES = np.array([[6, 19, 32, 63], [1, 2, 3, 4], [6, 19, 32, 63], [6, 19, 32, 63], [1, 2, 3, 5]])


def test_table_schema_and_strings():
    t = assign_sids(IDS, CODES, "abc123")
    assert t.schema.equals(SID_SCHEMA)
    assert codebook_version_of(t) == "abc123"
    rows = {r["item_id"]: r for r in t.to_pylist()}
    assert t.column("item_id").to_pylist() == [10, 20, 30, 40, 50]  # rows in item_id order
    assert rows[10]["sid"] == "1_2_3_4" and rows[10]["dedup"] == 0  # alone: no suffix
    # the three-way collision is broken in item_id order: 20, 30, 40
    assert [rows[i]["dedup"] for i in (20, 30, 40)] == [0, 1, 2]
    assert [rows[i]["sid"] for i in (20, 30, 40)] == ["6_19_32_63_0", "6_19_32_63_1", "6_19_32_63_2"]
    assert rows[20]["codes"] == [6, 19, 32, 63]


def test_assignment_independent_of_input_order():
    perm = np.random.default_rng(0).permutation(len(IDS))
    assert assign_sids(IDS[perm], CODES[perm]).equals(assign_sids(IDS, CODES))


def test_full_sids_unique_at_scale():
    rng = np.random.default_rng(0)
    ids = rng.permutation(20000) * 3 + 7
    codes = rng.integers(0, 4, size=(20000, 3))  # 64 code tuples: heavy collisions
    t = assign_sids(ids, codes)
    summary = collision_summary(t)
    assert summary["full_sid_unique"] and summary["n_distinct_codes"] == 64
    assert summary["max_group"] == int(np.unique(codes, axis=0, return_counts=True)[1].max())
    dedup = t.column("dedup").to_numpy()
    assert dedup.max() == summary["max_group"] - 1
    assert np.array_equal(codes_matrix(t), codes[np.argsort(ids)])


def test_collision_summary_counts():
    s = collision_summary(assign_sids(IDS, CODES))
    assert s == {"n_items": 5, "n_distinct_codes": 3, "unique_fraction": 0.4, "max_group": 3, "full_sid_unique": True}


def test_bad_input_raises_data_error():
    with pytest.raises(DataError, match="duplicate item_id"):
        assign_sids(np.array([1, 1]), np.array([[0, 0], [1, 1]]))
    with pytest.raises(DataError, match="codes must be"):
        assign_sids(np.array([1, 2]), np.array([0, 1]))


def test_extend_never_reuses_a_full_sid():
    base = assign_sids(IDS, CODES, "v1")
    new_ids = np.array([60, 70, 80])
    new_codes = np.array([[6, 19, 32, 63], [1, 2, 3, 4], [9, 9, 9, 9]])
    t = extend_sids(base, new_ids, new_codes)
    assert codebook_version_of(t) == "v1"
    rows = {r["item_id"]: r for r in t.to_pylist()}
    assert rows[60]["sid"] == "6_19_32_63_3"  # after the existing 0, 1, 2
    assert rows[70]["sid"] == "1_2_3_4_1" and rows[10]["sid"] == "1_2_3_4"  # old product keeps its SID
    assert rows[80]["sid"] == "9_9_9_9" and rows[80]["dedup"] == 0
    assert collision_summary(t)["full_sid_unique"]
    with pytest.raises(DataError, match="already have SIDs"):
        extend_sids(t, np.array([10]), np.array([[0, 0, 0, 0]]))


def test_parse_sid_round_trip():
    for row in assign_sids(IDS, CODES).to_pylist():
        assert parse_sid(row["sid"], 4) == (row["codes"], row["dedup"])
    with pytest.raises(DataError):
        parse_sid("1_2", 4)


def test_empty_catalog_gives_empty_table():
    t = assign_sids(np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    assert t.num_rows == 0 and t.schema.equals(SID_SCHEMA)
    assert isinstance(t, pa.Table)
