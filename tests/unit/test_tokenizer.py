"""SID tokenizer: id layout by level, exact round trips (single, batch, string form), errors, save/load."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from semid.common import DataError
from semid.tokenizer import (
    RETAILER_LEVEL,
    SPECIAL_LEVEL,
    SPECIAL_TOKENS,
    SIDTokenizer,
    format_codes,
    in_collision_group,
)

SIZES = [128, 256, 512, 1024]


@pytest.fixture
def tok() -> SIDTokenizer:
    return SIDTokenizer(SIZES, dedup_size=4, retailer_ids=[30, 10, 20], codebook_version="abc123")


def random_codes(n: int, sizes=SIZES, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, s, n) for s in sizes]).astype(np.int32)


def test_layout_ranges_are_contiguous_and_say_the_level(tok):
    assert tok.vocab_size == len(SPECIAL_TOKENS) + sum(SIZES) + 4 + 3
    assert tok.sid_vocab_size == sum(SIZES) + 4
    assert tok.tokens_per_item == 5
    stop = len(SPECIAL_TOKENS)
    for level, width in enumerate([*SIZES, 4]):
        start, end = tok.level_range(level)
        assert (start, end - start) == (stop, width)
        stop = end
    assert tok.retailer_range() == (stop, tok.vocab_size)
    levels = tok.level_of(np.arange(tok.vocab_size))
    expected = np.concatenate(
        [np.full(len(SPECIAL_TOKENS), SPECIAL_LEVEL)]
        + [np.full(w, lvl) for lvl, w in enumerate([*SIZES, 4])]
        + [np.full(3, RETAILER_LEVEL)]
    )
    np.testing.assert_array_equal(levels, expected)
    assert tok.level_of(tok.level_range(2)[0]) == 2
    with pytest.raises(DataError):
        tok.level_range(5)
    with pytest.raises(DataError):
        tok.level_of(tok.vocab_size)


def test_single_round_trip(tok):
    tokens = tok.encode([6, 19, 32, 63], 2)
    assert tokens.shape == (5,)
    assert [tok.level_of(int(t)) for t in tokens] == [0, 1, 2, 3, 4]
    assert tok.decode(tokens) == ((6, 19, 32, 63), 2)
    assert tok.decode(tok.encode([0, 0, 0, 0])) == ((0, 0, 0, 0), 0)


def test_batch_round_trip_is_exact(tok):
    codes = random_codes(1000)
    dedup = np.random.default_rng(1).integers(0, 4, 1000)
    tokens = tok.encode_batch(codes, dedup)
    assert tokens.shape == (1000, 5)
    for level in range(5):  # every column lies in its level's range
        start, stop = tok.level_range(level)
        assert ((tokens[:, level] >= start) & (tokens[:, level] < stop)).all()
    back_codes, back_dedup = tok.decode_batch(tokens)
    np.testing.assert_array_equal(back_codes, codes)
    np.testing.assert_array_equal(back_dedup, dedup)
    np.testing.assert_array_equal(tok.encode_batch(codes)[:, -1], tok.level_range(4)[0])  # dedup 0 by default


def test_string_round_trip(tok):
    assert tok.parse_sid("6_19_32_63") == ((6, 19, 32, 63), 0)
    assert tok.parse_sid("6_19_32_63_2") == ((6, 19, 32, 63), 2)
    assert tok.parse_sid("6_19_32_63_0") == ((6, 19, 32, 63), 0)
    assert tok.format_sid((6, 19, 32, 63)) == "6_19_32_63"
    assert tok.format_sid((6, 19, 32, 63), 2) == "6_19_32_63_2"
    assert tok.format_sid((6, 19, 32, 63), 0, show_dedup=True) == "6_19_32_63_0"
    assert tok.tokens_to_sid(tok.sid_to_tokens("6_19_32_63_3")) == "6_19_32_63_3"
    assert tok.tokens_to_sid(tok.sid_to_tokens("1_2_3_4")) == "1_2_3_4"

    codes = random_codes(500, seed=2)
    dedup = np.random.default_rng(3).integers(0, 4, 500)
    show = np.random.default_rng(4).random(500) < 0.5  # e.g. "its group has more than one product"
    strings = tok.format_sids(codes, dedup, show)
    parts = np.array([s.count("_") + 1 for s in strings])
    np.testing.assert_array_equal(parts, np.where(show | (dedup > 0), 5, 4))
    back_codes, back_dedup = tok.parse_sids(strings)
    np.testing.assert_array_equal(back_codes, codes)
    np.testing.assert_array_equal(back_dedup, dedup)
    assert tok.format_sids(back_codes, back_dedup, show) == strings
    back_codes, _ = tok.parse_sids(pa.chunked_array([pa.array(strings[:10]), pa.array(strings[10:])]))
    np.testing.assert_array_equal(back_codes, codes)


def test_sid_strings_of_a_catalog_show_dedup_only_in_collision_groups():
    tok = SIDTokenizer([8, 8], 3)
    codes = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [5, 6]])
    dedup = np.array([0, 0, 1, 2, 0])
    show = in_collision_group(codes)
    np.testing.assert_array_equal(show, [True, False, True, True, False])
    assert tok.format_sids(codes, dedup, show) == ["1_2_0", "3_4", "1_2_1", "1_2_2", "5_6"]


def test_format_codes_helper():
    assert format_codes(np.array([[1, 2], [3, 4]]), np.array([-1, 0])) == ["1_2", "3_4_0"]
    assert format_codes(np.array([[7, 8, 9]])) == ["7_8_9"]


@pytest.mark.parametrize(
    "sid, message",
    [
        ("6_19_32", "has 3 parts"),
        ("6_19_32_63_1_1", "has 6 parts"),
        ("6_19_x_63", "malformed"),
        ("6__32_63", "malformed"),
        ("-6_19_32_63", "malformed"),
        ("6_19_32_1024", "level-3 code 1024"),
        ("128_19_32_63", "level-0 code 128"),
        ("6_19_32_63_4", "dedup index 4"),
        ("", "has 1 parts"),
    ],
)
def test_malformed_sid_strings_raise(tok, sid, message):
    with pytest.raises(DataError, match=message):
        tok.parse_sid(sid)


def test_out_of_range_codes_and_tokens_raise(tok):
    with pytest.raises(DataError, match="level-1 code 256"):
        tok.encode([0, 256, 0, 0])
    with pytest.raises(DataError, match="level-0 code -1"):
        tok.encode([-1, 0, 0, 0])
    with pytest.raises(DataError, match="dedup index 9"):
        tok.encode([0, 0, 0, 0], 9)
    with pytest.raises(DataError, match="shape"):
        tok.encode_batch(np.zeros((3, 3), int))
    tokens = tok.encode([1, 2, 3, 4])
    swapped = tokens[[1, 0, 2, 3, 4]]
    with pytest.raises(DataError, match="not a level-0 token"):
        tok.decode(swapped)
    with pytest.raises(DataError, match="shape"):
        tok.decode(tokens[:4])
    with pytest.raises(DataError):
        SIDTokenizer([], 1)
    with pytest.raises(DataError):
        SIDTokenizer([4, 4], 0)


def test_retailer_tokens(tok):
    ids = tok.encode_retailer(np.array([10, 20, 30]))
    start, stop = tok.retailer_range()
    np.testing.assert_array_equal(ids, np.arange(start, stop))
    assert tok.decode_retailer(tok.encode_retailer(20)) == 20
    assert (tok.level_of(ids) == RETAILER_LEVEL).all()
    with pytest.raises(DataError, match="unknown retailer"):
        tok.encode_retailer(99)
    with pytest.raises(DataError, match="retailer tokens"):
        tok.decode_retailer(start - 1)
    no_retailers = SIDTokenizer(SIZES, 1)
    assert no_retailers.retailer_range()[0] == no_retailers.retailer_range()[1] == no_retailers.vocab_size
    with pytest.raises(DataError):
        no_retailers.encode_retailer(1)


def test_save_load_round_trip_and_version_check(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    data = json.loads(path.read_text())
    assert data["codebook_version"] == "abc123" and data["vocab_size"] == tok.vocab_size
    loaded = SIDTokenizer.load(path, codebook_version="abc123")
    assert loaded.to_dict() == tok.to_dict()
    codes = random_codes(50)
    np.testing.assert_array_equal(loaded.encode_batch(codes), tok.encode_batch(codes))
    with pytest.raises(DataError, match="codebook version 'abc123'"):
        SIDTokenizer.load(path, codebook_version="other")
    with pytest.raises(DataError, match="not found"):
        SIDTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        SIDTokenizer.load(tmp_path / "bad.json")
    data["vocab_size"] += 1
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="vocab_size"):
        SIDTokenizer.load(tmp_path / "edited.json")


def test_from_sids_table():
    table = pa.table(
        {
            "item_id": pa.array([1, 2, 3], pa.int64()),
            "codes": pa.array([[1, 2], [1, 2], [3, 4]], pa.list_(pa.int32())),
            "dedup": pa.array([0, 1, 0], pa.int32()),
            "sid": ["1_2_0", "1_2_1", "3_4"],
        }
    )
    tok = SIDTokenizer.from_sids(table, [8, 8])
    assert tok.dedup_size == 2 and tok.vocab_size == len(SPECIAL_TOKENS) + 8 + 8 + 2
    assert SIDTokenizer.from_sids(table, [8, 8], capacity=16).dedup_size == 16
    with pytest.raises(DataError, match="capacity"):
        SIDTokenizer.from_sids(table, [8, 8], capacity=1)
    codes, dedup = tok.parse_sids(table.column("sid"))
    np.testing.assert_array_equal(codes, np.array(table.column("codes").to_pylist()))
    np.testing.assert_array_equal(dedup, table.column("dedup").to_numpy())
