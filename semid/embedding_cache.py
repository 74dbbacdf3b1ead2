"""On-disk cache of text embeddings, so re-embedding an unchanged catalog costs nothing and a catalog with a
few changed texts only embeds those.

Layout: one folder per namespace (model identity + normalize flag) under the cache root, holding shards.
A shard is a pair of ``.npy`` files written by one flush: ``<id>.vec.npy`` (float32 [n, dim]) and
``<id>.key.npy`` (sorted 16-byte text keys, dtype S16). Each file is written to a temporary name and renamed;
the key file is renamed last and marks the shard complete, so an interrupted run leaves at worst an orphan
vector file that is ignored. Lookups memory-map the shards and read only the rows they need. When shards
pile up they are merged into one (again temp + rename)."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

import numpy as np

from semid.common import DataError, atomic_write

log = logging.getLogger(__name__)

KEY_BYTES = 16  # blake2b digest size of a text key: collisions are negligible at any catalog size
MAX_SHARDS = 32  # merge a namespace's shards into one once it holds more than this many


def text_keys(namespace: str, texts: list[str]) -> np.ndarray:
    """Hash each text together with the namespace (model identity, normalize flag) into a 16-byte key."""
    prefix = hashlib.blake2b(namespace.encode(), digest_size=KEY_BYTES).digest()
    out = bytearray()
    for text in texts:
        out += hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES, key=prefix).digest()
    return np.frombuffer(bytes(out), dtype=f"S{KEY_BYTES}")


class EmbeddingCache:
    """Sharded key -> vector store for one namespace; ``lookup`` finds cached rows, ``add`` appends a shard."""

    def __init__(self, root: str | Path, namespace: str, label: str = "") -> None:
        digest = hashlib.blake2b(namespace.encode(), digest_size=8).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[-48:].strip("_.") or "model"
        self.namespace = namespace
        self.dir = Path(root).expanduser() / f"{slug}-{digest}"

    def shards(self) -> list[str]:
        """Ids of the complete shards (key file present), oldest first."""
        if not self.dir.is_dir():
            return []
        keys = sorted(self.dir.glob("*.key.npy"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.name[: -len(".key.npy")] for p in keys if (self.dir / (p.name[: -len(".key.npy")] + ".vec.npy")).exists()]

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """For each key, whether it is cached, and the cached vectors ([n, dim], rows of misses are zero)."""
        found = np.zeros(len(keys), dtype=bool)
        vectors: np.ndarray | None = None
        for shard in self.shards():
            if found.all():
                break
            loaded = self._open(shard)
            if loaded is None:
                continue
            skeys, svecs = loaded
            if vectors is None:
                vectors = np.zeros((len(keys), svecs.shape[1]), dtype=np.float32)
            elif svecs.shape[1] != vectors.shape[1]:
                raise DataError(
                    f"{self.dir}: cached vectors have inconsistent sizes ({svecs.shape[1]} vs {vectors.shape[1]}); "
                    "delete this folder to rebuild the cache"
                )
            todo = np.flatnonzero(~found)
            pos = np.searchsorted(skeys, keys[todo])
            pos_ok = np.minimum(pos, len(skeys) - 1)
            hit = (pos < len(skeys)) & (skeys[pos_ok] == keys[todo])
            rows = todo[hit]
            if rows.size:
                src = pos_ok[hit]
                order = np.argsort(src, kind="stable")  # read the memory map front to back
                vectors[rows[order]] = svecs[src[order]]
                found[rows] = True
        return found, vectors

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append a shard holding ``keys`` -> ``vectors``; merge shards when there are too many."""
        if len(keys) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        order = np.argsort(keys, kind="stable")
        self._write(f"{os.getpid()}-{uuid.uuid4().hex[:12]}", keys[order], vectors[order])
        if len(self.shards()) > MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge every shard of the namespace into one (duplicate keys keep their first vector)."""
        shards = self.shards()
        parts = [p for p in (self._open(s) for s in shards) if p is not None]
        if len(parts) < 2:
            return
        keys = np.concatenate([k for k, _ in parts])
        vecs = np.concatenate([np.asarray(v) for _, v in parts])
        keys, first = np.unique(keys, return_index=True)
        self._write(f"merged-{uuid.uuid4().hex[:12]}", keys, vecs[first])
        for shard in shards:  # key file first: a half-deleted shard is never read
            for suffix in (".key.npy", ".vec.npy"):
                (self.dir / (shard + suffix)).unlink(missing_ok=True)
        log.debug("merged %d cache shards in %s (%d vectors)", len(shards), self.dir, len(keys))

    def _write(self, shard: str, keys: np.ndarray, vectors: np.ndarray) -> None:
        for suffix, array in ((".vec.npy", np.ascontiguousarray(vectors, dtype=np.float32)), (".key.npy", keys)):
            atomic_write(self.dir / (shard + suffix), lambda tmp: _save_npy(tmp, array))

    def _open(self, shard: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Memory-map one shard; a shard removed meanwhile (a concurrent merge) or unreadable is skipped."""
        try:
            keys = np.load(self.dir / f"{shard}.key.npy", mmap_mode="r")
            vecs = np.load(self.dir / f"{shard}.vec.npy", mmap_mode="r")
        except FileNotFoundError:
            return None
        except ValueError as e:
            log.warning("skipping unreadable embedding cache shard %s/%s: %s", self.dir, shard, e)
            return None
        if keys.dtype != np.dtype(f"S{KEY_BYTES}") or vecs.ndim != 2 or len(vecs) != len(keys):
            log.warning("skipping malformed embedding cache shard %s/%s", self.dir, shard)
            return None
        return keys, vecs


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, np.save would append ``.npy``)."""
    with open(path, "wb") as f:
        np.save(f, array)
