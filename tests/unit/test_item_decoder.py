"""The item-level decoder (``decoder.arch: item``): token batches fold into one position per item whatever
the padding side, the constrained beam search returns only catalog rows and equals exact catalog scoring
when the beam holds every item, exact scoring equals teacher forcing, the memorisation channel (ID
embeddings) covers exactly the items seen in training, save / load keeps every output, and the settings'
old spellings still load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.model.beam_search import constrained_beam_search
from genrec.model.decoder import DecoderConfig, build_decoder, decoder_config, load_decoder, save_decoder, training_loss
from genrec.model.item_decoder import IGNORE, EncodedHistory, catalog_log_probs, exact_top
from genrec.model.tokens import TokenizedExamples, collate
from index.trie import PrefixTrie
from semid.common import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread

# token layout: 5 specials, level 0 ids 5-12, level 1 ids 13-20, dedup 21-23, then 2 retailer tokens
OFFSETS = [5, 13, 21, 24]
VOCAB, D, BOS, PAD = 26, 3, 1, 0


def _catalog(n: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.integers(5, 13, 4 * n), rng.integers(13, 21, 4 * n), rng.integers(21, 24, 4 * n)], 1)
    rows = np.unique(rows, axis=0)
    return rows[rng.permutation(len(rows))[:n]]


def _model(seed: int = 0, memorised: np.ndarray | None = None, depth_cross_attention: bool = False, **kw):
    torch.manual_seed(seed)
    cfg = DecoderConfig(arch="item", d_model=32, n_layers=2, n_heads=2, d_ff=64, max_items=6, dropout=0.0,
                        id_embeddings=memorised is not None, depth_cross_attention=depth_cross_attention, **kw)
    return build_decoder(cfg, VOCAB, D, PAD, BOS, "cb-1", OFFSETS, memorised).eval()


def _sequences(catalog: np.ndarray, n: int = 5, seed: int = 0, retailer: bool = False) -> TokenizedExamples:
    """``<bos> [retailer] item item ...`` with 1-5 items each; the last item labelled."""
    rng = np.random.default_rng(seed)
    seqs, n_context = [], []
    for i in range(n):
        items = catalog[rng.integers(0, len(catalog), rng.integers(1, 6))]
        head = [BOS] + ([24 + i % 2] if retailer else [])
        seqs.append(np.r_[head, items.reshape(-1)])
        n_context.append(len(head) + (len(items) - 1) * D)
    lengths = np.array([len(s) for s in seqs])
    return TokenizedExamples(np.concatenate(seqs), np.r_[0, np.cumsum(lengths)], np.array(n_context))


def _prompts(catalog: np.ndarray, n: int = 5, seed: int = 0, retailer: bool = False):
    batch = collate(_sequences(catalog, n, seed, retailer), np.arange(n), PAD, padding_side="left")
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("depth_cross_attention", [False, True])
@pytest.mark.parametrize("retailer", [False, True])
def test_padding_side_changes_neither_the_loss_nor_the_states(retailer, depth_cross_attention):
    catalog = _catalog()
    model = _model(depth_cross_attention=depth_cross_attention)
    seqs = _sequences(catalog, retailer=retailer)
    right, left = (collate(seqs, np.arange(len(seqs)), PAD, side) for side in ("right", "left"))
    with torch.no_grad():
        loss_r, n_r = model(right["input_ids"], right["attention_mask"], right["labels"])
        loss_l, n_l = model(left["input_ids"], left["attention_mask"], left["labels"])
        assert torch.allclose(loss_r, loss_l, atol=1e-5) and int(n_r) == int(n_l) == len(seqs) * D
        assert torch.allclose(model.encode(right["input_ids"], right["attention_mask"]).state,
                              model.encode(left["input_ids"], left["attention_mask"]).state, atol=1e-5)


def test_the_loss_covers_labelled_items_only():
    """Labelling one more item of a sequence adds its D codewords to the count; context never counts."""
    model = _model()
    seqs = _sequences(_catalog())
    batch = collate(seqs, np.arange(len(seqs)), PAD)
    more = batch["labels"].clone()
    row, first = 0, int(seqs.n_context[0])
    if first >= 1 + D:  # a history item to label as well
        more[row, first - D : first] = batch["input_ids"][row, first - D : first]
    with torch.no_grad():
        _, n = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        _, n_more = model(batch["input_ids"], batch["attention_mask"], more)
    assert int(n_more) == int(n) + (D if first >= 1 + D else 0)
    nothing = torch.full_like(batch["labels"], IGNORE)
    with torch.no_grad():
        _, n_none = model(batch["input_ids"], batch["attention_mask"], nothing)
    assert int(n_none) == 0


@pytest.mark.parametrize("depth_cross_attention", [False, True])
def test_beam_search_returns_only_catalog_rows_and_equals_exact_scoring_when_wide(depth_cross_attention):
    catalog = _catalog()
    model = _model(depth_cross_attention=depth_cross_attention)
    ids, attn = _prompts(catalog)
    trie = PrefixTrie(torch.as_tensor(catalog), vocab_size=VOCAB)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=len(catalog), num_return=10)
    known = {tuple(r) for r in catalog.tolist()}
    assert all(tuple(r) in known for r in rows.reshape(-1, D).tolist())  # invalid rate exactly 0
    top_rows, top_scores = exact_top(model, ids, attn, torch.as_tensor(catalog), k=10)
    assert torch.equal(rows, top_rows)
    assert torch.allclose(scores, top_scores, atol=1e-5)
    free, _ = constrained_beam_search(model, ids, attn, trie, 5, 5, constrained=False)
    assert any(tuple(r) not in known for r in free.reshape(-1, D).tolist())  # the constraint does the work


def test_exact_scoring_equals_teacher_forcing_and_sums_to_one_over_every_sid():
    catalog = _catalog()
    model = _model()
    states = torch.randn(3, 32)
    rows = torch.as_tensor(catalog)
    fast = catalog_log_probs(model, states, rows, chunk=7)  # chunks smaller than one level's prefixes
    with torch.no_grad():
        for q in range(3):
            hidden = model.depth_hidden(EncodedHistory(states[q : q + 1].expand(len(rows), -1)), rows[:, :-1])
            slow = sum(torch.log_softmax(model.level_logits(hidden[:, lv], lv), -1)[torch.arange(len(rows)),
                                                                                    rows[:, lv] - OFFSETS[lv]]
                       for lv in range(D))
            assert torch.allclose(fast[q], slow, atol=1e-5)
    grid = torch.cartesian_prod(torch.arange(5, 13), torch.arange(13, 21), torch.arange(21, 24))
    assert torch.allclose(catalog_log_probs(model, states, grid).exp().sum(1), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("depth_cross_attention", [False, True])
def test_batched_decoding_equals_one_query_at_a_time(depth_cross_attention):
    catalog = _catalog()
    model = _model(depth_cross_attention=depth_cross_attention)
    ids, attn = _prompts(catalog, n=4)
    trie = PrefixTrie(torch.as_tensor(catalog), vocab_size=VOCAB)
    rows, scores = constrained_beam_search(model, ids, attn, trie, 6, 4)
    for q in range(4):
        keep = attn[q].bool()
        one, s = constrained_beam_search(model, ids[q : q + 1, keep], attn[q : q + 1, keep], trie, 6, 4)
        assert torch.equal(one[0], rows[q]) and torch.allclose(s[0], scores[q], atol=1e-5)


def test_memorisation_covers_exactly_the_items_seen_in_training():
    catalog = _catalog()
    seen = catalog[:10]
    model = _model(memorised=np.r_[seen, seen[:3]])  # repeats collapse
    assert model.config.memo_size == 10
    index = model._memo_index(torch.as_tensor(catalog))
    assert (index[:10] > 0).all() and (index[10:] == 0).all()
    assert len(set(index[:10].tolist())) == 10
    assert torch.count_nonzero(model.memo.weight[0]) == 0  # the "no ID embedding" row stays zero
    loss, _ = training_loss(model)(**collate(_sequences(catalog), np.arange(5), PAD))
    loss.backward()
    assert torch.count_nonzero(model.memo.weight.grad[0]) == 0


def test_save_load_round_trip_keeps_outputs_config_and_id_embeddings(tmp_path):
    catalog = _catalog()
    model = _model(memorised=catalog[:12])
    save_decoder(model, tmp_path / "dec", extra={"retailer_token": False})
    assert (tmp_path / "dec" / "model.safetensors").is_file()
    back = load_decoder(tmp_path / "dec", codebook_version="cb-1")
    assert type(back).__name__ == "ItemDecoder" and decoder_config(back) == decoder_config(model)
    assert torch.equal(back.memo_keys, model.memo_keys)
    ids, attn = _prompts(catalog)
    trie = PrefixTrie(torch.as_tensor(catalog), vocab_size=VOCAB)
    a = constrained_beam_search(model, ids, attn, trie, 8, 8)
    b = constrained_beam_search(back, ids, attn, trie, 8, 8)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_histories_over_the_cap_keep_the_latest_items():
    catalog = _catalog()
    model = _model()
    long = np.r_[BOS, catalog[:9].reshape(-1)]
    capped = np.r_[BOS, catalog[3:9].reshape(-1)]  # max_items 6
    states = [model.encode(torch.as_tensor(s)[None], torch.ones(1, len(s), dtype=torch.long)).state
              for s in (long, capped)]
    assert torch.allclose(states[0], states[1], atol=1e-6)


def test_item_arch_needs_the_level_layout_and_whole_sids():
    with pytest.raises(DataError, match="level offsets"):
        build_decoder(DecoderConfig(arch="item"), VOCAB, D)
    catalog = _catalog()
    model = _model()
    ids, attn = _prompts(catalog)
    trie = PrefixTrie(torch.as_tensor(catalog[:, :2]), vocab_size=VOCAB)
    with pytest.raises(DataError, match="whole SIDs"):
        constrained_beam_search(model, ids, attn, trie, 4, 4)


def test_depth_cross_attention_reads_the_items_before_the_last_state():
    """With ``depth_cross_attention`` the codeword logits depend on the item states themselves, not only the last."""
    catalog = _catalog()
    model = _model(depth_cross_attention=True)
    ids, attn = _prompts(catalog, n=3)
    encoded = model.encode(ids, attn)
    prefix = ids.new_zeros(3, 0)
    other = EncodedHistory(encoded.state, torch.randn_like(encoded.states), encoded.seen)
    assert not torch.allclose(model.next_logp(encoded, prefix), model.next_logp(other, prefix))
    hidden = EncodedHistory(encoded.state, encoded.states, torch.zeros_like(encoded.seen))
    hidden.seen[:, 0] = True  # only the context position visible
    assert not torch.allclose(model.next_logp(encoded, prefix), model.next_logp(hidden, prefix))


def test_the_old_spellings_of_the_renamed_settings_still_load():
    """``decoder.memorize`` and ``decoder.depth_memory`` (run configs and decoders saved before the rename)
    read as ``id_embeddings`` and ``depth_cross_attention``; giving both spellings is an error."""
    from genrec.model.item_decoder import ItemDecoderConfig
    from semid.config import ConfigError, from_dict

    old = from_dict(DecoderConfig, {"arch": "item", "memorize": True, "depth_memory": True}, "decoder")
    assert old == DecoderConfig(arch="item", id_embeddings=True, depth_cross_attention=True)
    with pytest.raises(ConfigError, match="old spelling"):
        from_dict(DecoderConfig, {"memorize": True, "id_embeddings": False}, "decoder")
    assert ItemDecoderConfig(depth_memory=True).depth_cross_attention is True
    assert "depth_memory" not in ItemDecoderConfig(depth_memory=True).to_dict()
