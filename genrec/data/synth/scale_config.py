"""Configuration of a generated catalog at scale (``genrec data synth --scale``): sizes, taxonomy shape,
retailer stock, shopper sessions and product vectors. Light on purpose: the command line reads its flags
from here before anything heavy loads."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semid.config import Checks

INT32_MAX = 2**31 - 1  # products, retailers and leaves are held as int32


@dataclass
class ScaleConfig:
    """Everything the scale generator varies; the defaults give the 50k catalog of ``docs/scaling.md``."""

    seed: int = 0  # same seed -> identical files, whatever the chunk size
    products: int = 50_000  # products in the catalog
    retailers: int = 100  # retailers, each stocking its own share of the catalog
    events: int = 2_000_000  # add-to-cart events written, whatever the catalog size
    departments: int = 20  # top-level categories
    aisles_per_department: int = 10  # second-level categories under each department
    leaves_per_aisle: int = 12  # leaf categories under each aisle (20 x 10 x 12 = 2,400 leaves)
    leaf_size_sigma: float = 1.0  # log-normal spread of how many products a leaf holds
    popularity_sigma: float = 1.0  # log-normal spread of product popularity
    organic_share: float = 0.15  # share of products (in departments that have them) that are organic variants
    late_fraction: float = 0.05  # share of products launched late (first_seen > 0)
    late_first: int = 2  # earliest order number a late product launches at
    late_last: int = 8  # latest order number a late product launches at
    coverage_min: float = 0.2  # smallest share of the catalog a retailer stocks
    coverage_max: float = 0.6  # largest share of the catalog a retailer stocks
    stock_popularity: float = 0.5  # how strongly retailers favour popular products (0: not at all)
    stock_department_spread: float = 0.5  # spread of each retailer's leaning toward some departments
    sessions_min: int = 4  # fewest orders (sessions) per shopper
    sessions_max: int = 16  # most orders per shopper
    basket_min: int = 3  # fewest items drawn for an order, before partner products
    basket_max: int = 12  # most items drawn for an order, before partner products
    taste_aisles: int = 2  # aisles a shopper's taste is drawn from
    taste_leaves: int = 6  # leaf categories in a shopper's taste
    explore: float = 0.1  # share of browsed items from any leaf, outside the shopper's taste
    staples: int = 6  # products a shopper rebuys
    staple_rate_min: float = 0.2  # lowest share of a shopper's items that are rebought staples
    staple_rate_max: float = 0.5  # highest share of a shopper's items that are rebought staples
    pair_rate: float = 0.3  # chance that a bought product brings its partner product into the basket
    dim: int = 64  # width of the product vectors (embeddings.parquet)
    department_spread: float = 1.0  # per-dimension spread of department centres around the origin
    aisle_spread: float = 0.5  # per-dimension spread of aisle centres around their department's
    leaf_spread: float = 0.3  # per-dimension spread of leaf centres around their aisle's
    noise: float = 0.15  # per-dimension spread of a product's vector around its leaf centre
    block: int = 16_384  # products per random stream: the output depends on it, never on the chunk size

    @property
    def leaves(self) -> int:
        return self.departments * self.aisles_per_department * self.leaves_per_aisle

    def __post_init__(self) -> None:
        c = Checks(self, "scale")
        c.rule(isinstance(self.seed, (int, np.integer)), "seed", f"must be a whole number, got {self.seed!r}")
        c.at_least(0, "seed", "leaf_size_sigma", "popularity_sigma", "stock_popularity", "stock_department_spread",
                   "staples", "department_spread", "aisle_spread", "leaf_spread", "noise")
        c.at_least(1, "products", "retailers", "events", "departments", "aisles_per_department",
                   "leaves_per_aisle", "late_first", "sessions_min", "basket_min", "taste_aisles", "taste_leaves",
                   "block")
        c.at_least(2, "dim")
        c.within(0, 1, "organic_share", "late_fraction", "coverage_min", "coverage_max", "explore",
                 "staple_rate_min", "staple_rate_max", "pair_rate")
        for key in ("products", "retailers"):
            c.rule(getattr(self, key) <= INT32_MAX, key, f"must be at most {INT32_MAX:,}, got {getattr(self, key)!r}")
        c.rule(self.leaves <= INT32_MAX, "leaves_per_aisle",
               f"departments x aisles x leaves must be at most {INT32_MAX:,}, got {self.leaves:,}")
        for low, high in (("coverage_min", "coverage_max"), ("late_first", "late_last"),
                          ("sessions_min", "sessions_max"), ("basket_min", "basket_max"),
                          ("staple_rate_min", "staple_rate_max")):
            c.rule(getattr(self, low) <= getattr(self, high), low,
                   f"must be <= {high} ({getattr(self, high)!r}), got {getattr(self, low)!r}")


# random streams: one per generation stage, and one per block within a stage
TAXONOMY, ORDER, CORE, TEXT, CENTRES, VECTORS, RETAILERS, STOCK, PAIRS, SHOPPERS = range(1, 11)


def stream(cfg: ScaleConfig, *key: int) -> np.random.Generator:
    """The random stream of one stage (and block): seeded by (seed, stage, ...), so what a block draws does not
    depend on how many blocks a chunk holds, nor on any other stage."""
    return np.random.default_rng([int(cfg.seed), *map(int, key)])


def blocks(cfg: ScaleConfig, start: int, stop: int):
    """(block index, first product, end) of the blocks covering products ``start:stop`` (block-aligned start)."""
    for b in range(start // cfg.block, -(-stop // cfg.block)):
        yield b, b * cfg.block, min((b + 1) * cfg.block, cfg.products)
