"""The Retriever decodes a batch that mixes retailers (and exclude flags) in one constrained beam search over
the index's trie forest, with exactly the products each query gets when its retailer is decoded alone: only
stocked SIDs (invalid rate 0), history exclusion per query, and index updates taking effect at once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec import retriever as retriever_module
from genrec.retriever import Retriever
from semid.common import DataError


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


@pytest.fixture(scope="module")
def retriever(tiny_run) -> Retriever:
    root, _ = tiny_run
    return Retriever.from_run(root / "run", beam_width=8)


@pytest.fixture
def searches(monkeypatch) -> list[dict]:
    """Every beam search the retriever runs: its batch size, trie, and the rows and scores it returned."""
    calls: list[dict] = []
    real = retriever_module.constrained_beam_search

    def recorded(model, input_ids, attention_mask, trie, *args, **kwargs):
        rows, scores = real(model, input_ids, attention_mask, trie, *args, **kwargs)
        calls.append({"batch": int(input_ids.shape[0]), "trie": trie, "rows": rows, "scores": scores})
        return rows, scores

    monkeypatch.setattr(retriever_module, "constrained_beam_search", recorded)
    return calls


def _histories(retriever: Retriever, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = retriever.index.item_ids
    return [ids[rng.integers(0, ids.size, rng.integers(1, 8))] for _ in range(n)]


def test_a_mixed_batch_is_one_search_with_each_retailers_own_results(retriever, searches):
    retailers = [None, *retriever.index.retailers.tolist()]
    assert len(retailers) >= 3
    queries = [retailers[i % len(retailers)] for i in range(12)]
    histories = _histories(retriever, 12, seed=1)
    exclude = [i % 2 == 0 for i in range(12)]
    mixed = retriever.retrieve_arrays(histories, queries, k=10, exclude_history=exclude)
    assert [call["batch"] for call in searches] == [12]
    for r in retailers:
        rows = [i for i, q in enumerate(queries) if q == r]
        for flag in (True, False):
            part = [i for i in rows if exclude[i] == flag]
            alone = retriever.retrieve_arrays([histories[i] for i in part], r, k=10, exclude_history=flag)
            for name in ("item_ids", "sids", "from_beam"):
                assert np.array_equal(getattr(mixed, name)[part], getattr(alone, name)), (r, flag, name)
            assert np.allclose(mixed.scores[part], alone.scores, atol=1e-5)
        stocked = set(retriever.index.stocked(r).tolist())
        assert (mixed.item_ids[rows] >= 0).all() and set(mixed.item_ids[rows].ravel().tolist()) <= stocked
    for i, h in enumerate(histories):
        if exclude[i]:
            assert not set(mixed.item_ids[i].tolist()) & set(h.tolist())


def test_decoded_sids_of_a_mixed_batch_are_all_stocked(retriever, searches):
    """Invalid-ID rate exactly 0 per query: every decoded row is an SID its retailer stocks."""
    retailers = [None, *retriever.index.retailers.tolist()] * 4
    retriever.retrieve_arrays(_histories(retriever, len(retailers), seed=2), retailers, k=5)
    (call,) = searches
    assert call["trie"] is retriever.index.start_for(retailers).trie
    for b, r in enumerate(retailers):
        live = torch.isfinite(call["scores"][b])
        assert live.any() and retriever.index.trie_for(r).contains(call["rows"][b][live]).all()


def test_stock_updates_reach_the_next_mixed_batch(tiny_run):
    root, _ = tiny_run
    retriever = Retriever.from_run(root / "run", beam_width=8)
    r0, r1 = retriever.index.retailers.tolist()[:2]
    histories = _histories(retriever, 4, seed=3)
    before = retriever.retrieve_arrays(histories, [r0, r1, r0, r1], k=5)
    gone = np.unique(before.item_ids[[0, 2]])
    retriever.index.remove(gone, retailer_id=r0)
    after = retriever.retrieve_arrays(histories, [r0, r1, r0, r1], k=5)
    assert not set(after.item_ids[[0, 2]].ravel().tolist()) & set(gone.tolist())
    assert np.array_equal(after.item_ids[[1, 3]], before.item_ids[[1, 3]])  # retailer r1 is untouched


def test_a_product_without_interactions_takes_the_reserved_slot_under_its_prefix(tiny_run):
    """TIGER's cold-start mixing by prefix (the fallback without a codebook ranker): a new product
    (popularity 0) whose codewords equal the best decoded SID's takes the last of k slots when the beams
    did not list it already; with cold_share 0 nothing changes."""
    root, _ = tiny_run
    plain, mixed = (Retriever.from_run(root / "run", beam_width=8, cold_share=share) for share in (0.0, 0.2))
    mixed.cold_ranker = None
    history = _histories(plain, 1, seed=4)
    before = plain.retrieve_arrays(history, None, k=5)
    row = plain.index.rows_of([before.item_ids[0, 0]])[0][0].copy()
    _, dedup_end = plain.tokenizer.level_range(plain.tokenizer.n_levels)
    row[-1] = dedup_end - 1  # the same codewords, the last disambiguation token: an SID no product had
    for r in (plain, mixed):
        r.index.add([999_999], row[None, :], popularity=[0.0])
    listed = plain.retrieve_arrays(history, None, k=5).item_ids[0].tolist()
    got = mixed.retrieve_arrays(history, None, k=5).item_ids[0].tolist()
    assert got == (listed if 999_999 in listed else listed[:4] + [999_999])
    assert 999_999 not in listed  # this history: the decoder does not generate the new SID by itself


def test_bfloat16_weights_return_k_valid_stocked_products(tiny_run, monkeypatch):
    from genrec.model import decoder, precision

    root, _ = tiny_run
    r = Retriever.from_run(root / "run", beam_width=8, dtype="bfloat16")
    assert next(r.model.parameters()).dtype == torch.bfloat16
    histories = _histories(r, 6, seed=5)
    r0 = r.index.retailers.tolist()[0]
    out = r.retrieve_arrays(histories, [None, r0] * 3, k=5)
    assert (out.item_ids >= 0).all() and np.isfinite(out.scores).all()
    assert np.isin(out.item_ids[1::2], r.index.stocked(r0)).all()
    for cpu_bf16, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "native_bf16", lambda: cpu_bf16)
        assert decoder.inference_dtype("auto", "cpu") == expected
    assert decoder.inference_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(DataError, match="dtype must be one of"):
        Retriever.from_run(root / "run", dtype="float16")


def test_unknown_retailer_and_mismatched_flags_are_errors(retriever):
    with pytest.raises(DataError, match="unknown retailer 999"):
        retriever.retrieve_arrays(_histories(retriever, 2, seed=4), [None, 999], k=3)
    with pytest.raises(DataError, match="2 histories but 3 exclude_history flags"):
        retriever.retrieve_arrays(_histories(retriever, 2, seed=4), None, k=3, exclude_history=[True] * 3)
    assert retriever.retrieve_arrays([], None, k=3).item_ids.shape == (0, 3)


def test_lists_for_several_k_come_from_one_search(tiny_run, searches):
    """``retrieve_lists``: one beam search, a list per K; without cold-start slots the shorter list is the
    longer one's prefix, and each equals what ``retrieve_arrays`` gives for that K."""
    root, _ = tiny_run
    r = Retriever.from_run(root / "run", beam_width=8, cold_share=0.0)
    histories = _histories(r, 3, seed=5)
    lists = r.retrieve_lists(histories, None, [5, 3])
    assert len(searches) == 1 and sorted(lists) == [3, 5]
    assert (lists[3].item_ids == lists[5].item_ids[:, :3]).all()
    assert (lists[5].item_ids == r.retrieve_arrays(histories, None, k=5).item_ids).all()
    with pytest.raises(DataError, match="k must be >= 1"):
        r.retrieve_lists(histories, None, [0, 5])


def test_a_new_product_takes_the_open_slot_only_when_nearer_than_the_listed_one(tiny_run, searches):
    """Cold-start mixing by SID point: the open last slot goes to the nearest new product only where it
    lies nearer the query's point than the product listed there; new products at one SID point tie, and the
    lower item id wins (``index.cold.top_cold``), whatever order they were added in."""
    root, _ = tiny_run
    plain, mixed = (Retriever.from_run(root / "run", beam_width=8, cold_share=share) for share in (0.0, 0.2))
    histories = _histories(plain, 6, seed=7)
    before = plain.retrieve_arrays(histories, None, k=5)
    rows = plain.index.rows_of(before.item_ids[:, 0])[0].copy()
    _, dedup_end = plain.tokenizer.level_range(plain.tokenizer.n_levels)
    rows[:, -1] = dedup_end - 1  # each query's best codewords, an unused disambiguation token
    new_ids = np.arange(999_000, 999_000 + len(rows))
    twins = new_ids - 1_000  # the same SID points under lower ids, added after: every tie goes to a twin
    for r in (plain, mixed):
        r.index.add(new_ids, rows, popularity=np.zeros(len(rows)))
        r.index.add(twins, rows, popularity=np.zeros(len(rows)))
    listed = plain.retrieve_arrays(histories, None, k=5).item_ids
    searches.clear()
    got = mixed.retrieve_arrays(histories, None, k=5).item_ids
    ranker, beams = mixed.cold_ranker, searches[0]
    query = ranker.queries(beams["rows"].numpy().astype(np.int64), beams["scores"].numpy().astype(np.float64),
                           mixed._last_rows(mixed.known_parts(histories)))
    points = lambda ids: ranker.points(mixed.index.rows_of(ids)[0])  # noqa: E731
    forest = mixed.index._stock_forest()
    cold = np.unique(forest.item_ids[forest.cold_positions])  # the new products and any never bought
    assert np.isin(np.r_[new_ids, twins], cold).all()
    sims = query @ points(cold).T
    for b in range(len(histories)):
        assert got[b, :4].tolist() == listed[b, :4].tolist()
        fresh = [i for i in np.argsort(-sims[b], kind="stable") if cold[i] not in listed[b]]
        nearer = sims[b, fresh[0]] > float(query[b] @ points(listed[b, 4:5])[0])
        assert got[b, 4] == (cold[fresh[0]] if nearer else listed[b, 4])
    placed = got[:, 4] != listed[:, 4]
    assert placed.any() and np.isin(got[placed, 4], twins).all()  # not vacuous; each tie went to the twin
