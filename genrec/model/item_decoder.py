"""The item-level decoder (``decoder.arch: item``): one position per history item, a small depth decoder
that writes the next item's SID codeword by codeword (after MARIUS, arXiv 2508.14910).

Where the token-level decoder reads ``<bos> [retailer] c1 c2 c3 d  c1 c2 c3 d ...`` (4 positions per item,
TIGER's layout), this model reads the same token sequence but folds every item into one vector: the sum
of its codeword embeddings, plus, for items seen in training, an embedding of the item itself (its ID
embedding, ``decoder.id_embeddings``: a memorisation channel for rare items whose neighbours' codes would
otherwise drown them). A causal GPT-2 stack over ``[context, item_1, ..., item_n]`` gives one state per
position; the state at position j predicts item j+1 (loss at every labelled position, SASRec-style). The
depth decoder, a 2-layer causal GPT-2 stack over ``[state, c1, ..., c_{D-1}]`` (cross-attending to the item
states with ``decoder.depth_cross_attention``), writes the codewords; its output logits are tied to the
codeword embeddings and normalised within each level's token range.

Decoding runs the item stack once per query and only the depth stack per beam step
(``genrec.model.beam_search`` picks the stepper by ``is_item_decoder``), so the trie-constrained beam search,
retailer forests and exclusions work unchanged. Saved as a transformers folder (safetensors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model, PretrainedConfig, PreTrainedModel

IGNORE = -100


@dataclass
class EncodedHistory:
    """A history as the item stack encodes it, what the depth stack reads for each row: the state after the
    history [M, d] and, with ``depth_cross_attention``, every item state so far [M, S, d] with its mask
    [M, S] (S: positions)."""

    state: torch.Tensor
    states: torch.Tensor | None = None
    seen: torch.Tensor | None = None

    def __getitem__(self, rows: torch.Tensor) -> "EncodedHistory":
        """The rows ``rows`` (e.g. each beam's query)."""
        if self.states is None:
            return EncodedHistory(self.state[rows])
        return EncodedHistory(self.state[rows], self.states[rows], self.seen[rows])

    def repeat_interleave(self, n: int) -> "EncodedHistory":
        """Each row ``n`` times in a row."""
        rows = torch.arange(self.state.shape[0], device=self.state.device).repeat_interleave(n)
        return self[rows]

    @property
    def width(self) -> int:
        """Item states per row (1 without them): the cost of a row in the depth stack."""
        return 1 if self.states is None else int(self.states.shape[1])


class ItemDecoderConfig(PretrainedConfig):
    """Sizes of the item stack and the depth stack, the token layout, and the memorisation table size."""

    model_type = "genrec_item_decoder"

    def __init__(
        self,
        vocab_size: int = 8,
        level_offsets: Sequence[int] = (5, 6),  # first token id of each SID level, then the end of the last
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        d_ff: int = 256,
        depth_layers: int = 2,
        dropout: float = 0.2,
        max_items: int = 50,
        memo_size: int = 0,  # items with a memorisation (ID) embedding (0: none)
        depth_cross_attention: bool = False,  # the depth stack also cross-attends to the item states so far
        **kwargs,
    ) -> None:
        old = kwargs.pop("depth_memory", None)  # its old spelling, in decoders saved before the rename
        depth_cross_attention = bool(depth_cross_attention or old)
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.level_offsets = [int(x) for x in level_offsets]
        self.d_model, self.n_layers, self.n_heads, self.d_ff = int(d_model), int(n_layers), int(n_heads), int(d_ff)
        self.depth_layers, self.dropout, self.max_items = int(depth_layers), float(dropout), int(max_items)
        self.memo_size = int(memo_size)
        self.depth_cross_attention = depth_cross_attention

    @property
    def tokens_per_item(self) -> int:
        """D: codeword levels plus the disambiguation level."""
        return len(self.level_offsets) - 1

    def stack(self, n_layers: int, n_positions: int, cross: bool = False) -> GPT2Config:
        """A GPT-2 block stack of this width (no vocabulary of its own: it reads embeddings); ``cross``: each
        block also cross-attends to the item states."""
        return GPT2Config(add_cross_attention=cross,
            vocab_size=1, n_embd=self.d_model, n_inner=self.d_ff, n_layer=n_layers, n_head=self.n_heads,
            n_positions=n_positions, resid_pdrop=self.dropout, embd_pdrop=self.dropout, attn_pdrop=self.dropout,
            bos_token_id=None, eos_token_id=None,
        )


class ItemDecoder(PreTrainedModel):
    """Item stack + depth stack over one codeword embedding table (see the module docstring)."""

    config_class = ItemDecoderConfig
    base_model_prefix = "item_decoder"
    is_item_decoder = True  # genrec.model.beam_search steps it with _ItemSteps

    def __init__(self, config: ItemDecoderConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.codes = nn.Embedding(config.vocab_size, d)
        self.memo = nn.Embedding(config.memo_size + 1, d, padding_idx=0) if config.memo_size else None
        self.register_buffer("memo_keys", torch.zeros(config.memo_size, dtype=torch.long))
        self.items = GPT2Model(config.stack(config.n_layers, config.max_items + 2))
        self.bridge = nn.Linear(d, d)
        depth = config.stack(config.depth_layers, config.tokens_per_item + 1, config.depth_cross_attention)
        self.depth = GPT2Model(depth)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    # ----- memorisation ---------------------------------------------------------------------------------

    def set_memorised(self, rows: np.ndarray) -> None:
        """The token rows [n, D] of the items that get a memorisation embedding (items seen in training)."""
        keys = np.unique(pack_rows(np.asarray(rows, np.int64), self.config.vocab_size))
        if keys.size != self.config.memo_size:
            raise ValueError(f"item decoder: {keys.size} distinct memorised rows for memo_size {self.config.memo_size}")
        self.memo_keys.copy_(torch.from_numpy(keys))

    def _memo_index(self, codes: torch.Tensor) -> torch.Tensor:
        """Row of each item's memorisation embedding (0: none, e.g. a product new since training)."""
        keys = pack_rows(codes, self.config.vocab_size)
        pos = torch.searchsorted(self.memo_keys, keys).clamp(max=self.memo_keys.numel() - 1)
        return torch.where(self.memo_keys[pos] == keys, pos + 1, torch.zeros_like(pos))

    # ----- the item stack -------------------------------------------------------------------------------

    def split_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A token batch (either padding side) -> (codes [B, N, D] left-aligned, n_items [B], context
        embedding [B, d] of the non-SID tokens (<bos>, retailer), labelled [B, N] or None)."""
        D = self.config.tokens_per_item
        real = attention_mask.bool()
        lo, hi = self.config.level_offsets[0], self.config.level_offsets[-1]
        sid = real & (input_ids >= lo) & (input_ids < hi)
        rank = sid.long().cumsum(1) - 1
        n_items = sid.sum(1) // D
        width = max(int(n_items.max()), 1) if n_items.numel() else 1
        codes = input_ids.new_zeros(input_ids.shape[0], width, D)
        b, t = sid.nonzero(as_tuple=True)
        codes[b, rank[b, t] // D, rank[b, t] % D] = input_ids[b, t]
        ctx = real & ~sid
        context = (self.codes(input_ids) * ctx[..., None]).sum(1)
        labelled = None
        if labels is not None:
            labelled = torch.zeros(codes.shape[:2], dtype=torch.bool, device=input_ids.device)
            first = (rank[b, t] % D == 0) & (labels[b, t] != IGNORE)
            labelled[b[first], rank[b, t][first] // D] = True
        return codes, n_items, context, labelled

    def item_states(self, codes: torch.Tensor, n_inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """States [B, N+1, d]: position 0 reads the context, position j+1 item j, up to each sequence's
        first ``n_inputs`` items; right-padded. Position ids count back from the last input (it always
        sits at the last position, in training as at inference, as in SASRec's left-padded window)."""
        B, N, _ = codes.shape
        x = self.codes(codes).sum(2)
        if self.memo is not None:
            x = x + self.memo(self._memo_index(codes))
        x = torch.cat([context[:, None], x], dim=1)
        j = torch.arange(N + 1, device=codes.device)[None]
        mask = (j <= n_inputs[:, None]).long()
        last = self.config.max_items + 1
        positions = (last - (n_inputs[:, None] - j)).clamp(min=0, max=last)
        return self.items(inputs_embeds=x, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedHistory:
        """Each query's state after its whole history [B, d] (what the depth decoder starts from), with the
        states so far and their mask where the depth stack reads them (``depth_cross_attention``)."""
        codes, n_items, context, _ = self.split_items(input_ids, attention_mask)
        codes, n_items, _ = _keep_latest(codes, n_items, self.config.max_items)
        states = self.item_states(codes, n_items, context)
        last = states[torch.arange(states.shape[0], device=states.device), n_items]
        if not self.config.depth_cross_attention:
            return EncodedHistory(last)
        seen = torch.arange(states.shape[1], device=states.device)[None] <= n_items[:, None]
        return EncodedHistory(last, states, seen)

    # ----- the depth stack ------------------------------------------------------------------------------

    def depth_hidden(self, encoded: EncodedHistory, prefix: torch.Tensor) -> torch.Tensor:
        """Depth-stack outputs [M, t+1, d] for states [M, d] (and their item states) and codeword prefixes [M, t]."""
        x = torch.cat([self.bridge(encoded.state)[:, None], self.codes(prefix)], dim=1)
        extra = {}
        if self.config.depth_cross_attention:
            extra = {"encoder_hidden_states": encoded.states, "encoder_attention_mask": encoded.seen.long()}
        return self.depth(inputs_embeds=x, use_cache=False, **extra).last_hidden_state

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits over level ``level``'s token range (tied to the codeword embeddings)."""
        lo, hi = self.config.level_offsets[level], self.config.level_offsets[level + 1]
        return hidden @ self.codes.weight[lo:hi].T

    def next_logp(self, state: EncodedHistory, prefix: torch.Tensor) -> torch.Tensor:
        """Log-probs [M, vocab] of the next codeword after ``prefix`` [M, t]: normalised within level t's
        range, -inf elsewhere (so a trie mask over the whole vocabulary applies as is)."""
        level = prefix.shape[1]
        logits = self.level_logits(self.depth_hidden(state, prefix)[:, -1], level).float()
        out = logits.new_full((logits.shape[0], self.config.vocab_size), float("-inf"))
        lo, hi = self.config.level_offsets[level], self.config.level_offsets[level + 1]
        out[:, lo:hi] = torch.log_softmax(logits, dim=-1)
        return out

    # ----- training -------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                **_: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean codeword cross-entropy over every labelled item (teacher-forced codewords) -> (loss, tokens)."""
        codes, n_items, context, labelled = self.split_items(input_ids, attention_mask, labels)
        codes, n_items, labelled = _keep_latest(codes, n_items, self.config.max_items + 1, labelled)
        states = self.item_states(codes, (n_items - 1).clamp(min=0), context)  # the last item is only a target
        b, j = labelled.nonzero(as_tuple=True)
        if b.numel() == 0:  # nothing to predict: a zero that still reaches every parameter's graph
            return states.sum() * 0.0, torch.zeros((), dtype=torch.long, device=states.device)
        target = codes[b, j]  # [M, D]
        encoded = EncodedHistory(states[b, j])
        if self.config.depth_cross_attention:  # the states up to and including the predicting one
            seen = torch.arange(states.shape[1], device=b.device)[None] <= j[:, None]
            encoded = EncodedHistory(states[b, j], states[b], seen)
        hidden = self.depth_hidden(encoded, target[:, :-1])
        loss = hidden.new_zeros((), dtype=torch.float32)
        for level in range(target.shape[1]):
            logits = self.level_logits(hidden[:, level], level).float()
            loss = loss + F.cross_entropy(logits, target[:, level] - self.config.level_offsets[level], reduction="sum")
        n = torch.tensor(target.numel(), device=loss.device)
        return loss / n.clamp(min=1), n


def pack_rows(rows: np.ndarray | torch.Tensor, vocab: int) -> np.ndarray | torch.Tensor:
    """One int64 key per token row (base-``vocab`` digits), for exact lookups of memorised items."""
    D = rows.shape[-1]
    if float(vocab) ** D >= 2.0**62:
        raise ValueError(f"item decoder: {D} tokens of a {vocab}-token vocabulary do not pack into int64")
    key = rows[..., 0] * 0
    for level in range(D):
        key = key * vocab + rows[..., level]
    return key


def _keep_latest(codes: torch.Tensor, n_items: torch.Tensor, keep: int, labelled: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each sequence's most recent ``keep`` items, left-aligned again (a history over the model's cap)."""
    if codes.shape[1] <= keep:
        return codes, n_items, labelled
    span = torch.arange(keep, device=codes.device)[None]
    idx = ((n_items - keep).clamp(min=0)[:, None] + span).clamp(max=codes.shape[1] - 1)
    if labelled is not None:
        labelled = labelled.gather(1, idx) & (span < n_items[:, None])
    return codes.gather(1, idx[..., None].expand(-1, -1, codes.shape[2])), n_items.clamp(max=keep), labelled


@torch.no_grad()
def catalog_log_probs(model: ItemDecoder, states: EncodedHistory | torch.Tensor, rows: torch.Tensor,
                      chunk: int = 1 << 16) -> torch.Tensor:
    """Exact log-probability of every catalog SID for every query: [B, N] for states [B, d] and token rows
    [N, D] (an infinitely wide beam). Level by level, the depth stack runs once per distinct prefix of
    that level and query (a few thousand per level), never once per product, in chunks of ``chunk``
    (query, prefix) pairs."""
    encoded = states if isinstance(states, EncodedHistory) else EncodedHistory(states)
    B, (N, D) = encoded.state.shape[0], rows.shape
    total = encoded.state.new_zeros(B, N, dtype=torch.float32)
    for level in range(D):
        if level == 0:
            prefixes, inverse = rows[:1, :0], torch.zeros(N, dtype=torch.long, device=rows.device)
        else:
            prefixes, inverse = torch.unique(rows[:, :level], dim=0, return_inverse=True)  # [P, level]
        lo = model.config.level_offsets[level]
        logp = _prefix_log_probs(model, encoded, prefixes, level, chunk)  # [B, P, level width]
        total += logp[:, inverse, rows[:, level] - lo]
    return total


def _prefix_log_probs(model: ItemDecoder, encoded: EncodedHistory, prefixes: torch.Tensor, level: int, chunk: int
                      ) -> torch.Tensor:
    """Level ``level``'s log-probs after each prefix, for every query: [B, P, width of the level]."""
    B, P = encoded.state.shape[0], prefixes.shape[0]
    per = max(1, chunk // max(P * encoded.width, 1))  # queries per chunk
    parts = []
    for s in range(0, B, per):
        part = encoded[torch.arange(s, min(s + per, B), device=encoded.state.device)]
        q = part.state.shape[0]
        hidden = model.depth_hidden(part.repeat_interleave(P), prefixes.repeat(q, 1))[:, -1]
        parts.append(torch.log_softmax(model.level_logits(hidden, level).float(), -1).view(q, P, -1))
    return torch.cat(parts)


@torch.no_grad()
def exact_top(model: ItemDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
              k: int, exclude: Sequence[torch.Tensor | np.ndarray | None] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` catalog rows of highest exact log-probability per query (what beam search approximates):
    (rows [B, k, D], log-probs [B, k]); ``exclude``: per query, catalog positions it may not return."""
    scores = catalog_log_probs(model, model.encode(input_ids, attention_mask), rows)
    if exclude is not None:
        for q, banned in enumerate(exclude):
            if banned is not None and len(banned):
                scores[q, torch.as_tensor(np.asarray(banned), dtype=torch.long, device=scores.device)] = float("-inf")
    top, idx = scores.topk(min(k, rows.shape[0]), dim=1)
    return rows[idx], top
