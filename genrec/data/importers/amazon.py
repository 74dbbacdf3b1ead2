"""Import an Amazon 2014 5-core category (e.g. Beauty, as used by S3-Rec, P5 and TIGER) from its ASIN
sequences and item phrases into the dataset layout: one session per user, in time order."""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset
from genrec.data.importers.readers import check_unique, find_file, open_text, read_lines
from semid.common import DataError

log = logging.getLogger(__name__)

SEQUENCE_FILE = "gram_user_sequence_asin.txt"
PHRASE_FILE = "idgenrec_item_textual_id.txt"
ATTRIBUTE_FILE = "derived_item_attributes_decoded.jsonl"
DATAMAPS_FILE = "p5_datamaps.json"
UNKNOWN_BRAND = "Unknown"  # the attribute data's placeholder for brands on too few items


def import_amazon(src: Path, out: Path, overwrite: bool = False) -> Dataset:
    """Read the Amazon files in ``src``, write the dataset to ``out`` (atomically) and return it.

    Items are the phrase file's ASINs (title = phrase, text = phrase + brand + category path); item and
    user ids come from p5_datamaps.json(.gz) when present, otherwise 1.. in order of first appearance in
    the sequences (which is how those maps were made). Each user's line is one session (session_id =
    user_id) with ts = position = 0..n-1. The attributes file is optional: without it brand is null and
    category_path empty.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    seq_path, phrase_path = find_file(src, SEQUENCE_FILE), find_file(src, PHRASE_FILE)
    attr_path = find_file(src, ATTRIBUTE_FILE, required=False)
    maps_path = find_file(src, DATAMAPS_FILE, required=False)
    users, lengths, tokens = read_sequences(seq_path)
    asins, phrases = read_phrases(phrase_path)
    token_item = _token_rows(tokens, asins, seq_path, phrase_path)
    if maps_path is not None:
        user_ids, item_ids = ids_from_datamaps(maps_path, users, asins.to_pylist())
    else:
        user_ids = np.arange(1, len(users) + 1, dtype=np.int64)
        item_ids = first_appearance_ids(token_item, len(asins))
    brands, paths, attr_meta = (item_attributes(attr_path, asins.to_pylist()) if attr_path is not None
                                else ([None] * len(asins), [[] for _ in asins], {}))
    items, empty_phrases = _items_table(item_ids, asins.to_pylist(), phrases.to_pylist(), brands, paths)
    events = _events_table(user_ids, lengths, item_ids[token_item])
    if events.num_rows == 0:
        raise DataError(f"{seq_path}: no interactions")
    files = [p for p in (seq_path, phrase_path, attr_path, maps_path) if p is not None]
    meta = _meta(src, files, lengths, items, events, empty_phrases, attr_meta, maps_path is not None)
    ds = Dataset(items=items, events=events, meta=meta)
    ds.write(out, overwrite=overwrite)
    log.info("amazon %s: %d items, %d users, %d events -> %s", src.name, items.num_rows, len(users),
             events.num_rows, out)
    return ds


def _token_rows(tokens: pa.Array, asins: pa.Array, seq_path: Path, phrase_path: Path) -> np.ndarray:
    """Each sequence entry's row in the phrase file's ASINs; an ASIN the phrase file lacks is a DataError."""
    token_item = pc.fill_null(pc.index_in(tokens, value_set=asins), -1).to_numpy()
    if (token_item < 0).any():
        bad = np.unique(tokens.filter(pa.array(token_item < 0)).to_numpy(zero_copy_only=False))
        raise DataError(f"{seq_path}: {int((token_item < 0).sum())} entries name {bad.size} ASINs not in "
                        f"{phrase_path.name}, e.g. {bad[:5].tolist()}")
    return token_item


def _meta(src: Path, files: list[Path], lengths: np.ndarray, items: pa.Table, events: pa.Table,
          empty_phrases: int, attr_meta: dict, datamaps: bool) -> dict:
    """The dataset's meta record: source, counts and the choices the import made."""
    return {
        "source": "amazon",
        "category": src.name,
        "src": str(src.resolve()),
        "files": [p.name for p in files],
        "counts": {
            "users": int(np.count_nonzero(lengths)),
            "users_without_items": int(np.count_nonzero(lengths == 0)),
            "items": items.num_rows,
            "interactions": events.num_rows,
            "empty_phrases": empty_phrases,
            **attr_meta.pop("counts", {}),
        },
        "choices": {
            "ids": f"{DATAMAPS_FILE} user2id/item2id" if datamaps
            else "1.. in order of first appearance (users: line order; items: sequences, then phrase file)",
            "session_id": "user_id (one session per user)",
            "ts": "position in the user's sequence, 0..n-1 (the data has no timestamps)",
            "title": "the IDGenRec phrase (brand + leaf category, or the ASIN, where the phrase is empty)",
            "text": "title + '. Brand: ' + brand + '. ' + ' > '.join(category_path), missing parts left out",
            **attr_meta,
        },
        "retailers_simulated": False,
        "retailers": 0,
    }


def read_sequences(path: Path) -> tuple[list[str], np.ndarray, pa.Array]:
    """``USER ASIN ASIN ...`` lines: the users in line order, each one's sequence length, and all ASINs
    concatenated in line and time order. A user on two lines is a DataError."""
    users, lengths, tokens = [], [], []
    for line in read_lines(path):
        parts = line.split()
        users.append(parts[0])
        lengths.append(len(parts) - 1)
        tokens.extend(parts[1:])
    if not users:
        raise DataError(f"{path}: no user sequences")
    check_unique(np.array(users), path, "user")
    return users, np.array(lengths, dtype=np.int64), pa.array(tokens, pa.string())


def read_phrases(path: Path) -> tuple[pa.Array, pa.Array]:
    """``ASIN phrase words ...`` lines: the ASINs and their phrases (possibly empty). Duplicate ASINs are a
    DataError."""
    lines = pa.array(read_lines(path), pa.string())
    if len(lines) == 0:
        raise DataError(f"{path}: no items")
    parts = pc.split_pattern(pc.binary_join_element_wise(lines, "", " "), " ", max_splits=1)  # "ASIN" -> [ASIN, ""]
    asins, phrases = pc.list_element(parts, 0), pc.list_element(parts, 1)
    check_unique(asins.to_numpy(zero_copy_only=False), path, "ASIN")
    return asins, pc.utf8_trim_whitespace(phrases)


def ids_from_datamaps(path: Path, users: list[str], asins: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Integer user and item ids from a P5 datamaps file; any user or ASIN it lacks is a DataError."""
    try:
        with open_text(path) as f:
            maps = json.load(f)
        user2id, item2id = maps["user2id"], maps["item2id"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a P5 datamaps file with user2id and item2id: {e}") from e
    out = []
    for name, mapping, keys in (("user", user2id, users), ("ASIN", item2id, asins)):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise DataError(f"{path}: {len(missing)} {name}s lack an id, e.g. {missing[:5]}")
        try:
            ids = np.array([int(mapping[k]) for k in keys], dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: a {name} id is not an integer: {e}") from e
        check_unique(ids, path, f"{name} id")
        out.append(ids)
    return out[0], out[1]


def first_appearance_ids(token_item: np.ndarray, n_items: int) -> np.ndarray:
    """Item ids 1..n by first appearance in the sequences, then the never-seen items in file order;
    returned per phrase-file row."""
    seen, first = np.unique(token_item, return_index=True)
    order = seen[np.argsort(first)]
    unseen = np.setdiff1d(np.arange(n_items), seen)
    ids = np.empty(n_items, dtype=np.int64)
    ids[np.concatenate([order, unseen])] = np.arange(1, n_items + 1)
    return ids


def item_attributes(path: Path, asins: list[str]) -> tuple[list[str | None], list[list[str]], dict]:
    """Brand and category path per ASIN (None / [] where the file has none), via ``split_brands``; plus meta."""
    by_asin: dict[str, list[str]] = {}
    for n, line in enumerate(read_lines(path), 1):
        try:
            row = json.loads(line)
            by_asin[str(row["asin"])] = [html.unescape(str(a)).strip() for a in row["attributes"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: line {n} is not a JSON object with asin and attributes: {e}") from e
    lists = [by_asin.get(a, []) for a in asins]
    brands, paths, tops = split_brands(lists)
    wanted = set(asins)
    meta = {
        "counts": {
            "items_with_attributes": sum(1 for a in asins if a in by_asin),
            "attribute_rows_not_in_items": sum(1 for a in by_asin if a not in wanted),
            "brands": len({b for b in brands if b is not None}),
        },
        "top_level_categories": sorted(tops),
        "brand_rule": " ".join(split_brands.__doc__.split()),
    }
    return brands, paths, meta


def split_brands(lists: list[list[str]]) -> tuple[list[str | None], list[list[str]], set[str]]:
    """Split attribute lists [brand?, category, sub-category, ...] into brand and category path. A value
    seen both first and second in some lists is a top-level category (a brand never follows anything; a
    category follows its brand); another leading value is a brand if some list continues it with a
    top-level category, else it is a top-level category seen only unbranded. Brand "Unknown" -> null."""
    heads = {a[0] for a in lists if a}
    seconds = {a[1] for a in lists if len(a) > 1}
    tops = heads & seconds
    branded = {a[0] for a in lists if len(a) > 1 and a[0] not in tops and a[1] in tops}
    tops |= heads - branded
    brands, paths = [], []
    for a in lists:
        if a and a[0] in branded:
            brands.append(None if a[0] == UNKNOWN_BRAND else a[0])
            paths.append(a[1:])
        else:
            brands.append(None)
            paths.append(list(a))
    return brands, paths, tops


def _items_table(item_ids: np.ndarray, asins: list[str], phrases: list[str], brands: list[str | None],
                 paths: list[list[str]]) -> tuple[pa.Table, int]:
    """The items table sorted by item_id, and how many items had an empty phrase."""
    titles, texts, empty = [], [], 0
    for asin, phrase, brand, path in zip(asins, phrases, brands, paths):
        if not phrase:
            empty += 1
            phrase = " ".join(p for p in (brand, path[-1] if path else None) if p) or asin
        titles.append(phrase)
        parts = [phrase] + ([f"Brand: {brand}"] if brand else []) + ([" > ".join(path)] if path else [])
        texts.append(". ".join(parts))
    table = pa.table({
        "item_id": pa.array(item_ids, pa.int64()),
        "title": pa.array(titles, pa.string()),
        "text": pa.array(texts, pa.string()),
        "brand": pa.array(brands, pa.string()),
        "category_path": pa.array(paths, pa.list_(pa.string())),
        "first_seen": pa.nulls(len(asins), pa.int64()),
    })
    return table.sort_by("item_id"), empty


def _events_table(user_ids: np.ndarray, lengths: np.ndarray, item_ids: np.ndarray) -> pa.Table:
    """One session per user: ts = position = index in the user's sequence."""
    starts = np.cumsum(lengths) - lengths
    step = np.arange(item_ids.size, dtype=np.int64) - np.repeat(starts, lengths)
    user = np.repeat(user_ids, lengths)
    return pa.table({
        "user_id": pa.array(user),
        "session_id": pa.array(user),
        "ts": pa.array(step),
        "item_id": pa.array(item_ids, pa.int64()),
        "position": pa.array(step.astype(np.int32)),
        "retailer_id": pa.nulls(item_ids.size, pa.int32()),
    })
