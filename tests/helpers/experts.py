"""Checks shared by the re-scoring experts' tests (co-purchase memory, item head): a generated world with one
planted pattern (``plant_pair``: shoppers who buy product A, then B, again and again), and the check that a run
served with the expert lifts B after A above where the decoder alone puts it, while every list stays full,
stocked and best first. An expert whose score enters with the wrong sign pushes B down and fails the check."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import Dataset

PLANTED_SHOPPERS = 12  # shoppers added by plant_pair
PLANTED_ORDERS = 3  # times each of them buys A, then B, before the two held-out orders


def plant_pair(world: Dataset, shoppers: int = PLANTED_SHOPPERS) -> tuple[Dataset, int, int]:
    """``world`` with ``shoppers`` new shoppers of its first retailer who each buy A, then B, ``PLANTED_ORDERS``
    times (one product an order), then two other products (the validation and test orders). A and B are the
    retailer's two least bought products that were bought at all (B the rarer), so nothing else in the world
    ties them. Returns (the new world, A, B)."""
    e = world.events
    retailer = int(pc.min(e.column("retailer_id")).as_py())
    stock = world.assortment.filter(pc.equal(world.assortment.column("retailer_id"), retailer))
    stocked = np.unique(stock.column("item_id").to_numpy())
    bought, counts = np.unique(e.column("item_id").to_numpy(), return_counts=True)
    in_stock = np.isin(bought, stocked)
    order = np.lexsort((bought[in_stock], counts[in_stock]))  # least bought first, ties by id
    b, a = (int(x) for x in bought[in_stock][order[:2]])
    others = [int(x) for x in bought[in_stock][order[::-1][:2]]]  # the held-out orders: the two most bought
    user0, session0 = int(pc.max(e.column("user_id")).as_py()) + 1, int(pc.max(e.column("session_id")).as_py()) + 1
    rows = []
    for s in range(shoppers):
        for n, item in enumerate([a, b] * PLANTED_ORDERS + others):
            rows.append((user0 + s, session0 + s * 100 + n, n + 1, item, 1, retailer))
    planted = pa.table({name: [r[i] for r in rows] for i, name in enumerate(
        ("user_id", "session_id", "ts", "item_id", "position", "retailer_id"))}).cast(e.schema)
    out = Dataset(world.items, pa.concat_tables([e, planted]), world.assortment, dict(world.meta))
    out.validate()
    return out, a, b


def rank_of(lists: np.ndarray, item: int) -> np.ndarray:
    """Per list [B, K], the 0-based position of ``item`` (K where the list lacks it)."""
    hit = lists == item
    return np.where(hit.any(axis=1), hit.argmax(axis=1), lists.shape[1])


def assert_expert_lifts_the_planted_item(with_expert, without, a: int, b: int, k: int = 10) -> None:
    """After a history ending in A (A alone, and A after two other products), ``with_expert`` lists B in its
    top ``k``, above where ``without`` (the decoder alone) lists it; and every list of ``with_expert``, per
    retailer and across the catalog, is full, stocked by the retailer and sorted by score. Both retrievers decode
    the whole catalog (their beam width covers it), so the expert can lift any product."""
    catalog = with_expert.item_tokens.item_ids
    assert with_expert.beam_width >= catalog.size and without.beam_width >= catalog.size
    others = [int(x) for x in catalog if x not in (a, b)][:2]
    histories = [[a], others + [a]]
    retailer = int(with_expert.index.retailers[0])
    lifted = rank_of(with_expert.retrieve_arrays(histories, retailer_id=retailer, k=k).item_ids, b)
    alone = rank_of(without.retrieve_arrays(histories, retailer_id=retailer, k=k).item_ids, b)
    assert (lifted < k).all() and (lifted < alone).all(), (
        f"planted product {b} after {a}: at {lifted.tolist()} with the expert, {alone.tolist()} without "
        f"({k}: not in the top {k})")
    spread = histories + [catalog[5:7].tolist(), []]
    for r in [retailer, None]:
        got = with_expert.retrieve_arrays(spread, retailer_id=r, k=k)
        stocked = set(with_expert.index.stocked(r).tolist())
        assert (got.item_ids >= 0).all() and set(got.item_ids.reshape(-1).tolist()) <= stocked
        assert (np.sort(got.scores, axis=1)[:, ::-1] == got.scores).all()  # best first
