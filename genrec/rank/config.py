"""The run config sections of the rank stage: ``rank`` (which candidate sources feed it, which ranker orders
them, and how the learned ranker is trained: ``genrec.rank.train``), ``memory`` (the co-purchase memory,
``genrec.rank.memory``) and ``item_head`` (the learned item head, ``genrec.rank.item_head``). Free of torch and
scipy, so a config is read and checked before the model stack loads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from semid.config import Checks

if TYPE_CHECKING:
    from genrec.data.copurchase import KNNSettings

SOURCES = ("beam", "again", "co")  # genrec.rank.sources
FEATURE_GROUPS = ("decoder", "co", "again", "popularity", "sid", "query", "new", "head")  # genrec.rank.features


@dataclass
class RankConfig:
    """The rank stage. ``weighted``: the decoder's beam re-scored by the product of experts (the co-purchase
    memory and the item head at their sections' weights), the lists of runs made before the rank stage;
    ``learned``: every source's candidates ordered by a LightGBM lambdarank model trained on the run's
    validation targets (never the test's)."""

    ranker: Literal["weighted", "learned"] = "weighted"
    sources: list[str] = field(default_factory=lambda: list(SOURCES))  # candidate sources of the learned ranker
    drop_features: list[str] = field(default_factory=list)  # feature groups left out (ablations)
    beam_width: int = 50  # products the decoder proposes per query
    co_top: int = 50  # products the co-purchase statistics propose per query
    again_top: int = 50  # most recent distinct products of the history proposed again
    # share of each list (ceil, as cold_start.share) that holds products the shopper never bought, where the
    # ranker would fill it with re-buys: a discovery row's trade of overall recall for new-to-shopper recall
    discover_share: float = 0.0
    train_queries: int | None = 12000  # validation queries the ranker trains on (seeded sample; None: all)
    holdout_share: float = 0.1  # of those, the share its early stopping reads
    trees: int = 400  # boosting rounds at most
    leaves: int = 31
    learning_rate: float = 0.02
    min_child_samples: int = 50
    # rounds without a better holdout NDCG@10 before stopping; 0: no holdout, ``trees`` rounds on every query
    patience: int = 30
    seed: int = 0
    # the decoder's weights when the ranker's candidates are decoded, in its training and (unless a caller says
    # otherwise) wherever the run retrieves: float32, bfloat16, or auto (bfloat16 on CUDA and on CPUs with
    # native bf16, as ``genrec serve`` decodes by default; genrec.model.decoder.inference_dtype), so the ranker
    # reads the features it was trained on; auto decodes about 1.6x faster on such a CPU (docs/ranking.md)
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"

    def __post_init__(self) -> None:
        c = Checks(self, "rank")
        c.literals()
        unknown = sorted(set(self.sources) - set(SOURCES))
        c.rule(not unknown, "sources", f"unknown sources {unknown}; known: {list(SOURCES)}")
        c.rule("beam" in self.sources, "sources", "must include beam (the decoder's candidates)")
        bad = sorted(set(self.drop_features) - set(FEATURE_GROUPS))
        c.rule(not bad, "drop_features", f"unknown feature groups {bad}; known: {list(FEATURE_GROUPS)}")
        c.rule(set(self.drop_features) != set(FEATURE_GROUPS), "drop_features", "leaves the ranker no features")
        c.at_least(1, "beam_width", "co_top", "again_top", "train_queries", "trees", "leaves",
                   "min_child_samples")
        c.at_least(0, "seed", "patience")
        c.within(0, 1, "holdout_share", "discover_share", open_high=True)
        c.above(0, "learning_rate", "holdout_share")


@dataclass
class MemoryConfig:
    """Run config section ``memory``: how much the co-purchase memory weighs against the decoder (0: off)
    and the co-occurrence settings (item-kNN's defaults)."""

    weight: float = 0.0  # exponent of the memory's factor in the product of experts; 0: the decoder alone
    floor: float = 0.01  # similarity added before the log, so products with no co-purchase are not -inf
    beam_width: int = 50  # products decoded per query for re-scoring (wider than the list: room to re-rank)
    window: int = 3
    decay: float = 1.0
    backward: float = 1.0
    alpha: float = 0.5
    gamma: float = 0.5
    last_n: int = 3
    recency: float = 0.7

    def __post_init__(self) -> None:
        c = Checks(self, "memory")
        c.at_least(0, "weight", "decay", "backward", "alpha", "gamma", "recency")
        c.above(0, "floor")
        c.at_least(1, "beam_width", "window", "last_n")

    @property
    def settings(self) -> KNNSettings:
        """The co-occurrence settings as item-kNN reads them (``genrec.data.copurchase``, which loads scipy)."""
        from genrec.data.copurchase import KNNSettings

        return KNNSettings(self.window, self.decay, self.backward, self.alpha, self.gamma, self.last_n,
                           self.recency)


@dataclass
class ItemHeadConfig:
    """Run config section ``item_head``: the head's size, its training, and its weight against the decoder."""

    weight: float = 0.0  # exponent of the head's probability in the product of experts; 0: off (not trained)
    dim: int = 64
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 0.003
    weight_decay: float = 0.0
    dropout: float = 0.3
    patience: int = 3
    max_items: int = 20  # history items per training pair (the decoder's context)
    eval_examples: int = 3000  # validation examples early stopping reads (a fixed random sample)
    beam_width: int = 50  # products decoded per query for re-scoring (wider than the list: room to re-rank)
    seed: int = 0

    def __post_init__(self) -> None:
        c = Checks(self, "item_head")
        c.at_least(0, "weight", "weight_decay", "seed")
        c.at_least(1, "dim", "epochs", "batch_size", "patience", "max_items", "eval_examples", "beam_width")
        c.above(0, "lr")
        c.within(0, 1, "dropout", open_high=True)
