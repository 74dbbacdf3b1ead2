"""A planted next-item pattern for the sequential baselines (SASRec, two-tower): each shopper walks a small
catalog in a fixed cycle, so a model that learnt anything predicts the next item of the cycle."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from genrec.data.sequences import Examples

N_ITEMS = 24
CATALOG = 1000 + 7 * np.arange(N_ITEMS, dtype=np.int64)  # non-contiguous ids: the column mapping matters


def cycle_events(n_users: int, seed: int, n_items: int = N_ITEMS) -> pa.Table:
    """Each shopper walks the catalog in a fixed cycle (item c is followed by item c+1) from a random start."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 11, n_users)
    user = np.repeat(np.arange(n_users), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    column = (np.repeat(rng.integers(0, n_items, n_users), lengths) + step) % n_items
    return pa.table({"user_id": user, "session_id": np.arange(user.size), "ts": step,
                     "item_id": CATALOG[column], "position": np.zeros(user.size, np.int32)})


def expected_next(examples: Examples) -> np.ndarray:
    """The planted next item of each query: the one after its last history item in the cycle."""
    last = examples.history_items[examples.history_offsets[1:] - 1]
    return CATALOG[(np.searchsorted(CATALOG, last) + 1) % N_ITEMS]
