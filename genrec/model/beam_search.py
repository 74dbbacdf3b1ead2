"""Batched beam search over a causal LM that can only spell items in a prefix trie: one forward pass over
the (left-padded) prompts, then one cached step per SID token. Each step log-softmaxes over the whole
vocabulary, masks what the trie forbids with one scatter, and takes the top beams of every query with one
``topk``: no Python loop over queries, beams or items, so every returned row is an item of the trie.

Two ways to step the beams (same results):
- ``shared_prompt=True`` (default): the prompt's KV cache is kept once per query; the W beams of a query
  are fed together as W query positions of its row, each attending to the prompt and to its own ancestor
  tokens through a 4-D attention mask ("tree attention"). Nothing is copied when beams are reselected.
- ``shared_prompt=False``: the cache is expanded to one row per beam and reordered with the cache's
  ``reorder_cache`` whenever beams are reselected (what ``generate`` does, minus repeating the prompt).

Queries need not start at the trie's root: with ``start`` (one node per query at ``start_depth``) each query
spells only the rest of the rows under its node, e.g. a retailer's subtree of a trie forest
(``PrefixTrie.forest``), so one batch can mix retailers and each still gets only what it stocks.

The model is called through ``genrec.model.decoder_step`` (the cache, the call and the reordering, whatever the
transformers version), so what follows is the search alone.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from genrec.model import decoder_step
from index.trie import PrefixTrie
from semid.common import DataError

NEG_INF = float("-inf")


@torch.no_grad()
def constrained_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: PrefixTrie,
    beam_width: int,
    num_return: int,
    steps: int | None = None,
    exclude: Sequence[np.ndarray | torch.Tensor | None] | None = None,
    constrained: bool = True,
    shared_prompt: bool = True,
    start: torch.Tensor | None = None,
    start_depth: int = 0,
    with_levels: bool = False,
    with_prompt_state: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Top ``num_return`` token rows per query, best first, with their sequence log-probs.

    ``input_ids``/``attention_mask``: [B, T], left-padded. ``exclude``: per query, full token rows (of
    ``steps`` tokens) that may not be produced (e.g. the history). ``start``: per query, the trie node at
    ``start_depth`` to decode under (default: the root), so rows are the last D - start_depth tokens; a
    start of -1 gives no rows. Returns (rows [B, num_return, steps] int64, log_probs [B, num_return]
    float32); where fewer rows exist, rows are -1 and log-probs -inf. ``constrained=False`` is plain beam
    search over the full vocabulary (for comparison). ``shared_prompt=False`` steps with one cache row per
    beam (for models that do not take a 4-D attention mask). ``with_levels``: also return each row's
    log-prob after every step [B, num_return, steps] (the rank stage's per-level features, ``genrec.rank``).
    ``with_prompt_state``: also return the decoder's final hidden state at each prompt's last position [B, d]
    in float32, from the pass that decodes (what the item head reads, ``genrec.rank.item_head``; for the
    item-level decoder, its state after the history). The extra outputs come in that order."""
    steps = trie.depth - int(start_depth) if steps is None else int(steps)
    _check_args(input_ids, attention_mask, trie, beam_width, num_return, steps, exclude, constrained, start,
                start_depth)
    device = input_ids.device
    trie = trie.to(device)
    batch = input_ids.shape[0]
    first = trie.root(batch) if start is None else trie.start_nodes(start, batch, start_depth)
    banned = _exclusion_pairs(trie, exclude, first, start_depth) if exclude is not None else None
    track = constrained or banned is not None

    with _eval_mode(model):
        stepper = _stepper_class(model, shared_prompt)(
            model, input_ids, attention_mask.to(device=device, dtype=torch.long), beam_width, steps)
        logp = stepper.prompt()
        vocab, width = max(trie.depth_vocab[start_depth:]), logp.shape[-1]
        if track and vocab > width:
            raise DataError(f"beam search: the trie uses token ids up to {vocab - 1}, the model has {width}")
        rows, scores, levels = _beam_steps(stepper, logp, trie, first, banned, beam_width, steps, start_depth,
                                           constrained)
    rows, scores = _finish(rows.view(batch, beam_width, steps), scores.view(batch, beam_width), num_return)
    out = (rows, scores)
    if with_levels:
        out += (levels.view(batch, beam_width, steps)[:, :num_return],)
    if with_prompt_state:
        out += (stepper.prompt_state.float(),)
    return out


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block, back in training mode after it if it was."""
    was_training = model.training
    if was_training:  # eval() walks every module: only when there is a mode to change
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _stepper_class(model: torch.nn.Module, shared_prompt: bool) -> type:
    """How to step the beams of ``model``: by item state, by tree attention or by an expanded cache."""
    if getattr(model, "is_item_decoder", False):
        return _ItemSteps
    return _TreeSteps if shared_prompt else _ExpandSteps


def _beam_steps(stepper, logp: torch.Tensor, trie: PrefixTrie, nodes: torch.Tensor,
                banned: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, beam_width: int, steps: int,
                start_depth: int, constrained: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The search proper, from the prompts' log-probs ``logp`` [B, V]: one masked ``topk`` per token.
    Returns (rows [B*W, steps], scores [B*W], the score after each step [B*W, steps])."""
    batch, width = logp.shape
    device = logp.device
    track = constrained or banned is not None
    beams, scores = 1, torch.zeros(batch, device=device)
    rows = torch.zeros(batch, 0, dtype=torch.long, device=device)
    levels = torch.zeros(batch, 0, device=device)
    for t in range(steps):
        cand = logp + scores[:, None]
        if constrained:
            cand.masked_fill_(trie.disallowed_mask(start_depth + t, nodes, width), NEG_INF)
        if banned is not None and t == steps - 1:
            _ban(cand, nodes, banned, beams)
        top, flat = _top(cand.view(batch, beams * width), beam_width)
        parent = (torch.arange(batch, device=device)[:, None] * beams + flat // width).reshape(-1)
        token = (flat % width).reshape(-1)
        rows = torch.cat([rows[parent], token[:, None]], dim=1)
        scores = top.reshape(-1)
        levels = torch.cat([levels[parent], scores[:, None]], dim=1)
        if track:
            nodes = trie.step(start_depth + t, nodes[parent], token)
        beams = beam_width
        if t < steps - 1:
            logp = stepper.feed(parent, token, t)
    return rows, scores, levels


class _ItemSteps:
    """An item-level decoder (``genrec.model.item_decoder``): the item stack runs once per query; each step runs
    only the small depth stack over every beam's state and codeword prefix (no cache to reorder)."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, width: int, steps: int):
        if steps != model.config.tokens_per_item:
            raise DataError(f"beam search: an item decoder spells whole SIDs ({model.config.tokens_per_item} "
                            f"tokens), not {steps}")
        self.model, self.ids, self.attn = model, ids, attn

    def prompt(self) -> torch.Tensor:
        """Each query's state after its history; log-probs of the first codeword [B, V]."""
        self.state = self.model.encode(self.ids, self.attn)
        self.prompt_state = self.state.state
        self.prefix = self.ids.new_zeros(self.state.state.shape[0], 0)
        return self.model.next_logp(self.state, self.prefix)

    def feed(self, parent: torch.Tensor, token: torch.Tensor, t: int) -> torch.Tensor:
        """Follow the selected beams, append their codewords; log-probs of the next codeword [B*W, V]."""
        self.state = self.state[parent]
        self.prefix = torch.cat([self.prefix[parent], token[:, None]], dim=1)
        return self.model.next_logp(self.state, self.prefix)


class _ExpandSteps:
    """One cache row per beam, reordered on every reselection."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, width: int, steps: int):
        self.model, self.ids, self.attn = model, ids, attn
        self.positions = (attn.cumsum(-1) - 1).clamp(min=0)
        self.prompt_len = ids.shape[1]
        self.cache = decoder_step.new_cache(model, self.prompt_len + steps)
        self.next_pos = self.positions[:, -1]

    def prompt(self) -> torch.Tensor:
        """Run the prompts once; log-probs of the first token [B, V]."""
        out = decoder_step.step(self.model, self.ids, self.attn, self.positions, self.cache)
        self.cache, self.prompt_state = out.cache, out.hidden[:, -1]
        return _log_softmax(out.logits[:, -1])

    def feed(self, parent: torch.Tensor, token: torch.Tensor, t: int) -> torch.Tensor:
        """Reorder the cache to the selected beams, feed their new tokens; log-probs [B*W, V]."""
        decoder_step.reorder(self.cache, parent, self.prompt_len if t else None)
        self.attn = torch.cat([self.attn[parent], self.attn.new_ones(parent.shape[0], 1)], dim=1)
        self.next_pos = self.next_pos[parent] + 1
        out = decoder_step.step(self.model, token[:, None], self.attn, self.next_pos[:, None], self.cache)
        self.cache = out.cache
        return _log_softmax(out.logits[:, -1])


class _TreeSteps:
    """The prompt cache once per query; beams fed side by side, each seeing only its own ancestors. The
    token a beam takes at step t is stored at cache slot ``T + t*W + w``; ``slots`` lists each beam's."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, width: int, steps: int):
        self.model, self.ids, self.attn, self.width = model, ids, attn, width
        self.prompt_len = ids.shape[1]
        self.kv_len = self.prompt_len + width * max(steps - 1, 0)
        self.cache = decoder_step.new_cache(model, self.kv_len)
        self.next_pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, -1] + 1
        self.slots = torch.zeros(ids.shape[0], 0, dtype=torch.long, device=ids.device)
        self.dtype = next(model.parameters()).dtype

    def prompt(self) -> torch.Tensor:
        """Run the prompts once; log-probs of the first token [B, V]."""
        positions = (self.attn.cumsum(-1) - 1).clamp(min=0)
        out = decoder_step.step(self.model, self.ids, self.attn, positions, self.cache)
        self.cache, self.prompt_state = out.cache, out.hidden[:, -1]
        return _log_softmax(out.logits[:, -1])

    def feed(self, parent: torch.Tensor, token: torch.Tensor, t: int) -> torch.Tensor:
        """Feed every beam's new token as one of W positions of its query's row; log-probs [B*W, V]."""
        batch, width = self.ids.shape[0], self.width
        here = self.prompt_len + t * width + torch.arange(width, device=token.device).repeat(batch)
        self.slots = torch.cat([self.slots[parent], here[:, None]], dim=1)  # [B*W, t+1]
        kv_len = self.kv_len if decoder_step.preallocated(self.cache) else self.prompt_len + (t + 1) * width
        seen = torch.zeros(batch, width, kv_len, dtype=torch.bool, device=token.device)
        seen[:, :, : self.prompt_len] = self.attn[:, None, :].bool()
        seen.scatter_(2, self.slots.view(batch, width, t + 1), True)
        mask = torch.zeros(seen.shape, dtype=self.dtype, device=token.device)
        mask.masked_fill_(~seen, torch.finfo(self.dtype).min)
        positions = (self.next_pos + t)[:, None].expand(batch, width)
        out = decoder_step.step(self.model, token.view(batch, width), mask[:, None], positions, self.cache, width)
        self.cache = out.cache
        return _log_softmax(out.logits.reshape(batch * width, -1))


def _check_args(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: PrefixTrie,
    beam_width: int,
    num_return: int,
    steps: int,
    exclude: Sequence | None,
    constrained: bool,
    start: torch.Tensor | None,
    start_depth: int,
) -> None:
    """Shape and range checks, with messages that say what is wrong."""
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise DataError(
            f"beam search: input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
            "must both be [batch, length]"
        )
    if input_ids.shape[1] == 0 or bool((attention_mask[:, -1] == 0).any()):
        raise DataError("beam search: every prompt needs at least one token and must be left-padded")
    if not 1 <= num_return <= beam_width:
        raise DataError(f"beam search: need 1 <= num_return ({num_return}) <= beam_width ({beam_width})")
    if not 0 <= start_depth < trie.depth:
        raise DataError(f"beam search: start_depth {start_depth} must lie in 0..{trie.depth - 1}")
    if start is None and start_depth:
        raise DataError(f"beam search: start_depth {start_depth} needs start nodes")
    left = trie.depth - start_depth
    if steps < 1 or ((constrained or exclude is not None) and steps != left):
        raise DataError(
            f"beam search: steps {steps} must be >= 1, and equal the trie depth {left} below the start when "
            "constrained or excluding"
        )
    if exclude is not None and len(exclude) != input_ids.shape[0]:
        raise DataError(f"beam search: exclude has {len(exclude)} entries for {input_ids.shape[0]} queries")


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the whole vocabulary, in float32."""
    return torch.log_softmax(logits.float(), dim=-1)


def _exclusion_pairs(
    trie: PrefixTrie, exclude: Sequence[np.ndarray | torch.Tensor | None], first: torch.Tensor, start_depth: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Forbidden last steps as (query, node at depth D-1, last token), each row walked from its query's
    start node ``first``; rows outside that subtree are dropped."""
    length = trie.depth - start_depth
    parts, owners = [], []
    for q, rows in enumerate(exclude):
        if rows is None or len(rows) == 0:
            continue
        arr = torch.as_tensor(np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows), dtype=torch.long)
        arr = arr.reshape(-1, length) if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[1] != length:
            raise DataError(f"beam search: exclude[{q}] must be token rows of length {length}")
        parts.append(arr)
        owners.append(torch.full((arr.shape[0],), q, dtype=torch.long))
    if not parts:
        return None
    rows = torch.cat(parts).to(first.device)
    query = torch.cat(owners).to(first.device)
    path = trie.path(rows, first[query], start_depth)
    keep = path[:, -1] >= 0
    return query[keep], path[keep, -2], rows[keep, -1]


def _ban(
    cand: torch.Tensor, nodes: torch.Tensor, banned: tuple[torch.Tensor, torch.Tensor, torch.Tensor], beams: int
) -> None:
    """Set -inf wherever a beam sits on a banned pair's parent node and would take its last token."""
    query, parent, token = banned
    hit = nodes.view(-1, beams)[query] == parent[:, None]  # [E, beams]
    pair, beam = hit.nonzero(as_tuple=True)
    cand[query[pair] * beams + beam, token[pair]] = NEG_INF


def _top(cand: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk over the candidates; when fewer than ``k`` exist (a beam wider than the vocabulary), the extra
    beams repeat the best one with score -inf, so they stay valid trie paths and come back dead."""
    top, flat = cand.topk(min(k, cand.shape[-1]), dim=-1)
    short = k - top.shape[-1]
    if short > 0:
        top = torch.cat([top, top.new_full((top.shape[0], short), NEG_INF)], dim=1)
        flat = torch.cat([flat, flat[:, :1].expand(-1, short)], dim=1)
    return top, flat


def _finish(rows: torch.Tensor, scores: torch.Tensor, num_return: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the best ``num_return`` (already sorted by topk); dead beams become -1 rows."""
    rows, scores = rows[:, :num_return], scores[:, :num_return]
    dead = torch.isinf(scores)
    return rows.masked_fill(dead[..., None], -1), scores
