"""SID churn between two codebook versions: how many products kept their Semantic ID when the codebook
was retrained (per level, as code prefixes, and as full SIDs), the old SID -> new SID migration table
that downstream stores (decoders, indexes, caches keyed by SID) need to follow a retrain, and SID
assignment after a retrain that carries unchanged products' SIDs over."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.common import DataError
from semid.sids import SID_SCHEMA, assign_sids, codebook_version_of, codes_matrix, extend_sids

MIGRATION_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("old_sid", pa.string()),  # null for products only in the new table
        pa.field("new_sid", pa.string()),  # null for products only in the old table
        pa.field("changed", pa.bool_(), nullable=False),  # SID string differs (or the product came or went)
        pa.field("status", pa.string(), nullable=False),  # kept / moved / added / removed
    ]
)
REQUIRED = ("item_id", "codes", "dedup", "sid")


def sid_churn(old: pa.Table, new: pa.Table) -> dict:
    """Churn over the products in both SID tables: counts of common / only-old / only-new products, the
    share of common products whose code prefix up to level l changed (l = 1..L), whose full SID (codes +
    disambiguation token, what the decoder sees) changed, and whose SID string is unchanged."""
    old_ids, new_ids = _ids(old, "old"), _ids(new, "new")
    old_codes, new_codes = codes_matrix(old), codes_matrix(new)
    if old_codes.shape[1] != new_codes.shape[1]:
        raise DataError(f"sid churn: old SIDs have {old_codes.shape[1]} levels, new SIDs have {new_codes.shape[1]}")
    common, io, inew = np.intersect1d(old_ids, new_ids, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise DataError(f"sid churn: no product is in both tables ({old_ids.size} old, {new_ids.size} new)")
    code_diff = old_codes[io] != new_codes[inew]
    prefix_changed = np.logical_or.accumulate(code_diff, axis=1)
    dedup_diff = old.column("dedup").to_numpy()[io] != new.column("dedup").to_numpy()[inew]
    same_sid = pc.equal(old.column("sid").take(pa.array(io)), new.column("sid").take(pa.array(inew)))
    return {
        "old_version": codebook_version_of(old),
        "new_version": codebook_version_of(new),
        "levels": int(old_codes.shape[1]),
        "common": int(common.size),
        "only_old": int(old_ids.size - common.size),
        "only_new": int(new_ids.size - common.size),
        "prefix_changed": [float(v) for v in prefix_changed.mean(0)],
        "full_sid_changed": float((code_diff.any(1) | dedup_diff).mean()),
        "sid_unchanged": float(pc.sum(same_sid).as_py() / common.size),
    }


def migration_table(old: pa.Table, new: pa.Table) -> pa.Table:
    """One row per product in either table, in item_id order: its old and new SID strings, whether the
    string changed, and its status (kept, moved, added, removed)."""
    old_ids, new_ids = _ids(old, "old"), _ids(new, "new")
    ids = np.union1d(old_ids, new_ids)
    old_sid, in_old = _lookup(old, old_ids, ids)
    new_sid, in_new = _lookup(new, new_ids, ids)
    same = pc.fill_null(pc.equal(old_sid, new_sid), False).to_numpy(zero_copy_only=False)
    status = np.select([in_old & in_new & same, in_old & in_new, in_new], ["kept", "moved", "added"], "removed")
    return pa.Table.from_arrays(
        [pa.array(ids, pa.int64()), old_sid, new_sid, pa.array(~same), pa.array(status.astype(object), pa.string())],
        schema=MIGRATION_SCHEMA,
    )


def carry_over_sids(previous: pa.Table, item_ids: np.ndarray, codes: np.ndarray,
                    codebook_version: str | None = None) -> pa.Table:
    """SIDs after a retrain that keep the previous table's where they can: a product whose codes did not
    change keeps its disambiguation index and SID string; the rest (new or moved products) take the next
    free index of their collision group, never a full SID already taken. Rows in item_id order."""
    ids = np.asarray(item_ids, np.int64)
    codes = np.asarray(codes, np.int64)
    prev_ids = _ids(previous, "previous")
    prev_codes = codes_matrix(previous)
    if codes.ndim != 2 or len(codes) != len(ids):
        raise DataError(f"carry over SIDs: codes must be (n_items, levels), got {codes.shape} for {len(ids)} items")
    if np.unique(ids).size != ids.size:
        raise DataError("carry over SIDs: item_ids repeat")
    if len(prev_ids) == 0:
        return assign_sids(ids, codes, codebook_version)
    if prev_codes.shape[1] != codes.shape[1]:
        raise DataError(f"carry over SIDs: previous SIDs have {prev_codes.shape[1]} levels, new codes {codes.shape[1]}")
    _, ip, inew = np.intersect1d(prev_ids, ids, assume_unique=True, return_indices=True)
    same = (prev_codes[ip] == codes[inew]).all(1)
    kept_rows, kept_new = ip[same], inew[same]
    if kept_rows.size == 0:
        return assign_sids(ids, codes, codebook_version)
    rest = np.ones(len(ids), bool)
    rest[kept_new] = False
    kept = previous.take(pa.array(np.sort(kept_rows))).select(SID_SCHEMA.names).cast(SID_SCHEMA)
    table = extend_sids(kept, ids[rest], codes[rest]) if rest.any() else kept
    table = table.take(pc.sort_indices(table, [("item_id", "ascending")]))
    meta = {b"codebook_version": codebook_version.encode()} if codebook_version else None
    return table.replace_schema_metadata(meta)


def format_churn(report: dict) -> str:
    """The churn report as a short readable table."""
    lines = [
        f"SID churn: codebook {report.get('old_version') or '?'} -> {report.get('new_version') or '?'}",
        f"products: {report['common']:,} in both, {report['only_old']:,} only old, {report['only_new']:,} only new",
        f"{'level':<8}{'prefix changed':>16}",
    ]
    for level, share in enumerate(report["prefix_changed"], start=1):
        lines.append(f"{level:<8}{share:>16.2%}")
    lines.append(f"{'full SID (codes + dedup) changed':<34}{report['full_sid_changed']:>8.2%}")
    lines.append(f"{'SID string unchanged':<34}{report['sid_unchanged']:>8.2%}")
    return "\n".join(lines)


def _ids(table: pa.Table, name: str) -> np.ndarray:
    """The table's item ids, after checking it is a SID table without duplicate products."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(f"sid churn: {name} SID table lacks columns {missing} (has: {table.column_names})")
    ids = table.column("item_id").to_numpy().astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"sid churn: {name} SID table repeats item_id values, e.g. {uniq[counts > 1][:5].tolist()}")
    return ids


def _lookup(table: pa.Table, table_ids: np.ndarray, ids: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The table's SID string for each of ``ids`` (null where absent) and the presence mask."""
    if table_ids.size == 0:
        return pa.nulls(len(ids), pa.string()), np.zeros(len(ids), bool)
    order = np.argsort(table_ids)
    pos = np.minimum(np.searchsorted(table_ids[order], ids), len(order) - 1)
    found = table_ids[order][pos] == ids
    sids = table.column("sid").combine_chunks().cast(pa.string()).take(pa.array(order[pos]))
    return pc.if_else(pa.array(found), sids, pa.nulls(len(ids), pa.string())), found
