"""Validation, one way for every model: the early-stopping rule (``EarlyStopping``) the decoder's trainer
and the neural baselines share, the fixed validation sample, and the decoder's validation metrics, computed
by the same ``genrec.evaluation.metrics.rank_metrics`` that scores the test lists, so validation and test
figures cannot drift apart."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from transformers import PreTrainedModel

from genrec.data.sequences import Examples
from genrec.evaluation.metrics import Targets, rank_metrics
from genrec.model.beam_search import constrained_beam_search
from genrec.model.tokens import ItemTokens, collate, tokenize_examples
from index.trie import PrefixTrie


@dataclass
class EarlyStopping:
    """The best validation score so far, where it was reached (a step or an epoch) and how many evaluations
    have not beaten it since; patience runs out after ``patience`` of those."""

    patience: int
    best: float | None = None
    best_at: int | None = None
    bad: int = 0

    def update(self, score: float, at: int) -> bool:
        """Record ``score`` reached at ``at``; True when it is a new best."""
        improved = self.best is None or score > self.best
        if improved:
            self.best, self.best_at, self.bad = score, at, 0
        else:
            self.bad += 1
        return improved

    @property
    def exhausted(self) -> bool:
        """Patience has run out: stop."""
        return self.bad >= self.patience
class RecallEvaluator:
    """The decoder's validation recall@K / ndcg@K: decode the top K items of every example with the
    constrained beam search over all items, then score the lists with ``rank_metrics``."""

    def __init__(
        self,
        examples: Examples,
        item_tokens: ItemTokens,
        bos_id: int,
        pad_id: int,
        retailer_token: Callable[[np.ndarray], np.ndarray] | None = None,
        k: int = 10,
        beam_width: int = 20,
        batch_size: int = 256,
        vocab_size: int | None = None,
    ) -> None:
        self.k, self.beam_width, self.batch_size, self.pad_id = k, max(beam_width, k), batch_size, pad_id
        self.monitor = f"recall@{k}"
        self.queries = tokenize_examples(examples, item_tokens, bos_id, retailer_token, with_targets=False)
        self.trie = PrefixTrie(item_tokens.tokens, vocab_size=vocab_size)
        leaf = self.trie.walk(item_tokens.tokens).numpy()
        self.leaf_item = np.full(self.trie.n_leaves, -1, np.int64)
        self.leaf_item[leaf] = item_tokens.item_ids  # leaf id -> item id (distinct SIDs: one item per leaf)
        self.targets = Targets(examples.target_offsets, examples.target_items)
        self.order = np.argsort(self.queries.lengths, kind="stable")  # similar lengths share a batch

    def __call__(self, model: PreTrainedModel) -> dict[str, float]:
        """Metrics of ``model`` on the validation examples (model left in the mode it came in)."""
        device = next(model.parameters()).device
        ranked = np.full((len(self.queries), self.k), -1, np.int64)
        for c in range(0, self.order.size, self.batch_size):
            index = self.order[c : c + self.batch_size]
            batch = collate(self.queries, index, self.pad_id, padding_side="left")
            rows, _ = constrained_beam_search(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device), self.trie,
                self.beam_width, self.k,
            )
            leaf = self.trie.walk(rows.reshape(-1, rows.shape[-1]).clamp(min=0)).view(rows.shape[:2]).cpu().numpy()
            items = np.where((leaf >= 0) & (rows[..., 0].cpu().numpy() >= 0), self.leaf_item[leaf.clip(0)], -1)
            ranked[index, : items.shape[1]] = items
        m = rank_metrics(ranked, self.targets, [self.k])
        return {self.monitor: m[self.monitor], f"ndcg@{self.k}": m[f"ndcg@{self.k}"]}


def sample_examples(examples: Examples, n: int | None, seed: int) -> Examples:
    """A fixed random subset of ``n`` examples (all when ``n`` is None or not smaller)."""
    if n is None or n >= len(examples):
        return examples
    pick = np.sort(np.random.default_rng([seed, 7]).choice(len(examples), size=n, replace=False))
    return examples.subset(pick)
