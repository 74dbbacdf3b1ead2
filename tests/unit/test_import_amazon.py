"""The Amazon importer: small generated files (plain and gzip) for the id, brand and bad-input rules
(the real Beauty data reproduced exactly: ``tests/integration/test_beauty.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from genrec.cli import main
from genrec.data.importers.amazon import import_amazon, split_brands
from semid.common import DataError

SEQUENCES = "U1 A1 A2 A3\nU2 A2 A4\n\nU3 A3 A1 A2 A5 A1\n"
PHRASES = "A1 red matte lipstick\nA2\nA3 argan oil shampoo 8 oz\nA4 mascara black\nA5 kabuki brush\nA6 never bought\n"
ATTRIBUTES = [
    {"item_id": 1, "asin": "A1", "attributes": ["L&#39;Oreal Paris", "Makeup", "Lips", "Lipstick"]},
    {"item_id": 2, "asin": "A2", "attributes": ["Unknown", "Hair Care", "Shampoos"]},
    {"item_id": 3, "asin": "A3", "attributes": ["Hair Care", "Conditioners"]},
    {"item_id": 4, "asin": "A4", "attributes": ["Makeup", "Eyes"]},
    {"item_id": 5, "asin": "A5", "attributes": ["Tools & Accessories", "Brushes"]},
    {"item_id": 9, "asin": "Z9", "attributes": ["Makeup"]},
]
DATAMAPS = {"user2id": {"U1": "3", "U2": "1", "U3": "2"},
            "item2id": {"A1": "6", "A2": "5", "A3": "4", "A4": "3", "A5": "2", "A6": "1"}}


def make_src(folder: Path, make_file, gz: bool, with_attributes: bool = True, with_datamaps: bool = False,
             **changes: str) -> Path:
    """A small Amazon folder; ``changes`` replaces a file's text by its short name (sequences, phrases,
    attributes, datamaps)."""
    texts = {
        "sequences": ("gram_user_sequence_asin.txt", SEQUENCES),
        "phrases": ("idgenrec_item_textual_id.txt", PHRASES),
        "attributes": ("derived_item_attributes_decoded.jsonl", "\n".join(json.dumps(a) for a in ATTRIBUTES)
                       if with_attributes else None),
        "datamaps": ("p5_datamaps.json", json.dumps(DATAMAPS) if with_datamaps else None),
    }
    for key, (name, text) in texts.items():
        text = changes.get(key, text)
        if text is not None:
            make_file(folder, name, text, gz)
    return folder


def sequences(ds) -> dict[int, list[int]]:
    """Each user's items in ts order (checking session_id = user_id and ts = position = 0..n-1)."""
    e = ds.events.sort_by([("user_id", "ascending"), ("ts", "ascending")])
    out: dict[int, list[int]] = {}
    for u, s, ts, item, pos in zip(*(e.column(c).to_pylist()
                                     for c in ("user_id", "session_id", "ts", "item_id", "position"))):
        assert s == u and ts == pos == len(out.setdefault(u, []))
        out[u].append(item)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_small_import_first_appearance_ids(tmp_path: Path, make_file, gz: bool):
    ds = import_amazon(make_src(tmp_path / "src", make_file, gz), tmp_path / "out")
    # items 1.. by first appearance (A1 A2 A3 A4 A5), then the never-seen A6; users by line
    assert sequences(ds) == {1: [1, 2, 3], 2: [2, 4], 3: [3, 1, 2, 5, 1]}
    items = {i["item_id"]: i for i in ds.items.to_pylist()}
    assert sorted(items) == [1, 2, 3, 4, 5, 6]
    assert items[1]["brand"] == "L'Oreal Paris" and items[1]["category_path"] == ["Makeup", "Lips", "Lipstick"]
    assert items[1]["text"] == "red matte lipstick. Brand: L'Oreal Paris. Makeup > Lips > Lipstick"
    assert items[2]["brand"] is None and items[2]["category_path"] == ["Hair Care", "Shampoos"]
    assert items[2]["title"] == "Shampoos"  # empty phrase: brand (none here) + leaf category
    assert items[3]["brand"] is None and items[3]["category_path"] == ["Hair Care", "Conditioners"]
    assert items[5]["category_path"] == ["Tools & Accessories", "Brushes"]  # top level seen only unbranded
    assert items[6]["brand"] is None and items[6]["category_path"] == [] and items[6]["text"] == "never bought"
    m = ds.meta
    assert m["counts"]["users"] == 3 and m["counts"]["interactions"] == 10 and m["counts"]["empty_phrases"] == 1
    assert m["counts"]["attribute_rows_not_in_items"] == 1
    assert m["choices"]["top_level_categories"] == ["Hair Care", "Makeup", "Tools & Accessories"]
    assert ds.events.column("retailer_id").null_count == ds.events.num_rows


@pytest.mark.parametrize("gz", [False, True])
def test_small_import_datamaps_ids(tmp_path: Path, make_file, gz: bool):
    ds = import_amazon(make_src(tmp_path / "src", make_file, gz, with_datamaps=True), tmp_path / "out")
    assert sequences(ds) == {3: [6, 5, 4], 1: [5, 3], 2: [4, 6, 5, 2, 6]}
    titles = dict(zip(ds.items.column("item_id").to_pylist(), ds.items.column("title").to_pylist()))
    assert titles[6] == "red matte lipstick" and titles[1] == "never bought"


def test_without_attributes(tmp_path: Path, make_file):
    ds = import_amazon(make_src(tmp_path / "src", make_file, True, with_attributes=False), tmp_path / "out")
    assert ds.items.column("brand").null_count == 6
    assert all(p == [] for p in ds.items.column("category_path").to_pylist())
    assert ds.items.column("title").to_pylist()[1] == "A2"  # empty phrase, nothing else known: the ASIN


def test_split_brands():
    lists = [["B1", "Top", "Sub"], ["Top", "Sub2"], ["Unknown", "Top", "Sub"], ["Solo", "Leaf"], ["Top"], []]
    brands, paths, tops = split_brands(lists)
    assert brands == ["B1", None, None, None, None, None]
    assert paths == [["Top", "Sub"], ["Top", "Sub2"], ["Top", "Sub"], ["Solo", "Leaf"], ["Top"], []]
    assert tops == {"Top", "Solo"}


BAD_INPUTS = {
    "missing sequences": (dict(sequences=None), ["gram_user_sequence_asin.txt", "file not found"]),
    "missing phrases": (dict(phrases=None), ["idgenrec_item_textual_id.txt", "file not found"]),
    "unknown ASIN": (dict(sequences=SEQUENCES + "U4 A1 Q7\n"), ["gram_user_sequence_asin.txt", "Q7"]),
    "duplicate ASIN": (dict(phrases=PHRASES + "A3 again\n"), ["idgenrec_item_textual_id.txt", "duplicate ASIN"]),
    "duplicate user": (dict(sequences=SEQUENCES + "U2 A1\n"), ["gram_user_sequence_asin.txt", "duplicate user"]),
    "empty sequences": (dict(sequences="\n"), ["gram_user_sequence_asin.txt", "no user sequences"]),
    "users without items": (dict(sequences="U1\nU2\n"), ["gram_user_sequence_asin.txt", "no interactions"]),
    "bad attributes": (dict(attributes='{"asin": "A1", "attributes": ["x"]}\nnot json\n'),
                       ["derived_item_attributes_decoded.jsonl", "line 2"]),
    "datamaps lacks an item": (dict(datamaps=json.dumps({"user2id": DATAMAPS["user2id"], "item2id": {"A1": "1"}})),
                               ["p5_datamaps.json", "ASINs lack an id"]),
    "datamaps duplicate id": (dict(datamaps=json.dumps({"user2id": DATAMAPS["user2id"],
                                                        "item2id": {**DATAMAPS["item2id"], "A2": "6"}})),
                              ["p5_datamaps.json", "duplicate ASIN id"]),
    "datamaps not json": (dict(datamaps="{"), ["p5_datamaps.json", "not a P5 datamaps file"]),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(tmp_path: Path, make_file, case: str, gz: bool):
    changes, fragments = BAD_INPUTS[case]
    src = make_src(tmp_path / "src", make_file, gz, **changes)
    out = tmp_path / "outdir" / "ds"
    with pytest.raises(DataError) as err:
        import_amazon(src, out)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert not out.exists()
    assert not (tmp_path / "outdir").exists() or not any((tmp_path / "outdir").iterdir())


def test_cli_bad_input_returns_2(tmp_path: Path, make_file, capsys):
    src = make_src(tmp_path / "src", make_file, True, sequences=SEQUENCES + "U9 NOPE\n")
    assert main(["data", "import", "amazon", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["data", "import", "amazon", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
