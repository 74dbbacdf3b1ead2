"""The hand-written grocery vocabulary of the synthetic world (``grocery.yaml`` beside this file): a
department > aisle > leaf taxonomy whose leaves list product nouns, variants and pack sizes, the word pools
brands are made of, and the complement rules planted into baskets."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

VOCABULARY = Path(__file__).with_name("grocery.yaml")

@dataclass(frozen=True)
class Leaf:
    """A leaf category: where it sits, and the words its products are named with."""

    name: str
    aisle: int  # index into Taxonomy.aisles
    department: int  # index into Taxonomy.departments
    nouns: tuple[str, ...]
    modifiers: tuple[str, ...]
    sizes: tuple[str, ...]


@dataclass(frozen=True)
class Department:
    """A top-level department and the word pools its brand names are made of."""

    name: str
    organic_ok: bool  # whether its products come in organic variants
    brand_first: tuple[str, ...]
    brand_second: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    """The three-level category tree: departments, aisles (with their department) and leaves."""

    departments: tuple[Department, ...]
    aisles: tuple[tuple[str, int], ...]  # (name, department index)
    leaves: tuple[Leaf, ...]

    def path(self, leaf: int) -> list[str]:
        """Root-to-leaf category path of leaf ``leaf``: [department, aisle, leaf]."""
        lf = self.leaves[leaf]
        return [self.departments[lf.department].name, self.aisles[lf.aisle][0], lf.name]

    def leaf_index(self, name: str) -> int:
        """Index of the leaf called ``name`` (leaf names are unique)."""
        for i, lf in enumerate(self.leaves):
            if lf.name == name:
                return i
        raise KeyError(f"no leaf category named {name!r}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|") if w.strip())


def _parse_leaf(spec: str, aisle: int, department: int) -> Leaf:
    name, rest = (s.strip() for s in spec.split("=", 1))
    nouns, modifiers, sizes = (_split(part) for part in rest.split(";"))
    return Leaf(name, aisle, department, nouns, modifiers, sizes)


@lru_cache(maxsize=1)
def _vocabulary() -> dict:
    return yaml.safe_load(VOCABULARY.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def grocery_taxonomy() -> Taxonomy:
    """Parse the hand-written vocabulary into a Taxonomy (11 departments, 43 aisles, 129 leaves)."""
    departments, aisles, leaves = [], [], []
    for d, dept in enumerate(_vocabulary()["departments"]):
        departments.append(Department(dept["name"], dept["organic"], _split(dept["brand_first"]),
                                      _split(dept["brand_second"])))
        for aisle in dept["aisles"]:
            aisles.append((aisle["name"], d))
            leaves.extend(_parse_leaf(spec, len(aisles) - 1, d) for spec in aisle["leaves"])
    return Taxonomy(tuple(departments), tuple(aisles), tuple(leaves))


def complement_rules() -> tuple[tuple[str, str, float], ...]:
    """The planted complement rules as (trigger leaf, complement leaf, probability)."""
    return tuple((a, b, float(p)) for a, b, p in _vocabulary()["complements"])


def retailer_name(retailer: int) -> str:
    """Display name of retailer ``retailer`` (0-based)."""
    names = _vocabulary()["retailer_names"]
    return names[retailer] if retailer < len(names) else f"Market {retailer + 1}"
