"""End to end on a tiny synthetic world: `genrec train` builds SIDs, tokenizer, index and decoder into a
run folder, and the Retriever loaded from it returns valid, stocked products."""
from __future__ import annotations

import pytest

from genrec.cli import main
from genrec.data.dataset import read_dataset
from genrec.retriever import Retriever
from semid.common import DataError
from semid.config import save_yaml
from semid.store import read_sids


def test_run_folder_holds_every_part(tiny_run):
    root, _ = tiny_run
    for name in ("config.yaml", "sids.parquet", "codebook.safetensors", "tokenizer.json", "index/index.json",
                 "decoder/model/model.safetensors", "decoder/model/config.json"):
        assert (root / "run" / name).is_file(), name


def test_retriever_returns_k_valid_products(tiny_run):
    root, _ = tiny_run
    retriever = Retriever.from_run(root / "run")
    ds = read_dataset(root / "data")
    catalog = set(ds.items.column("item_id").to_pylist())
    sid_of = dict(zip(*(read_sids(root / "run").column(c).to_pylist() for c in ("item_id", "sid"))))
    histories = [[1, 2, 3], [10], [], [999_999]]  # an empty and an all-unknown history still get results
    results = retriever.retrieve(histories, k=7)
    assert [len(r) for r in results] == [7, 7, 7, 7]
    for ranked in results:
        assert {c.item_id for c in ranked} <= catalog
        assert all(c.sid == sid_of[c.item_id] for c in ranked)
        assert len({c.item_id for c in ranked}) == len(ranked)
        scores = [c.score for c in ranked]
        assert scores == sorted(scores, reverse=True)


def test_retailer_results_are_stocked_and_history_excluded(tiny_run):
    root, _ = tiny_run
    retriever = Retriever.from_run(root / "run")
    assortment = read_dataset(root / "data").assortment.to_pydict()
    stock = {r: {i for rr, i in zip(assortment["retailer_id"], assortment["item_id"]) if rr == r} for r in (0, 1)}
    history = sorted(stock[0])[:5]
    for retailer in (0, 1):
        ranked = retriever.retrieve([history], retailer_id=retailer, k=10, exclude_history=True)[0]
        assert len(ranked) == 10
        assert {c.item_id for c in ranked} <= stock[retailer]
        assert not {c.item_id for c in ranked} & set(history)
    with pytest.raises(DataError):
        retriever.retrieve([history], retailer_id=77, k=5)


def test_cli_train_resumes_a_finished_run(tiny_run, tmp_path):
    root, cfg = tiny_run
    save_yaml(cfg, tmp_path / "tiny.yaml")
    before = (root / "run" / "decoder" / "model" / "model.safetensors").read_bytes()
    assert main(["train", "--data", str(root / "data"), "--config", str(tmp_path / "tiny.yaml"),
                 "--out", str(root / "run")]) == 0
    assert (root / "run" / "decoder" / "model" / "model.safetensors").read_bytes() == before


def test_cli_eval_writes_the_table_json(tiny_run, tmp_path, capsys):
    import json

    root, _ = tiny_run
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", str(root / "run"), "--baselines", "popular,itemknn", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"genrec", "popular", "itemknn"} <= set(result["models"])
    assert 0 <= result["models"]["genrec"]["recall@10"] <= 1
    assert "ndcg@10" in result["models"]["popular"]
    assert "genrec" in capsys.readouterr().out


def test_cli_carousel_writes_ranked_rows(tiny_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, _ = tiny_run
    requests = pa.table({"user_id": pa.array([1, 2], pa.int64()), "retailer_id": pa.array([0, None], pa.int32()),
                         "history": pa.array([[1, 2, 3], None], pa.list_(pa.int64()))})
    pq.write_table(requests, tmp_path / "req.parquet")
    assert main(["carousel", "--run", str(root / "run"), "--requests", str(tmp_path / "req.parquet"),
                 "--out", str(tmp_path / "out.parquet"), "--data", str(root / "data"), "--k", "5",
                 "--no-progress"]) == 0
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert out["user_id"] == [1] * 5 + [2] * 5 and out["rank"] == [1, 2, 3, 4, 5] * 2
