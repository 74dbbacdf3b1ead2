"""Examples -> token sequences for the decoder, and the padded batches it trains on.

A sequence is ``<bos> [retailer] history SIDs target SIDs`` with every item spelled by its L+1 tokens.
Labels follow the transformers convention (aligned with ``input_ids``, shifted inside the loss) and are
-100 on the prefix, the history and padding, so the causal loss covers exactly every target item's SID.
Batches are cut from length-sorted buckets so padding stays small.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from genrec.data.sequences import NO_RETAILER, Examples
from semid.common import DataError

IGNORE = -100  # label of positions the loss skips (transformers' convention)


@dataclass
class ItemTokens:
    """Every item's L+1 token ids: ``tokens[i]`` spells ``item_ids[i]``; ``item_ids`` ascending."""

    item_ids: np.ndarray  # (n_items,) int64, ascending, unique
    tokens: np.ndarray  # (n_items, L+1) int64

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        tokens = np.asarray(self.tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] != ids.size:
            raise DataError(f"item tokens: expected ({ids.size}, L+1) token rows, got shape {tokens.shape}")
        order = np.argsort(ids, kind="stable")
        ids, tokens = ids[order], tokens[order]
        if ids.size > 1 and (ids[1:] == ids[:-1]).any():
            raise DataError(f"item tokens: duplicate item_id {ids[1:][ids[1:] == ids[:-1]][0]}")
        self.item_ids, self.tokens = ids, tokens

    @property
    def tokens_per_item(self) -> int:
        """L+1."""
        return int(self.tokens.shape[1])

    def known(self, item_ids: np.ndarray) -> np.ndarray:
        """Bool per item id: does it have a SID here? (to drop unknown items from serving histories)"""
        return np.isin(np.asarray(item_ids, dtype=np.int64), self.item_ids)

    def rows(self, item_ids: np.ndarray, where: str = "history") -> np.ndarray:
        """Row index of each item id; an id without a SID raises DataError naming it."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if self.item_ids.size == 0:
            pos, missing = np.zeros(item_ids.shape, np.int64), np.ones(item_ids.shape, bool)
        else:
            pos = np.minimum(np.searchsorted(self.item_ids, item_ids), self.item_ids.size - 1)
            missing = self.item_ids[pos] != item_ids
        if missing.any():
            bad = np.unique(item_ids[missing])
            raise DataError(f"{where}: {bad.size} item ids have no SID (not in sids.parquet), e.g. {bad[:5].tolist()}")
        return pos

    @classmethod
    def from_sids(cls, sids: pa.Table, tokenizer) -> "ItemTokens":
        """From a SID table (item_id, codes, dedup) and a ``semid.tokenizer.SIDTokenizer``."""
        for name in ("item_id", "codes", "dedup"):
            if name not in sids.column_names:
                raise DataError(f"sids.parquet: missing column {name!r} (has: {sids.column_names})")
        codes = sids.column("codes").combine_chunks()
        n_levels = tokenizer.n_levels
        flat = codes.flatten().to_numpy(zero_copy_only=False)
        if flat.size != len(codes) * n_levels:
            raise DataError(f"sids.parquet: every codes list must hold {n_levels} codes")
        tokens = tokenizer.encode_batch(flat.reshape(-1, n_levels), sids.column("dedup").to_numpy())
        return cls(sids.column("item_id").to_numpy().astype(np.int64), tokens)


@dataclass
class TokenizedExamples:
    """Flat token sequences: sequence i is ``tokens[offsets[i]:offsets[i+1]]``; its first ``n_context[i]``
    tokens (prefix and history) carry no label."""

    tokens: np.ndarray  # flat int64
    offsets: np.ndarray  # (n + 1,) int64
    n_context: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return int(self.n_context.size)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sequence."""
        return np.diff(self.offsets)

    @property
    def n_labels(self) -> int:
        """Labelled tokens over all sequences."""
        return int((self.lengths - self.n_context).sum())


def tokenize_examples(
    examples: Examples,
    item_tokens: ItemTokens,
    bos_id: int,
    retailer_token: Callable[[np.ndarray], np.ndarray] | None = None,
    with_targets: bool = True,
) -> TokenizedExamples:
    """Spell each example as ``<bos> [retailer] history [targets]`` (vectorised).

    ``retailer_token`` maps retailer ids to token ids (e.g. ``SIDTokenizer.encode_retailer``); when given,
    examples with a retailer get its token. ``with_targets=False`` gives the query prefixes (inference).
    """
    n, width = len(examples), item_tokens.tokens_per_item
    n_hist = np.diff(examples.history_offsets)
    n_tgt = np.diff(examples.target_offsets) if with_targets else np.zeros(n, np.int64)
    has_retailer = np.zeros(n, bool)
    retailer_tok = np.zeros(n, np.int64)
    if retailer_token is not None:
        has_retailer = examples.retailer_ids != NO_RETAILER
        if has_retailer.any():
            retailer_tok[has_retailer] = np.asarray(retailer_token(examples.retailer_ids[has_retailer]))
    n_prefix = 1 + has_retailer.astype(np.int64)
    lengths = n_prefix + (n_hist + n_tgt) * width
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    out = np.empty(offsets[-1], np.int64)
    out[offsets[:-1]] = bos_id
    out[offsets[:-1][has_retailer] + 1] = retailer_tok[has_retailer]
    # every example's items: history then targets, as rows of the token matrix
    items = _interleave(examples, n_hist, n_tgt, with_targets)
    rows = item_tokens.rows(items, "examples")
    n_items = n_hist + n_tgt
    item_start = np.repeat(offsets[:-1] + n_prefix, n_items)  # where the example's first item begins
    k = np.arange(items.size) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    pos = (item_start + k * width)[:, None] + np.arange(width)
    out[pos] = item_tokens.tokens[rows]
    return TokenizedExamples(out, offsets, n_prefix + n_hist * width)


def _interleave(examples: Examples, n_hist: np.ndarray, n_tgt: np.ndarray, with_targets: bool) -> np.ndarray:
    """Per example, its history items followed by its target items, as one flat array."""
    if not with_targets:
        return examples.history_items
    n_items = n_hist + n_tgt
    start = np.r_[0, np.cumsum(n_items)][:-1]
    out = np.empty(int(n_items.sum()), np.int64)
    k_h = np.arange(examples.history_items.size) - np.repeat(examples.history_offsets[:-1], n_hist)
    out[np.repeat(start, n_hist) + k_h] = examples.history_items
    k_t = np.arange(examples.target_items.size) - np.repeat(examples.target_offsets[:-1], n_tgt)
    out[np.repeat(start + n_hist, n_tgt) + k_t] = examples.target_items
    return out


def collate(seqs: TokenizedExamples, index: np.ndarray, pad_id: int, padding_side: str = "right") -> dict:
    """Sequences ``index`` as one padded batch: input_ids, attention_mask, position_ids, labels (tensors)."""
    index = np.asarray(index, dtype=np.int64)
    lengths = seqs.lengths[index]
    width = int(lengths.max())
    col = np.arange(width)[None, :]
    if padding_side == "right":
        real = col < lengths[:, None]
        pos_in_seq = np.broadcast_to(col, real.shape)
    elif padding_side == "left":
        real = col >= (width - lengths)[:, None]
        pos_in_seq = col - (width - lengths)[:, None]
    else:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    src = np.where(real, seqs.offsets[index][:, None] + pos_in_seq, 0)
    input_ids = np.where(real, seqs.tokens[src], pad_id)
    labels = np.where(real & (pos_in_seq >= seqs.n_context[index][:, None]), input_ids, IGNORE)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(real.astype(np.int64)),
        "position_ids": torch.from_numpy(np.where(real, pos_in_seq, 0).astype(np.int64)),
        "labels": torch.from_numpy(labels),
    }


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucket: int = 50) -> list[np.ndarray]:
    """The batches of one epoch, a pure function of (seed, epoch): shuffle, sort chunks of
    ``batch_size * bucket`` sequences by length (little padding), cut into batches, shuffle the batches."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(lengths.size)
    chunk = max(1, batch_size * bucket)
    batches = []
    for c in range(0, perm.size, chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[b : b + batch_size] for b in range(0, part.size, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]

