"""Configuration of the synthetic grocery world: sizes, the taste model and the planted structure."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semid.config import Checks


@dataclass
class SynthConfig:
    """Everything `genrec data synth` varies; the defaults give a world the demo runs on in minutes."""

    seed: int = 0  # same seed -> identical tables
    items: int = 2000  # products in the catalog
    users: int = 2000  # shoppers
    retailers: int = 3  # retailers with their own assortments (0: one shared catalog, no retailer ids)
    orders_min: int = 6  # fewest orders (sessions) per shopper
    orders_max: int = 14  # most orders per shopper
    base_items_min: int = 3  # fewest staple + browsed items in an order, before complements
    base_items_max: int = 9  # most staple + browsed items in an order, before complements
    max_basket: int = 12  # an order is cut to this many items (complements included)
    staples_min: int = 4  # fewest staple products a shopper rebuys
    staples_max: int = 12  # most staple products a shopper rebuys
    staple_rate_min: float = 0.3  # lowest per-order chance that a shopper rebuys each staple
    staple_rate_max: float = 0.7  # highest per-order chance that a shopper rebuys each staple
    staples_first: float = 0.5  # how strongly staples are added to the cart before browsed items (0..1)
    complement_strength: float = 1.0  # multiplies every complement rule's probability (0 turns them off)
    late_fraction: float = 0.1  # share of products launched late (cold-start items)
    late_first: int = 4  # earliest order number a late product can launch at
    late_last: int = 10  # latest order number a late product can launch at
    launch_boost: float = 3.0  # popularity multiplier of late products once launched
    organic_share: float = 0.2  # share of food products that are organic variants
    organic_shoppers: float = 0.25  # share of shoppers who prefer organic products
    organic_pull: float = 4.0  # organic shoppers weigh organic products x this; others / this
    brands_per_department: int = 8  # national brands made per department
    brands_per_aisle: int = 4  # national brands selling in each aisle
    store_brand_share: float = 0.12  # share of products that are a retailer's own (exclusive) brand
    coverage_min: float = 0.55  # smallest share of national-brand products a retailer stocks
    coverage_max: float = 0.85  # largest share of national-brand products a retailer stocks
    department_spread: float = 0.4  # log-normal spread of a retailer's coverage across departments
    loyalty_max: float = 8.0  # most a brand-loyal shopper upweights a department's favourite brand
    department_concentration: float = 0.5  # Dirichlet concentration of shopper department tastes (low: picky)
    leaf_concentration: float = 0.5  # Dirichlet concentration of shopper tastes within a department
    popularity_sigma: float = 1.0  # log-normal spread of product popularity

    def __post_init__(self) -> None:
        c = Checks(self, "synth")
        c.rule(isinstance(self.seed, (int, np.integer)), "seed", f"must be a whole number, got {self.seed!r}")
        c.at_least(0, "seed", "retailers", "complement_strength", "department_spread", "popularity_sigma")
        c.at_least(1, "items", "users", "orders_min", "base_items_min", "max_basket", "staples_min",
                   "brands_per_department", "brands_per_aisle", "late_first")
        c.at_least(1, "launch_boost", "organic_pull", "loyalty_max")
        c.above(0, "department_concentration", "leaf_concentration")
        c.within(0, 1, "staple_rate_min", "staple_rate_max", "staples_first", "late_fraction", "organic_share",
                 "organic_shoppers", "store_brand_share", "coverage_min", "coverage_max")
        for low, high in (("orders_min", "orders_max"), ("base_items_min", "base_items_max"),
                          ("staples_min", "staples_max"), ("staple_rate_min", "staple_rate_max"),
                          ("late_first", "late_last"), ("coverage_min", "coverage_max")):
            c.rule(getattr(self, low) <= getattr(self, high), low,
                   f"must be <= {high} ({getattr(self, high)!r}), got {getattr(self, low)!r}")


def stream(cfg: SynthConfig, name: int) -> np.random.Generator:
    """An independent random stream per generation stage: changing one stage leaves the others alone."""
    return np.random.default_rng([int(cfg.seed), name])
