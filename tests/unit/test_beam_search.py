"""Constrained beam search on tiny random causal LMs (Llama and GPT-2): every result is an item (invalid
rate exactly 0, and not 0 without the constraint), exact against brute-force scoring when the beam holds
every item, batched = one at a time under left padding, history exclusion, both stepping strategies (the
shared-prompt tree and one cache row per beam), and argument checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from genrec.model import decoder_step
from genrec.model.beam_search import constrained_beam_search
from index.trie import PrefixTrie
from semid.common import DataError

VOCAB = 48
PAD = 0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


def _llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=PAD,
    )
    return LlamaForCausalLM(cfg).eval()


def _gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256, pad_token_id=PAD,
                     bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg).eval()


def _catalog(n: int, seed: int = 0) -> np.ndarray:
    """n distinct token rows: 3 code levels (ids 5-12, 13-20, 21-28) + a dedup token (29-31)."""
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.integers(5, 13, 4 * n), rng.integers(13, 21, 4 * n), rng.integers(21, 29, 4 * n),
                     rng.integers(29, 32, 4 * n)], axis=1)
    return np.unique(rows, axis=0)[rng.permutation(len(np.unique(rows, axis=0)))[:n]]


def _prompts(batch: int, seed: int = 0, pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of different lengths, left-padded."""
    gen = torch.Generator().manual_seed(seed)
    length = 12
    ids = torch.randint(5, VOCAB, (batch, length), generator=gen)
    attn = torch.ones(batch, length, dtype=torch.long)
    if pad:
        for b in range(batch):
            cut = int(torch.randint(0, length - 1, (1,), generator=gen))
            ids[b, :cut], attn[b, :cut] = PAD, 0
    return ids, attn


def _exact_scores(model, ids: torch.Tensor, attn: torch.Tensor, items: np.ndarray) -> torch.Tensor:
    """Sequence log-prob of every item after every prompt, by teacher forcing: [B, n_items]."""
    batch, n = ids.shape[0], items.shape[0]
    tail = torch.as_tensor(items)
    full = torch.cat([ids.repeat_interleave(n, 0), tail.repeat(batch, 1)], dim=1)
    mask = torch.cat([attn.repeat_interleave(n, 0), torch.ones(batch * n, tail.shape[1], dtype=torch.long)], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logp = model(input_ids=full, attention_mask=mask, position_ids=pos).logits.float().log_softmax(-1)
    steps = logp[:, ids.shape[1] - 1 : -1, :]
    picked = steps.gather(2, tail.repeat(batch, 1)[:, :, None]).squeeze(-1)
    return picked.sum(-1).view(batch, n)


@pytest.mark.parametrize("make_model", [_llama, _gpt2])
def test_invalid_rate_is_zero_with_the_constraint_and_not_without(make_model):
    model = make_model()
    items = _catalog(120)
    trie = PrefixTrie(items, vocab_size=VOCAB)
    ids, attn = _prompts(32)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=6)
    assert rows.shape == (32, 6, 4) and scores.shape == (32, 6)
    assert torch.isfinite(scores).all()
    assert trie.contains(rows.reshape(-1, 4)).all()  # invalid-ID rate exactly 0
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    for b in range(32):
        assert len({tuple(r) for r in rows[b].tolist()}) == 6
    free, _ = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=6, constrained=False)
    invalid = 1.0 - trie.contains(free.reshape(-1, 4)).float().mean().item()
    assert invalid > 0.5


@pytest.mark.parametrize("make_model", [_llama, _gpt2])
@pytest.mark.parametrize("shared_prompt", [True, False])
def test_equals_brute_force_when_the_beam_holds_every_item(make_model, shared_prompt):
    model = make_model(1)
    items = _catalog(14, seed=3)
    trie = PrefixTrie(items, vocab_size=VOCAB)
    ids, attn = _prompts(5, seed=2)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=16, num_return=7,
                                           shared_prompt=shared_prompt)
    exact = _exact_scores(model, ids, attn, items)
    best, order = exact.topk(7, dim=1)
    assert torch.allclose(scores, best, atol=1e-4)
    assert torch.equal(rows, torch.as_tensor(items)[order])


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_batched_equals_one_at_a_time(shared_prompt):
    model = _llama(2)
    trie = PrefixTrie(_catalog(150, seed=4), vocab_size=VOCAB)
    ids, attn = _prompts(6, seed=5)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=5, num_return=4,
                                           shared_prompt=shared_prompt)
    for b in range(6):
        keep = attn[b].bool()
        one_rows, one_scores = constrained_beam_search(
            model, ids[b : b + 1, keep], attn[b : b + 1, keep], trie, beam_width=5, num_return=4,
            shared_prompt=shared_prompt,
        )
        assert torch.equal(one_rows[0], rows[b])
        assert torch.allclose(one_scores[0], scores[b], atol=1e-4)


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_exclusion_removes_history_items_exactly(shared_prompt):
    model = _llama(3)
    items = _catalog(12, seed=6)
    trie = PrefixTrie(items, vocab_size=VOCAB)
    ids, attn = _prompts(4, seed=7)
    exact = _exact_scores(model, ids, attn, items)
    order = exact.argsort(dim=1, descending=True)
    banned = [items[order[b, : b + 1].numpy()] for b in range(4)]  # query b bans its top b+1 items
    banned[0] = np.concatenate([banned[0], [[5, 13, 21, 31]]])  # a row outside the trie is ignored
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=12, num_return=5, exclude=banned,
                                           shared_prompt=shared_prompt)
    for b in range(4):
        allowed = order[b, b + 1 :][:5]
        assert torch.equal(rows[b], torch.as_tensor(items)[allowed])
        assert torch.allclose(scores[b], exact[b, allowed], atol=1e-4)
        got = {tuple(r) for r in rows[b].tolist()}
        assert not got & {tuple(r) for r in banned[b].tolist()}


def test_fewer_items_than_requested_gives_empty_slots():
    model = _llama(4)
    items = _catalog(3, seed=8)
    trie = PrefixTrie(items, vocab_size=VOCAB)
    ids, attn = _prompts(2, seed=9)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=5)
    assert torch.isfinite(scores[:, :3]).all() and torch.isinf(scores[:, 3:]).all()
    assert (rows[:, 3:] == -1).all() and trie.contains(rows[:, :3].reshape(-1, 4)).all()


@pytest.mark.parametrize("make_model", [_llama, _gpt2])
@pytest.mark.parametrize("shared_prompt", [True, False])
def test_the_prompt_state_is_the_decoders_last_hidden_state_and_changes_nothing_else(make_model, shared_prompt):
    """``with_prompt_state`` returns what a separate pass over the prompts gives (the item head's input), from
    the decoding pass itself, and the same rows and scores as without it."""
    model = make_model(3)
    trie = PrefixTrie(_catalog(60, seed=4), vocab_size=VOCAB)
    ids, attn = _prompts(5, seed=5)
    rows, scores = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=4,
                                           shared_prompt=shared_prompt)
    rows2, scores2, levels, state = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=4,
                                                            shared_prompt=shared_prompt, with_levels=True,
                                                            with_prompt_state=True)
    with torch.no_grad():
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        alone = model.base_model(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state[:, -1]
    assert torch.equal(rows, rows2) and torch.equal(scores, scores2) and torch.equal(levels[..., -1], scores2)
    assert state.dtype == torch.float32 and state.shape == (5, 32)
    assert torch.allclose(state, alone, atol=1e-5)


def test_tree_and_per_beam_cache_agree_on_a_wide_beam():
    model = _gpt2(6)
    trie = PrefixTrie(_catalog(200, seed=10), vocab_size=VOCAB)
    ids, attn = _prompts(8, seed=11)
    a = constrained_beam_search(model, ids, attn, trie, beam_width=24, num_return=24, shared_prompt=True)
    b = constrained_beam_search(model, ids, attn, trie, beam_width=24, num_return=24, shared_prompt=False)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-4)


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_dynamic_cache_gives_the_same_results(monkeypatch, shared_prompt):
    """Where no static cache can be built the model's own DynamicCache is used; nothing changes."""
    model = _llama(7)
    trie = PrefixTrie(_catalog(100, seed=12), vocab_size=VOCAB)
    ids, attn = _prompts(6, seed=13)
    static = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=4, shared_prompt=shared_prompt)
    monkeypatch.setattr(decoder_step, "new_cache", lambda model, length: None)
    dynamic = constrained_beam_search(model, ids, attn, trie, beam_width=6, num_return=4, shared_prompt=shared_prompt)
    assert torch.equal(static[0], dynamic[0]) and torch.allclose(static[1], dynamic[1], atol=1e-4)


def test_model_mode_is_restored():
    model = _llama(5).train()
    trie = PrefixTrie(_catalog(20), vocab_size=VOCAB)
    ids, attn = _prompts(2, pad=False)
    a = constrained_beam_search(model, ids, attn, trie, beam_width=4, num_return=2)
    b = constrained_beam_search(model, ids, attn, trie, beam_width=4, num_return=2)
    assert model.training and torch.equal(a[0], b[0])  # dropout off while decoding


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beam_width": 2, "num_return": 3}, "num_return"),
        ({"beam_width": 2, "num_return": 1, "steps": 3}, "trie depth"),
        ({"beam_width": 2, "num_return": 1, "exclude": [None]}, "exclude has 1 entries"),
    ],
)
def test_argument_errors(kwargs, message):
    model = _llama()
    trie = PrefixTrie(_catalog(10), vocab_size=VOCAB)
    ids, attn = _prompts(2, pad=False)
    with pytest.raises(DataError, match=message):
        constrained_beam_search(model, ids, attn, trie, **kwargs)


def test_right_padding_is_refused():
    model = _llama()
    trie = PrefixTrie(_catalog(10), vocab_size=VOCAB)
    ids, attn = _prompts(2, pad=False)
    attn[0, -2:] = 0
    with pytest.raises(DataError, match="left-padded"):
        constrained_beam_search(model, ids, attn, trie, beam_width=2, num_return=1)


def test_trie_vocab_larger_than_model_is_refused():
    model = _llama()
    trie = PrefixTrie(np.array([[5, 60]]), vocab_size=64)
    ids, attn = _prompts(1, pad=False)
    with pytest.raises(DataError, match="the model has 48"):
        constrained_beam_search(model, ids, attn, trie, beam_width=2, num_return=1)


def test_decode_benchmark_runs_in_random_model_mode(capsys, load_script):
    """benchmarks/decode.py stays runnable: a miniature random-model run agrees with generate."""
    bench = load_script("benchmarks/decode.py")
    argv = ["--random-model", "--items", "300", "--levels", "3", "--codebook", "8", "--d-model", "16",
            "--layers", "1", "--heads", "2", "--history", "4", "--queries", "6", "--hf-queries", "4",
            "--batch", "3", "--beam", "4", "--k", "3", "--repeats", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "identical 100.0%" in out and "speed-up over generate" in out


def test_beam_wider_than_the_vocabulary_returns_dead_rows_not_an_error():
    rows = torch.tensor([[5, 13], [5, 14], [6, 13]])
    trie = PrefixTrie(rows, vocab_size=VOCAB)
    ids, attn = torch.tensor([[1, 5, 13]]), torch.ones(1, 3, dtype=torch.long)
    out, logp = constrained_beam_search(_llama(), ids, attn, trie, beam_width=VOCAB + 12, num_return=VOCAB + 12)
    valid = out[0, :3].tolist()
    assert sorted(valid) == sorted(rows.tolist())
    assert (out[0, 3:] == -1).all() and torch.isinf(logp[0, 3:]).all()


# ----- start nodes: one batch over a trie forest, each query decoding its own group ------------------------------


def _forest(n: int = 150, seed: int = 14) -> tuple[PrefixTrie, np.ndarray, np.ndarray]:
    """3 overlapping random groups of catalog rows as a forest with a 4th, empty group: (forest, items,
    membership [3, n_items])."""
    items = _catalog(n, seed=seed)
    member = np.random.default_rng(seed).random((3, len(items))) < 0.5
    groups = np.concatenate([np.full(int(m.sum()), g) for g, m in enumerate(member)])
    forest = PrefixTrie.forest(groups, np.concatenate([items[m] for m in member]), n_groups=4, vocab_size=VOCAB)
    return forest, items, member


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_a_mixed_batch_over_a_forest_equals_each_group_alone(shared_prompt):
    model = _llama(8)
    forest, items, member = _forest()
    ids, attn = _prompts(9, seed=15)
    group = np.array([0, 1, 2, 3, 0, 1, 2, 0, 1])
    rows, scores = constrained_beam_search(model, ids, attn, forest, beam_width=5, num_return=5,
                                           shared_prompt=shared_prompt, start=forest.group_nodes(group),
                                           start_depth=1)
    assert rows.shape == (9, 5, 4)
    for g in range(3):
        own = PrefixTrie(items[member[g]], vocab_size=VOCAB)
        q = torch.from_numpy(group == g)
        alone_rows, alone_scores = constrained_beam_search(model, ids[q], attn[q], own, beam_width=5, num_return=5,
                                                           shared_prompt=shared_prompt)
        assert torch.equal(rows[q], alone_rows) and torch.allclose(scores[q], alone_scores, atol=1e-4)
        assert own.contains(rows[q].reshape(-1, 4)).all()  # only the group's rows: invalid rate exactly 0
    assert (rows[3] == -1).all() and torch.isinf(scores[3]).all()  # an empty group gives nothing


def test_exclusion_is_walked_from_each_querys_start():
    model = _llama(9)
    items = _catalog(12, seed=16)
    groups = np.r_[np.zeros(8, np.int64), np.ones(8, np.int64)]  # group 0: items 0-7, group 1: items 4-11
    forest = PrefixTrie.forest(groups, np.concatenate([items[:8], items[4:]]), n_groups=2, vocab_size=VOCAB)
    ids, attn = _prompts(4, seed=17)
    group = np.array([0, 1, 0, 1])
    own = [items[:8], items[4:]]
    exact = [_exact_scores(model, ids[b : b + 1], attn[b : b + 1], own[group[b]])[0] for b in range(4)]
    order = [e.argsort(descending=True) for e in exact]
    banned = [own[group[b]][order[b][: b + 1].numpy()] for b in range(4)]  # query b bans its top b+1 items
    banned[0] = np.concatenate([banned[0], items[10:11]])  # an item of the other group only: ignored
    rows, scores = constrained_beam_search(model, ids, attn, forest, beam_width=8, num_return=4, exclude=banned,
                                           start=forest.group_nodes(group), start_depth=1)
    for b in range(4):
        allowed = order[b][b + 1 :][:4]
        assert torch.equal(rows[b], torch.as_tensor(own[group[b]])[allowed])
        assert torch.allclose(scores[b], exact[b][allowed], atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": torch.tensor([0]), "start_depth": 1}, "one node per query"),
        ({"start_depth": 1}, "needs start nodes"),
        ({"start": torch.tensor([0, 9]), "start_depth": 1}, "start node 9 does not exist at depth 1"),
        ({"start": torch.tensor([0, 0]), "start_depth": 5}, "start_depth 5 must lie in 0..4"),
        ({"start": torch.tensor([0, 0]), "start_depth": 1, "steps": 3, "exclude": [None, None]},
         "trie depth 4 below the start"),
    ],
)
def test_start_argument_errors(kwargs, message):
    forest, _, _ = _forest(20)
    ids, attn = _prompts(2, pad=False)
    with pytest.raises(DataError, match=message):
        constrained_beam_search(_llama(), ids, attn, forest, beam_width=2, num_return=1, **kwargs)
