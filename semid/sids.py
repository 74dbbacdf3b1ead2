"""SID assignment: every product gets its L codes plus a disambiguation index that separates products
whose codes collide (0-based, in item_id order within the group), so every full SID is unique. SIDs print
as ``6_19_32_63``, with ``_k`` appended only where the group holds more than one product."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.common import DataError

SID_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("codes", pa.list_(pa.int32()), nullable=False),  # the L semantic codes
        pa.field("dedup", pa.int32(), nullable=False),  # index within the collision group, 0-based
        pa.field("sid", pa.string(), nullable=False),  # "6_19_32_63" (+ "_k" where the group is shared)
    ]
)


def assign_sids(item_ids: np.ndarray, codes: np.ndarray, codebook_version: str | None = None) -> pa.Table:
    """The SID table for products ``item_ids`` with codes (n, L), rows in item_id order."""
    item_ids, codes = _check(item_ids, codes, "assign_sids")
    order = np.lexsort((item_ids, *codes.T[::-1]))  # by codes, then item_id within a collision group
    sorted_codes = codes[order]
    new_group = np.r_[True, (sorted_codes[1:] != sorted_codes[:-1]).any(1)]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.r_[starts, len(order)])
    dedup = np.empty(len(order), np.int64)
    dedup[order] = np.arange(len(order)) - np.repeat(starts, sizes)
    group_size = np.empty(len(order), np.int64)
    group_size[order] = np.repeat(sizes, sizes)
    by_id = np.argsort(item_ids, kind="stable")
    return sid_table(item_ids[by_id], codes[by_id], dedup[by_id], group_size[by_id] > 1, codebook_version)


def extend_sids(existing: pa.Table, item_ids: np.ndarray, codes: np.ndarray) -> pa.Table:
    """SIDs for new products next to an existing table, never reusing a full SID already taken: a new
    product joining a collision group gets the next free index after the group's current largest."""
    item_ids, codes = _check(item_ids, codes, "extend_sids")
    old_ids = existing.column("item_id").to_numpy()
    if np.isin(item_ids, old_ids).any():
        dup = item_ids[np.isin(item_ids, old_ids)]
        raise DataError(f"extend_sids: {dup.size} products already have SIDs, e.g. {dup[:5].tolist()}")
    old_codes = codes_matrix(existing)
    if old_codes.shape[1] != codes.shape[1]:
        raise DataError(f"extend_sids: new codes have {codes.shape[1]} levels, the table has {old_codes.shape[1]}")
    old_dedup = existing.column("dedup").to_numpy()
    all_codes = np.concatenate([old_codes, codes])
    _, group = np.unique(all_codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    old_group, new_group = group[: len(old_codes)], group[len(old_codes):]
    next_free = np.zeros(group.max() + 1, np.int64)
    np.maximum.at(next_free, old_group, old_dedup + 1)
    order = np.lexsort((item_ids, new_group))  # new products in item_id order within each group
    g_sorted = new_group[order]
    first = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    rank = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    dedup = np.empty(len(order), np.int64)
    dedup[order] = next_free[g_sorted] + rank
    members = np.bincount(group)
    shared = members[new_group] > 1
    added = sid_table(item_ids, codes, dedup, shared, codebook_version_of(existing))
    # an existing product whose group a new one joined keeps its SID string unchanged (dedup 0, no suffix)
    return pa.concat_tables([existing.cast(SID_SCHEMA), added]).replace_schema_metadata(existing.schema.metadata)


def sid_table(item_ids: np.ndarray, codes: np.ndarray, dedup: np.ndarray, shared: np.ndarray,
              codebook_version: str | None = None) -> pa.Table:
    """Assemble the SID table; ``shared`` marks rows whose SID string carries the ``_k`` suffix."""
    n, levels = codes.shape
    flat = pa.array(codes.astype(np.int32).ravel())
    code_lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * levels + 1, levels, dtype=np.int32)), flat)
    text = pc.binary_join(pc.cast(code_lists, pa.list_(pa.string())), "_")
    with_k = pc.binary_join_element_wise(text, pc.cast(pa.array(dedup.astype(np.int32)), pa.string()), "_")
    sid = pc.if_else(pa.array(np.asarray(shared, bool)), with_k, text)
    table = pa.Table.from_arrays(
        [pa.array(item_ids.astype(np.int64)), code_lists, pa.array(dedup.astype(np.int32)), sid], schema=SID_SCHEMA
    )
    meta = {b"codebook_version": codebook_version.encode()} if codebook_version else None
    return table.replace_schema_metadata(meta)


def codes_matrix(table: pa.Table) -> np.ndarray:
    """The ``codes`` column as an (n, L) int64 array."""
    col = table.column("codes").combine_chunks()
    n = len(col)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    if n and flat.size % n:
        raise DataError("sids table: rows hold different numbers of codes")
    return flat.reshape(n, flat.size // n if n else 0)


def codebook_version_of(table: pa.Table) -> str | None:
    """The codebook version recorded in a SID table's schema metadata, if any."""
    meta = table.schema.metadata or {}
    value = meta.get(b"codebook_version")
    return value.decode() if value else None


def collision_summary(table: pa.Table) -> dict:
    """Collisions before disambiguation: distinct code tuples, share of products alone in theirs, the
    largest group; and whether every full SID (codes + dedup) is unique."""
    codes = codes_matrix(table)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    full_unique = pc.count_distinct(table.column("sid")).as_py() == table.num_rows
    return {
        "n_items": table.num_rows,
        "n_distinct_codes": int(counts.size),
        "unique_fraction": float((counts == 1).sum() / max(table.num_rows, 1)),
        "max_group": int(counts.max()) if counts.size else 0,
        "full_sid_unique": bool(full_unique),
    }


def parse_sid(sid: str, levels: int) -> tuple[list[int], int]:
    """``"6_19_32_63"`` or ``"6_19_32_63_2"`` -> ([6, 19, 32, 63], dedup)."""
    parts = sid.split("_")
    if len(parts) not in (levels, levels + 1) or not all(p.isdigit() for p in parts):
        raise DataError(f"not a {levels}-level SID: {sid!r}")
    values = [int(p) for p in parts]
    return values[:levels], values[levels] if len(values) > levels else 0


def _check(item_ids, codes, where: str) -> tuple[np.ndarray, np.ndarray]:
    item_ids = np.asarray(item_ids, np.int64)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != item_ids.shape[0]:
        raise DataError(f"{where}: codes must be (n_items, levels), got {codes.shape} for {item_ids.shape[0]} items")
    if codes.size and codes.min() < 0:
        raise DataError(f"{where}: negative codes")
    uniq, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{where}: duplicate item_id values, e.g. {uniq[counts > 1][:5].tolist()}")
    return item_ids, codes.astype(np.int64)

