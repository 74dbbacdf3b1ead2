"""Checks shared by the re-scoring experts' tests (co-purchase memory, item head): a run served with the
expert still gives valid, stocked products, best first, and some list differs from the decoder's alone."""
from __future__ import annotations

import numpy as np


def assert_rescored_lists_are_valid(with_expert, without, k: int = 8) -> None:
    """Retrieve the same histories from both retrievers, per retailer and across the catalog: every list of
    ``with_expert`` is full, stocked by the retailer and sorted by score, and some list differs."""
    catalog = with_expert.item_tokens.item_ids
    histories = [catalog[:3].tolist(), catalog[5:7].tolist(), catalog[-2:].tolist(), []]
    changed = False
    for retailer in [int(with_expert.index.retailers[0]), None]:
        a = with_expert.retrieve_arrays(histories, retailer_id=retailer, k=k)
        b = without.retrieve_arrays(histories, retailer_id=retailer, k=k)
        stocked = set(with_expert.index.stocked(retailer).tolist())
        assert (a.item_ids >= 0).all() and set(a.item_ids.reshape(-1).tolist()) <= stocked
        assert (np.sort(a.scores, axis=1)[:, ::-1] == a.scores).all()  # best first
        changed |= not np.array_equal(a.item_ids, b.item_ids)
    assert changed, "the expert changed no list"
