"""The co-purchase memory: its similarity is item-kNN's, it only re-ranks what the decoder decoded, a
product with no co-purchase keeps its decoder order, it round-trips through safetensors, and a run trained
with a memory weight on a world with a planted pair lifts the pair's second product after its first (valid,
stocked lists)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genrec.data.copurchase import KNNSettings, pair_counts, query_matrix, similarity
from genrec.data.sequences import Examples, train_sequences
from genrec.rank.memory import CoPurchaseMemory, MemoryConfig
from genrec.run.layout import MEMORY_FILE
from semid.catalog import counts_per_item
from semid.common import DataError
from semid.config import ConfigError
from helpers.experts import assert_expert_lifts_the_planted_item, plant_pair


def _train() -> Examples:
    """Three shoppers' training windows over items 10..15: 10 -> 11 -> 12 twice, 13 -> 14 once."""
    histories = [[10], [10], [13]]
    targets = [[11, 12], [11, 12], [14]]
    h_off = np.r_[0, np.cumsum([len(h) for h in histories])]
    t_off = np.r_[0, np.cumsum([len(t) for t in targets])]
    return Examples(np.arange(3), h_off, np.concatenate(histories), t_off, np.concatenate(targets), np.full(3, -1))


CATALOG = np.arange(10, 16)


def test_scores_are_item_knn_similarities_of_the_history():
    cfg = MemoryConfig(weight=1.0)
    memory = CoPurchaseMemory.build(_train(), CATALOG, cfg)
    seqs = train_sequences(_train())
    sim = similarity(pair_counts(seqs, CATALOG, cfg.window), counts_per_item(CATALOG, seqs.history_items), cfg.settings)
    query = query_matrix(np.array([0, 2]), np.array([10, 11]), CATALOG, cfg.settings)
    expected = (query @ sim).toarray()[0]
    cand = np.array([[12, 10, 14, -1, 99]])
    got = memory.scores([np.array([10, 11])], cand)
    assert np.allclose(got[0, :3], expected[[2, 0, 4]]) and got[0, 2] == 0.0 and got[0, 0] > 0
    assert got[0, 3] == 0.0 and got[0, 4] == 0.0  # an empty slot and an unknown product


def test_rescoring_lifts_co_purchased_products_and_keeps_the_rest_in_decoder_order():
    memory = CoPurchaseMemory.build(_train(), CATALOG, MemoryConfig(weight=2.0))
    cand = np.array([[14, 15, 12]])  # decoder order; 12 follows the history 10, 11
    logp = np.array([[-1.0, -2.0, -3.0]])
    new = memory.rescore([np.array([10, 11])], cand, logp)
    assert np.argmax(new[0]) == 2  # the co-purchased product comes first
    assert new[0, 0] > new[0, 1]  # no co-purchase for either: the decoder's order stands
    off = CoPurchaseMemory.build(_train(), CATALOG, MemoryConfig(weight=0.0))
    assert np.allclose(off.rescore([np.array([10, 11])], cand, logp), logp)


def test_save_load_round_trip_and_weight_override(tmp_path):
    memory = CoPurchaseMemory.build(_train(), CATALOG, MemoryConfig(weight=1.5, window=2))
    memory.save(tmp_path / MEMORY_FILE)
    back = CoPurchaseMemory.load(tmp_path / MEMORY_FILE)
    assert back.cfg == memory.cfg and (back.sim != memory.sim).nnz == 0
    assert np.array_equal(back.item_ids, memory.item_ids)
    assert CoPurchaseMemory.load(tmp_path / MEMORY_FILE, weight=0.5).cfg.weight == 0.5
    with pytest.raises(DataError, match="no co-purchase memory"):
        CoPurchaseMemory.load(tmp_path / "missing.safetensors")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError):
        MemoryConfig(weight=-1.0)
    with pytest.raises(ConfigError):
        MemoryConfig(floor=0.0)
    assert MemoryConfig().settings == KNNSettings()  # item-kNN's defaults


def test_a_run_trained_with_a_memory_lifts_the_planted_product(tmp_path):
    from genrec.run.build import train_run
    from genrec.retriever import Retriever
    from genrec.run.tiny import tiny_config, tiny_world

    world, a, b = plant_pair(tiny_world())
    world.write(tmp_path / "data")
    cfg = tiny_config("tiny")
    cfg = dataclasses.replace(cfg, memory=MemoryConfig(weight=2.0, beam_width=12))
    train_run(tmp_path / "data", cfg, tmp_path / "run")
    assert (tmp_path / "run" / MEMORY_FILE).is_file()
    whole = world.items.num_rows  # decode the whole catalog: the memory may lift any product
    with_memory = Retriever.from_run(tmp_path / "run", cold_share=0.0, beam_width=whole)
    without = Retriever.from_run(tmp_path / "run", cold_share=0.0, beam_width=whole, memory_weight=0)
    assert with_memory.memory is not None and without.memory is None
    assert_expert_lifts_the_planted_item(with_memory, without, a, b)
