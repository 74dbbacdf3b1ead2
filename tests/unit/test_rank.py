"""The rank stage (``genrec/rank``): candidate sources, feature columns, the learned ranker as a run component,
``source`` and ``explain`` through the retriever and the API."""
from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import pytest

from genrec.rank.candidates import SOURCE_BITS, CandidateSet, source_label, union
from genrec.rank.config import RankConfig
from genrec.rank.rankers import fit, labels
from semid.config import ConfigError

# ----- unit: generated candidate sets --------------------------------------------------------------------------


def _planted(n_queries: int, per: int, seed: int) -> tuple[CandidateSet, np.ndarray, np.ndarray]:
    """Queries of ``per`` candidates each, one target per query. The decoder's score favours the target a
    little; the planted ``again_count`` column marks it 90% of the time (and 1% of the others): only a
    ranker that reads that feature finds most targets. Returns (set, target offsets, target items)."""
    rng = np.random.default_rng(seed)
    query = np.repeat(np.arange(n_queries), per)
    item = np.tile(np.arange(1, per + 1), n_queries)
    target = rng.integers(0, per, n_queries) + np.arange(n_queries) * per
    dec = rng.normal(size=query.size)
    dec[target] += 0.3
    planted = (rng.random(query.size) < 0.01).astype(float)
    planted[target] = rng.random(n_queries) < 0.9
    feats = np.column_stack([dec, planted, rng.normal(size=query.size)]).astype(np.float32)
    cs = CandidateSet(query, np.arange(query.size), item, np.full(query.size, SOURCE_BITS["beam"], np.uint8),
                      n_queries, feats, ("dec_l3", "again_count", "noise"))
    return cs, np.arange(n_queries + 1), item[target]


def _top1(cs: CandidateSet, score: np.ndarray, y: np.ndarray) -> float:
    """Share of queries whose best-scored candidate is a target."""
    order = np.lexsort((-score, cs.query))
    first = np.r_[True, cs.query[order][1:] != cs.query[order][:-1]]
    return float(y[order][first].mean())


@pytest.mark.parametrize("patience", [10, 0])  # 0: no holdout, every tree on every query
def test_learned_ranker_finds_a_signal_only_a_feature_reveals(patience):
    train, t_off, t_items = _planted(600, 30, seed=0)
    ranker = fit(train, labels(train, t_off, t_items), RankConfig(min_child_samples=5, trees=60, patience=patience))
    test, t_off, t_items = _planted(400, 30, seed=1)
    y = labels(test, t_off, t_items)
    assert y.sum() == 400  # one target per query, each among its candidates
    weighted = _top1(test, test.columns(("dec_l3",))[:, 0], y)  # the decoder's order: what `weighted` ranks by
    learned = _top1(test, ranker.score(test), y)
    assert weighted < 0.2
    assert learned > 0.6, (learned, weighted)
    assert ranker.meta["target_in_candidates"] == 1.0
    if not patience:
        assert ranker.meta["best_iteration"] == 60 and ranker.meta["holdout_queries"] == 0
        assert ranker.meta["train_queries"] == 600 and ranker.meta["holdout_ndcg@10"] is None


def test_union_merges_the_sources_of_one_product():
    item_of_pos = np.array([10, 11, 12, 13])
    cs = union([(np.array([0, 0, 1]), np.array([1, 2, 1]), SOURCE_BITS["beam"]),
                (np.array([0, 1]), np.array([2, 3]), SOURCE_BITS["again"])], item_of_pos, 2, 4)
    assert cs.query.tolist() == [0, 0, 1, 1]
    assert cs.item_ids.tolist() == [11, 12, 11, 13]
    assert cs.sources.tolist() == [1, 1 | 2, 1, 2]
    assert [source_label(b) for b in cs.sources] == ["generated", "buy again", "generated", "buy again"]


@pytest.mark.parametrize("section, message", [
    ({"ranker": "boosted"}, "rank.ranker"),
    ({"sources": ["beam", "trending"]}, "unknown sources"),
    ({"sources": ["again", "co"]}, "must include beam"),
    ({"drop_features": ["decoder", "colour"]}, "unknown feature groups"),
    ({"co_top": 0}, "rank.co_top"),
    ({"learning_rate": 0}, "rank.learning_rate"),
    ({"holdout_share": 1.0}, "rank.holdout_share"),
    ({"patience": -1}, "rank.patience"),
    ({"dtype": "float16"}, "rank.dtype"),
])
def test_a_bad_rank_config_fails_on_load(tmp_path, section, message):
    import yaml

    from genrec.run.config import load_run_config

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "rank": section}))
    with pytest.raises(ConfigError, match=message) as e:
        load_run_config(path)
    assert e.value.section == "rank" and "\n" not in str(e.value)


# ----- integration: a tiny run with the learned ranker -------------------------------------------------------


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """A tiny world's run (3 epochs) with ``rank.ranker: learned`` and its ranker trained; (root, cfg)."""
    from genrec.rank.train import train_ranker
    from genrec.run.build import train_run
    from genrec.run.tiny import tiny_config, tiny_world

    root = tmp_path_factory.mktemp("ranked")
    tiny_world(seed=0, items=300, users=300, retailers=2).write(root / "data")
    cfg = tiny_config("ranked")
    cfg.train.epochs = 3
    cfg.rank = RankConfig(ranker="learned", train_queries=None, min_child_samples=5)
    train_run(root / "data", cfg, root / "run")
    assert train_ranker(root / "run", cfg, root / "data", show_progress=False) is not None
    return root, cfg


@pytest.fixture(scope="module")
def retrievers(learned_run):
    from genrec.retriever import Retriever

    run = learned_run[0] / "run"
    return Retriever.from_run(run), Retriever.from_run(run, ranker="weighted")


def _test_queries(root, cfg):
    from genrec.data.dataset import read_dataset
    from genrec.data.sequences import split_events

    return split_events(read_dataset(root / "data").events, 1 << 30, cfg.sequence)[0].test


def test_every_history_item_the_retailer_stocks_is_an_again_candidate(learned_run, retrievers):
    learned, _ = retrievers
    retailer = int(learned.index.retailers[0])
    stocked = learned.index.stocked(retailer)
    history = [np.r_[stocked[:3], stocked[:1]], stocked[5:7]]
    cs, _, _ = learned.candidate_set(history, [retailer, None])
    again = (cs.sources & SOURCE_BITS["again"]) > 0
    assert sorted(cs.item_ids[again & (cs.query == 0)].tolist()) == sorted(stocked[:3].tolist())
    assert sorted(cs.item_ids[again & (cs.query == 1)].tolist()) == sorted(stocked[5:7].tolist())
    count = cs.columns(("again_count",))[:, 0]
    assert count[again & (cs.item_ids == stocked[0]) & (cs.query == 0)].tolist() == [2.0]
    assert set(cs.item_ids[cs.query == 0].tolist()) <= set(stocked.tolist())  # only what the retailer stocks


def test_rebuy_targets_come_back_through_again(learned_run, retrievers):
    """On the test baskets, the learned lists hold re-bought targets labelled "buy again", and more of them
    than the weighted ranker (which only re-ranks the beam) finds."""
    learned, weighted = retrievers
    test = _test_queries(*learned_run)
    histories = [learned.known_parts([test.history(i)])[0] for i in range(len(test))]
    retailers = [None if r < 0 else int(r) for r in test.retailer_ids]
    hits = {}
    for name, r in (("learned", learned), ("weighted", weighted)):
        lists = r.retrieve(histories, retailers, k=10)
        found = [(c.item_id, c.source) for i, lst in enumerate(lists) for c in lst
                 if c.item_id in set(test.targets(i).tolist()) & set(histories[i].tolist())]
        hits[name] = found
    assert hits["learned"] and all(source == "buy again" for _, source in hits["learned"])
    assert len(hits["learned"]) > 1.5 * len(hits["weighted"]), {k: len(v) for k, v in hits.items()}


def test_training_and_serving_compute_identical_features(learned_run, retrievers):
    from genrec.rank.train import candidate_sets, run_splits, validation_queries
    from genrec.retriever import Retriever

    root, cfg = learned_run
    few = dataclasses.replace(cfg, rank=dataclasses.replace(cfg.rank, train_queries=6))
    queries = validation_queries(run_splits(root / "data", cfg), few)
    unranked = Retriever.from_run(root / "run", ranker="none")
    assert unranked.item_stats is not None  # training reads the statistics serving reads
    trained = candidate_sets(unranked, queries, show_progress=False)
    learned, _ = retrievers
    histories = [queries.history(i) for i in range(len(queries))]
    retailers = [None if r < 0 else int(r) for r in queries.retailer_ids]
    compared = 0
    for b, lst in enumerate(learned.retrieve(histories, retailers, k=15, explain=True)):
        for c in lst:
            if c.features.get("sources") == ["new"]:
                continue
            row = np.flatnonzero((trained.query == b) & (trained.item_ids == c.item_id))
            assert row.size == 1
            want = {n: (None if np.isnan(v) else float(v)) for n, v in zip(trained.names, trained.features[row[0]])}
            assert {n: c.features[n] for n in trained.names} == want
            compared += 1
    assert compared >= 60


def test_explain_and_weighted_row(learned_run, retrievers):
    learned, weighted = retrievers
    history = learned.index.item_ids[:4].tolist()
    plain = learned.retrieve([history], k=8)[0]
    explained = learned.retrieve([history], k=8, explain=True)[0]
    assert [c.item_id for c in plain] == [c.item_id for c in explained]
    assert all(c.features is None for c in plain)
    assert all("sources" in c.features for c in explained)
    assert np.all(np.diff([c.score for c in explained[:-2]]) <= 0)  # best first (cold slots at the end)
    assert {c.source for c in weighted.retrieve([history], k=8)[0]} <= {"generated", "similar", "new product"}
    assert weighted.ranker is None and learned.ranker is not None


def test_the_retriever_never_builds_the_pair_forest_and_lists_what_it_would(learned_run, monkeypatch):
    """``Retriever`` reads the catalog view (``index.catalog_view``), never the pair forest, which does not fit
    a catalog of millions (a trie row per retailer and product); its lists, learned and weighted, for several
    K with cold-start slots, excluded histories and explanations, are those the pair forest gives."""
    from genrec.retriever import Retriever
    from index.forest import StockForest
    from index.retailer_index import RetailerIndex

    root, cfg = learned_run
    test = _test_queries(root, cfg)
    histories = [test.history(i) for i in range(40)]
    retailers = [None if r < 0 else int(r) for r in test.retailer_ids[:40]]
    retailers[:4] = [None] * 4  # the whole catalog beside each retailer
    exclude = np.arange(40) % 2 == 0

    def lists(patch, forest_free: bool) -> dict:
        with monkeypatch.context() as m:
            patch(m)
            out = {}
            for ranker in ("learned", "weighted"):
                r = Retriever.from_run(root / "run", ranker=ranker)
                out[ranker] = r.retrieve_lists(histories, retailers, [5, 12], exclude, explain=True)
                out[ranker + " lookup"] = r.index.lookup(r.index.rows_of(r.index.item_ids[:30])[0], retailers[-1])
                assert (r.index._forest is None) == forest_free
            return out

    def no_forest(m):
        def refuse(*args, **kwargs):
            raise AssertionError("the retriever built the pair forest")
        m.setattr(StockForest, "build", refuse)

    got = lists(no_forest, True)
    new = 0
    for name in ("learned", "weighted"):
        for k, c in got[name].items():
            assert (c.item_ids >= 0).sum() > 3 * k
            new += int(((c.sources & SOURCE_BITS["new"]) > 0).sum())
    assert new > 0  # cold-start slots took new products
    # every consumer handed the pair forest in place of the view
    want = lists(lambda m: m.setattr(RetailerIndex, "catalog_view", RetailerIndex.stock_forest), False)
    for name in ("learned", "weighted"):
        for k in (5, 12):
            for field in ("item_ids", "scores", "sids", "from_beam", "sources"):
                np.testing.assert_array_equal(getattr(got[name][k], field), getattr(want[name][k], field))
            assert got[name][k].explained == want[name][k].explained
        assert [g.tolist() for g in got[name + " lookup"]] == [w.tolist() for w in want[name + " lookup"]]


def test_ranker_is_kept_on_resume_and_retrained_when_its_config_changes(learned_run):
    from genrec.rank.train import train_ranker
    from genrec.run.layout import RANKER_FILE

    root, cfg = learned_run
    path = root / "run" / RANKER_FILE
    before = path.stat().st_mtime_ns
    train_ranker(root / "run", cfg, root / "data", show_progress=False)
    assert path.stat().st_mtime_ns == before
    changed = dataclasses.replace(cfg, rank=dataclasses.replace(cfg.rank, leaves=7))
    train_ranker(root / "run", changed, root / "data", show_progress=False)
    assert path.stat().st_mtime_ns != before
    train_ranker(root / "run", cfg, root / "data", show_progress=False)  # back as the module's tests expect


def test_a_ranker_saved_before_a_setting_existed_is_kept_on_resume(learned_run):
    import json

    from genrec.rank.train import train_ranker
    from genrec.run.layout import RANKER_FILE, RANKER_META_FILE

    root, cfg = learned_run
    meta_path, path = root / "run" / RANKER_META_FILE, root / "run" / RANKER_FILE
    meta = json.loads(meta_path.read_text())
    assert meta["dtype"] == "float32"  # the type its candidates were decoded in
    del meta["config"]["dtype"]  # as a ranker trained before rank.dtype was written it
    meta_path.write_text(json.dumps(meta))
    before = path.stat().st_mtime_ns
    train_ranker(root / "run", cfg, root / "data", show_progress=False)
    assert path.stat().st_mtime_ns == before


def test_retrievers_decode_in_the_runs_rank_dtype_unless_told(learned_run, tmp_path):
    import shutil

    import torch
    import yaml

    from genrec.retriever import Retriever
    from genrec.run.layout import CONFIG_FILE

    run = tmp_path / "run"
    shutil.copytree(learned_run[0] / "run", run)
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    config["rank"]["dtype"] = "bfloat16"
    (run / CONFIG_FILE).write_text(yaml.safe_dump(config))
    dtype = lambda r: next(r.model.parameters()).dtype  # noqa: E731
    assert dtype(Retriever.from_run(run)) == torch.bfloat16
    assert dtype(Retriever.from_run(run, dtype="float32")) == torch.float32


def test_api_returns_source_and_explains_on_request(learned_run):
    from genrec.serve import ServerThread, ServeSettings, create_app

    with ServerThread(create_app(learned_run[0] / "run", ServeSettings(log_level="warning"))) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            body = {"history": [1, 2, 3], "k": 6}
            plain = c.post("/v1/retrieve", json=body).json()["items"]
            explained = c.post("/v1/retrieve", json={**body, "explain": True}).json()["items"]
            schema = c.get("/openapi.json").json()["components"]["schemas"]
    assert all(i["source"] in {"generated", "buy again", "co-purchase", "new product"} for i in plain)
    assert all(i["features"] is None for i in plain)
    assert all(isinstance(i["features"], dict) and i["features"]["sources"] for i in explained)
    assert "explain" in schema["RetrieveRequest"]["properties"]
    assert "source" in schema["RetrievedItem"]["properties"]


def test_discovery_slots_hold_products_the_shopper_never_bought():
    from genrec.rank.rankers import list_slots

    # two queries in score order: q0 all re-buys first, q1 already mixed
    query = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    fresh = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0], bool)
    picked, at = list_slots(query, fresh, 3, 0)
    assert picked.tolist() == [0, 1, 2, 6, 7, 8] and at.tolist() == [0, 1, 2, 0, 1, 2]
    picked, at = list_slots(query, fresh, 3, 2)
    assert picked.tolist() == [0, 4, 5, 6, 7, 8]  # q0's two lowest re-buys give way; q1 has two fresh already
    assert at.tolist() == [0, 1, 2, 0, 1, 2]
    picked, _ = list_slots(query[:4], fresh[:4], 3, 2)
    assert picked.tolist() == [0, 1, 2]  # nothing fresh to give way to


def test_a_run_missing_what_its_ranker_reads_is_refused_on_load(learned_run, tmp_path):
    import shutil

    from genrec.retriever import Retriever
    from genrec.run.layout import ITEM_STATS_FILE
    from semid.common import DataError

    run = tmp_path / "run"
    shutil.copytree(learned_run[0] / "run", run)
    (run / ITEM_STATS_FILE).unlink()
    with pytest.raises(DataError, match="pop_rebuy_rate"):
        Retriever.from_run(run)
    assert Retriever.from_run(run, ranker="weighted").ranker is None  # the weighted ranker needs none of it
