"""Run config section ``rank``: which candidate sources feed the rank stage, which ranker orders them, and
how the learned ranker is trained (``genrec.rank.train``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semid.config import Checks

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
    patience: int = 30  # rounds without a better holdout NDCG@10 before stopping
    seed: int = 0

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
                   "min_child_samples", "patience")
        c.at_least(0, "seed")
        c.within(0, 1, "holdout_share", "discover_share", open_high=True)
        c.above(0, "learning_rate", "holdout_share")
