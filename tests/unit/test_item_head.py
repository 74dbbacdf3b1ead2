"""The learned item head (LIGER's hybrid): it learns a mapping from states to products, it only re-ranks
what the decoder decoded, a product with no ID row is still scored by its SID, it round-trips through
safetensors, the config refuses what it cannot read, and a run trained with a head weight on a world with a
planted pair lifts the pair's second product after its first (valid, stocked lists) without training the head
again on resume."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from genrec.rank.item_head import (NO_ROW_LOGP, HeadExpert, ItemHead, ItemHeadConfig, head_ndcg, save_head,
                                    train_item_head)
from genrec.run.layout import HEAD_FILE
from semid.common import DataError
from semid.config import ConfigError
from helpers.experts import assert_expert_lifts_the_planted_item, plant_pair

N_ITEMS, D = 12, 16
CATALOG = np.arange(100, 100 + N_ITEMS)


def _head(known: torch.Tensor | None = None, **cfg) -> ItemHead:
    torch.manual_seed(0)
    sid_emb = torch.randn(N_ITEMS, D)
    return ItemHead(sid_emb, torch.ones(N_ITEMS) if known is None else known, ItemHeadConfig(weight=1.0, **cfg))


def _states_for(items: np.ndarray) -> torch.Tensor:
    """A state per target item: its one-hot code plus noise, so the head can learn item = f(state)."""
    gen = torch.Generator().manual_seed(1)
    eye = torch.eye(N_ITEMS, D)
    return eye[torch.from_numpy(items)] * 3 + 0.1 * torch.randn(items.size, D, generator=gen)


def test_training_learns_which_product_a_state_points_to():
    targets = np.random.default_rng(0).integers(0, N_ITEMS, 600)
    val = np.arange(N_ITEMS)
    cfg = ItemHeadConfig(weight=1.0, dropout=0.0, epochs=40, batch_size=64, lr=0.03, patience=40)
    head = _head(dropout=0.0)
    before = head_ndcg(head, _states_for(val), torch.from_numpy(val))
    info = train_item_head(head, _states_for(targets), torch.from_numpy(targets), _states_for(val),
                           torch.from_numpy(val), cfg, log=lambda m: None)
    assert info["best_ndcg@10"] > 0.95 > before + 0.3
    assert head_ndcg(head, _states_for(val), torch.from_numpy(val)) == pytest.approx(info["best_ndcg@10"])


def test_rescoring_adds_the_weighted_head_log_probability_and_keeps_dead_slots_dead():
    head = _head()
    expert = HeadExpert(head, CATALOG, ItemHeadConfig(weight=2.0))
    states = torch.randn(1, D)
    items = np.array([[100, 105, 999, -1]])  # two products, one the head does not know, an empty slot
    logp = np.array([[-1.0, -2.0, -3.0, -np.inf]])
    full = head(states).detach().numpy()[0]
    new = expert.rescore(states, items, logp)
    assert new[0, :2] == pytest.approx(logp[0, :2] + 2.0 * full[[0, 5]], rel=1e-5)
    assert new[0, 2] == pytest.approx(-3.0 + 2.0 * NO_ROW_LOGP) and new[0, 3] == -np.inf
    off = HeadExpert(head, CATALOG, ItemHeadConfig(weight=0.0))
    assert np.allclose(off.rescore(states, items[:, :3], logp[:, :3]), logp[:, :3])


def test_a_product_without_an_id_row_is_scored_by_its_sid_alone():
    known = torch.ones(N_ITEMS)
    known[3] = 0.0  # new since training: never a target
    head = _head(known=known)
    with torch.no_grad():
        head.ids.fill_(5.0)  # any learned ID row: the new product must not get one
        head.bias.fill_(1.0)
    table = head.item_table()
    assert torch.allclose(table[3], head.code(head.sid_emb[3]))
    assert not torch.allclose(table[2], head.code(head.sid_emb[2]))
    assert torch.isfinite(head(torch.randn(2, D))[:, 3]).all()  # still reachable


def test_save_load_round_trip_and_weight_override(tmp_path):
    head = _head()
    with torch.no_grad():
        head.ids.normal_()
    cfg = ItemHeadConfig(weight=1.5, dim=head.ids.shape[1])
    save_head(head, CATALOG, cfg, tmp_path / HEAD_FILE, decoder_version="abc")
    back = HeadExpert.load(tmp_path / HEAD_FILE)
    states = torch.randn(3, D)
    assert back.cfg == cfg and np.array_equal(back.catalog, CATALOG)
    assert torch.allclose(back.head(states), head.eval()(states))
    assert HeadExpert.load(tmp_path / HEAD_FILE, weight=0.5).cfg.weight == 0.5
    with pytest.raises(DataError, match="no item head"):
        HeadExpert.load(tmp_path / "missing.safetensors")


def test_the_config_refuses_what_the_head_cannot_read():
    from genrec.model.decoder import DecoderConfig
    from genrec.run.config import RunConfig

    with pytest.raises(ConfigError, match="item_head"):
        RunConfig(decoder=DecoderConfig(arch="item"), item_head=ItemHeadConfig(weight=1.0))
    with pytest.raises(ConfigError, match="retailer token"):
        RunConfig(item_head=ItemHeadConfig(weight=1.0))  # sequence.retailer_token is on by default
    with pytest.raises(ConfigError, match="eval_examples"):
        ItemHeadConfig(eval_examples=0)


def test_a_run_trained_with_a_head_lifts_the_planted_product(tmp_path, monkeypatch):
    import genrec.run.build as build
    from genrec.retriever import Retriever
    from genrec.run.tiny import tiny_config, tiny_world

    world, a, b = plant_pair(tiny_world())
    world.write(tmp_path / "data")
    cfg = tiny_config("tiny")
    cfg = dataclasses.replace(cfg, sequence=dataclasses.replace(cfg.sequence, retailer_token=False),
                              item_head=ItemHeadConfig(weight=2.0, beam_width=12, epochs=3, eval_examples=40))
    build.train_run(tmp_path / "data", cfg, tmp_path / "run")
    path = tmp_path / "run" / HEAD_FILE
    assert path.is_file()
    whole = world.items.num_rows  # decode the whole catalog: the head may lift any product
    with_head = Retriever.from_run(tmp_path / "run", cold_share=0.0, beam_width=whole)
    without = Retriever.from_run(tmp_path / "run", cold_share=0.0, beam_width=whole, head_weight=0)
    assert with_head.head is not None and without.head is None and with_head.memory is None
    assert_expert_lifts_the_planted_item(with_head, without, a, b)

    before = path.read_bytes()
    monkeypatch.setattr(build, "fit_item_head", lambda *a, **k: pytest.fail("head trained again"))
    build.train_run(tmp_path / "data", cfg, tmp_path / "run")  # resume: decoder done, head up to date
    assert path.read_bytes() == before
    build.train_run(tmp_path / "data", dataclasses.replace(cfg, item_head=ItemHeadConfig(weight=0.0)),
                    tmp_path / "run")
    assert not path.exists()  # weight 0: no head left to apply


def test_the_head_reads_the_state_of_the_decoding_pass_not_a_second_one():
    """With the head on, a batch runs the decoder as often as without it (the query state comes from the beam
    search's own prompt pass, ``with_prompt_state``), and the head still moves the scores."""
    from pathlib import Path

    from genrec.retriever import Retriever

    run = Path(__file__).resolve().parents[1] / "fixtures" / "run-v1" / "run"
    base = Retriever.from_run(run, cold_share=0.0, memory_weight=0)
    catalog = base.index.item_ids
    torch.manual_seed(0)
    d_model = base.model.config.hidden_size
    head = ItemHead(torch.randn(catalog.size, d_model), torch.ones(catalog.size), ItemHeadConfig(dim=8))
    expert = HeadExpert(head, catalog, ItemHeadConfig(weight=1.0, dim=8, beam_width=10))
    with_head = Retriever(base.model, base.tokenizer, base.index, cold_share=0.0, head=expert)
    without = Retriever(base.model, base.tokenizer, base.index, cold_share=0.0)
    calls = []
    hook = base.model.base_model.register_forward_pre_hook(lambda *_: calls.append(1))
    histories = [catalog[:3], catalog[5:6], catalog[10:14]]
    lists = {}
    for name, retriever in (("head", with_head), ("plain", without)):
        calls.clear()
        lists[name] = retriever.retrieve_arrays(histories, k=5)
        lists[name + " passes"] = len(calls)
    hook.remove()
    assert lists["head passes"] == lists["plain passes"] == 4  # one prompt pass, then one per SID token after
    assert not np.allclose(lists["head"].scores, lists["plain"].scores)
