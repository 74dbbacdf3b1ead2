"""Baseline recommenders run in the same harness as the generative model (``genrec.evaluation.harness``).

``BASELINES`` maps a baseline's name (the key in the evaluation JSON) to where its class lives and the
keyword arguments it is built with; ``make_baseline(name, **overrides)`` imports the module only when the
baseline is asked for, so a heavy or optional one never slows the others down.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from genrec.evaluation.baselines.base import FitContext, Recommender, top_k
from semid.common import DataError


@dataclass(frozen=True)
class BaselineSpec:
    """Where a baseline's class is and the keyword arguments that make this variant of it."""

    module: str  # e.g. "genrec.evaluation.baselines.popular"
    cls: str  # class name inside the module
    kwargs: dict = field(default_factory=dict)  # constructor keyword arguments of this variant


BASELINES: dict[str, BaselineSpec] = {
    "popular": BaselineSpec("genrec.evaluation.baselines.popular", "MostPopular"),
    "own_popular": BaselineSpec("genrec.evaluation.baselines.popular", "OwnMostBought"),
    "itemknn": BaselineSpec("genrec.evaluation.baselines.itemknn", "ItemKNN"),
    "tifuknn": BaselineSpec("genrec.evaluation.baselines.tifuknn", "TIFUKNN"),
    "semantic_knn": BaselineSpec("genrec.evaluation.baselines.semantic_knn", "SemanticKNN"),
    "sasrec_ce": BaselineSpec("genrec.evaluation.baselines.sasrec", "SASRec", {"loss": "ce"}),
    "sasrec_bce": BaselineSpec("genrec.evaluation.baselines.sasrec", "SASRec", {"loss": "bce"}),
    "two_tower": BaselineSpec("genrec.evaluation.baselines.two_tower", "TwoTower"),
}


def make_baseline(name: str, **overrides) -> Recommender:
    """A fresh, unfitted baseline by registry name; ``overrides`` update its constructor arguments."""
    if name not in BASELINES:
        raise DataError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}")
    spec = BASELINES[name]
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    model = cls(**{**spec.kwargs, **overrides})
    model.name = name
    return model


__all__ = ["BASELINES", "BaselineSpec", "FitContext", "Recommender", "make_baseline", "top_k"]
