"""Dataset statistics: exact numbers on a small hand-made dataset, the CLI (the real imports:
``tests/integration``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genrec.cli import main
from genrec.data.dataset import Dataset
from genrec.data.stats import categories_per_level, dataset_stats, format_stats, summarize
from semid.common import DataError


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """5 items (one uncategorised, two never bought), 3 users, per-user session numbers, 2 retailers."""
    items = pa.table({
        "item_id": pa.array([10, 11, 12, 13, 14], pa.int64()),
        "title": ["a", "b", "c", "d", "e"],
        "text": ["a", "b", "c", "d", "e"],
        "brand": ["X", "X", "Y", None, None],
        "category_path": [["food", "fruit"], ["food", "fruit"], ["food", "dairy", "milk"], ["home"], []],
    })
    # (user, session): (1,0)=3 events, (1,1)=1, (2,0)=2 (same session number as user 1: a different session)
    events = pa.table({
        "user_id": pa.array([1, 1, 1, 1, 2, 2], pa.int64()),
        "session_id": pa.array([0, 0, 0, 1, 0, 0], pa.int64()),
        "ts": pa.array([0, 0, 0, 1, 0, 0], pa.int64()),
        "item_id": pa.array([10, 11, 10, 12, 10, 12], pa.int64()),
        "position": pa.array([1, 2, 3, 1, 1, 2], pa.int32()),
        "retailer_id": pa.array([0, 0, 0, 0, 1, 1], pa.int32()),
    })
    assortment = pa.table({"retailer_id": pa.array([0, 0, 0, 1, 1, 2], pa.int32()),
                           "item_id": pa.array([10, 11, 12, 10, 12, 13], pa.int64())})
    out = tmp_path / "small"
    Dataset(items=items, events=events, assortment=assortment, meta={"source": "test"}).write(out)
    return out


def test_small_stats(small: Path):
    s = dataset_stats(small)
    assert s["source"] == "test"
    c = s["counts"]
    assert (c["items"], c["users"], c["sessions"], c["events"], c["retailers"]) == (5, 2, 3, 6, 3)
    assert c["categories_per_level"] == [2, 2, 1]  # food, home / food>fruit, food>dairy / food>dairy>milk
    assert c["brands"] == 2 and c["uncategorized_items"] == 1
    d = s["distributions"]
    assert d["session_length"] == {"min": 1, "median": 2.0, "mean": 2.0, "p90": 2.8, "max": 3}
    assert d["events_per_user"]["min"] == 2 and d["events_per_user"]["max"] == 4
    assert d["interactions_per_item"] == {"min": 0, "median": 1.0, "mean": 1.2, "p90": 2.6, "max": 3}  # 0 0 1 2 3
    # leaves: food>fruit (2 items), food>dairy>milk (1), home (1)
    assert d["items_per_leaf_category"]["max"] == 2 and d["items_per_leaf_category"]["min"] == 1
    assert d["items_per_retailer"] == {"min": 1, "median": 2.0, "mean": 2.0, "p90": 2.8, "max": 3}
    assert s["never_interacted_share"] == pytest.approx(0.4)
    assert s["top_leaf_categories"][0] == {"category": "food > fruit", "items": 2, "events": 4}
    assert s["top_leaf_categories"][1] == {"category": "food > dairy > milk", "items": 1, "events": 2}
    assert s["top_root_categories"][0] == {"category": "food", "items": 3, "events": 6}
    json.dumps(s)  # JSON-ready
    text = format_stats(s)
    assert "items 5" in text and "sessions 3" in text and "2 / 2 / 1" in text
    assert "40.0% of items never interacted with" in text and "food > fruit" in text


def test_summarize_and_levels():
    assert summarize(np.array([], dtype=np.int64))["median"] is None
    assert summarize(np.array([4]))["p90"] == 4.0
    paths = pa.array([["a", "b"], ["c", "b"], [], None], pa.list_(pa.string()))
    assert categories_per_level(paths) == [2, 2]  # a>b and c>b are different categories


def test_cli_stats(small: Path, capsys):
    assert main(["data", "stats", str(small)]) == 0
    assert "top leaf categories" in capsys.readouterr().out
    assert main(["data", "stats", str(small), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["events"] == 6


def test_missing_dataset(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        dataset_stats(tmp_path / "none")
    assert main(["data", "stats", str(tmp_path / "none")]) == 2
