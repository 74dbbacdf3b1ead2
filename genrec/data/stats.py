"""Describe a dataset folder: counts, taxonomy size, the usual long-tail distributions and the top
categories, as a JSON-ready dict (``dataset_stats``) and as a text table (``format_stats``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import read_dataset

TOP_K = 10  # categories listed in each "top" table
_SEP = "\x1f"  # joins path elements for counting distinct prefixes (never inside a category name)


def dataset_stats(path: Path) -> dict:
    """Counts, distributions and top categories of the dataset folder ``path`` (validated first)."""
    ds = read_dataset(path)
    ds.validate()
    items, events = ds.items.sort_by("item_id"), ds.events
    item_ids = items.column("item_id").to_numpy()
    ev_item = np.searchsorted(item_ids, events.column("item_id").to_numpy())
    per_item = np.bincount(ev_item, minlength=item_ids.size)
    user = events.column("user_id").to_numpy()
    session_sizes = _group_sizes(user, events.column("session_id").to_numpy())
    paths = items.column("category_path").combine_chunks()
    leaf = pc.fill_null(pc.binary_join(paths, " > "), "").to_numpy(zero_copy_only=False)
    root = pc.fill_null(pc.binary_join(pc.list_slice(paths, 0, 1), ""), "").to_numpy(zero_copy_only=False)
    leaf_names, leaf_items = np.unique(leaf[leaf != ""], return_counts=True)
    distributions = {
        "items_per_leaf_category": summarize(leaf_items),
        "session_length": summarize(session_sizes),
        "events_per_user": summarize(np.unique(user, return_counts=True)[1]),
        "interactions_per_item": summarize(per_item),
    }
    if ds.assortment is not None:
        distributions["items_per_retailer"] = summarize(
            np.unique(ds.assortment.column("retailer_id").to_numpy(), return_counts=True)[1])
    return {
        "path": str(path),
        "source": ds.meta.get("source"),
        "retailers_simulated": bool(ds.meta.get("retailers_simulated", False)),
        "counts": {
            "items": items.num_rows,
            "users": int(np.unique(user).size),
            "sessions": int(session_sizes.size),
            "events": events.num_rows,
            "retailers": _retailer_count(events, ds.assortment),
            "brands": int(pc.count_distinct(items.column("brand")).as_py()),
            "uncategorized_items": int((leaf == "").sum()),
            "categories_per_level": categories_per_level(paths),
        },
        "distributions": distributions,
        "never_interacted_share": float((per_item == 0).mean()) if item_ids.size else 0.0,
        "top_leaf_categories": _top(leaf, per_item),
        "top_root_categories": _top(root, per_item),
    }


def categories_per_level(paths: pa.ListArray) -> list[int]:
    """Distinct categories at each depth of the taxonomy (a category is its path from the root)."""
    lengths = pc.fill_null(pc.list_value_length(paths), 0).to_numpy()
    out = []
    for depth in range(1, int(lengths.max(initial=0)) + 1):
        prefixes = pc.list_slice(paths.filter(pa.array(lengths >= depth)), 0, depth)
        out.append(int(pc.count_distinct(pc.binary_join(prefixes, _SEP)).as_py()))
    return out


def summarize(values: np.ndarray) -> dict:
    """min / median / mean / p90 / max of a count distribution (all None when there is nothing)."""
    if values.size == 0:
        return {k: None for k in ("min", "median", "mean", "p90", "max")}
    return {
        "min": int(values.min()),
        "median": round(float(np.median(values)), 3),
        "mean": round(float(values.mean()), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "max": int(values.max()),
    }


def _group_sizes(*keys: np.ndarray) -> np.ndarray:
    """Rows per distinct combination of ``keys`` (e.g. user and session), vectorised."""
    if keys[0].size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(keys[::-1])
    change = np.zeros(keys[0].size, dtype=bool)
    change[0] = True
    for k in keys:
        s = k[order]
        change[1:] |= s[1:] != s[:-1]
    return np.diff(np.append(np.flatnonzero(change), keys[0].size))


def _top(category: np.ndarray, per_item: np.ndarray) -> list[dict]:
    """The TOP_K categories (one name per item, "" = none) by events, with their item counts."""
    names, codes = np.unique(category, return_inverse=True)
    items = np.bincount(codes, minlength=names.size)
    events = np.bincount(codes, weights=per_item, minlength=names.size).astype(np.int64)
    order = [i for i in np.lexsort((names, -events)) if names[i] != ""][:TOP_K]
    return [{"category": str(names[i]), "items": int(items[i]), "events": int(events[i])} for i in order]


def _retailer_count(events: pa.Table, assortment: pa.Table | None) -> int:
    """Distinct retailers named by events or the assortment."""
    ids = [events.column("retailer_id").drop_null().to_numpy()]
    if assortment is not None:
        ids.append(assortment.column("retailer_id").to_numpy())
    return int(np.unique(np.concatenate(ids)).size)


def format_stats(stats: dict) -> str:
    """``dataset_stats`` as a human-readable table."""
    c = stats["counts"]
    lines = [
        f"dataset     {stats['path']}  (source: {stats.get('source') or 'unknown'}"
        + (", simulated retailers)" if stats.get("retailers_simulated") else ")"),
        "counts      " + "  ".join(f"{k} {c[k]:,}" for k in ("items", "users", "sessions", "events", "retailers")),
        f"taxonomy    categories per level {' / '.join(f'{n:,}' for n in c['categories_per_level']) or 'none'}"
        f"  brands {c['brands']:,}  uncategorized items {c['uncategorized_items']:,}",
        f"coverage    {stats['never_interacted_share']:.1%} of items never interacted with",
        "",
        f"{'distribution':<26}{'min':>9}{'median':>9}{'mean':>11}{'p90':>9}{'max':>9}",
    ]
    for name, d in stats["distributions"].items():
        if d["min"] is None:
            lines.append(f"{name.replace('_', ' '):<26}{'-':>9}")
            continue
        lines.append(f"{name.replace('_', ' '):<26}{d['min']:>9,}{d['median']:>9,.1f}{d['mean']:>11,.2f}"
                     f"{d['p90']:>9,.1f}{d['max']:>9,}")
    for title, key in (("top leaf categories", "top_leaf_categories"), ("top root categories", "top_root_categories")):
        if not stats[key]:
            continue
        width = max(len(title) + 12, *(len(r["category"]) + 2 for r in stats[key]))
        lines += ["", f"{title + ' (by events)':<{width}}{'items':>9}{'events':>10}"]
        lines += [f"{r['category']:<{width}}{r['items']:>9,}{r['events']:>10,}" for r in stats[key]]
    return "\n".join(lines)
