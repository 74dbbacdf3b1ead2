"""A tiny world and a run config that trains on it in seconds: the fixture of tests, benchmark smoke runs
and quick modes. Embeddings are cheap stand-ins with the taxonomy planted (leaf centroid + noise), stored in
an item column, so no text model is loaded."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from genrec.data.dataset import Dataset
from genrec.data.synth.config import SynthConfig
from genrec.data.synth.world import synthesize
from genrec.run.config import RunConfig

VECTOR_COLUMN = "vec"  # the items column holding the planted vectors


def planted_vectors(items: pa.Table, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Stand-in embeddings [n_items, dim]: each product's leaf-category centroid plus noise."""
    rng = np.random.default_rng(seed)
    leaves = [" > ".join(p) for p in items.column("category_path").to_pylist()]
    _, leaf = np.unique(leaves, return_inverse=True)
    centroids = rng.normal(size=(leaf.max() + 1, dim))
    return (centroids[leaf] + 0.3 * rng.normal(size=(len(leaves), dim))).astype(np.float32)


def tiny_world(seed: int = 3, items: int = 300, users: int = 150, retailers: int = 2) -> Dataset:
    """A small synthetic world whose items carry planted vectors in ``VECTOR_COLUMN``."""
    ds = synthesize(SynthConfig(seed=seed, items=items, users=users, retailers=retailers))
    vectors = planted_vectors(ds.items)
    ds.items = ds.items.append_column(VECTOR_COLUMN, pa.array(list(vectors), pa.list_(pa.float32())))
    return ds


def tiny_config(name: str = "tiny") -> RunConfig:
    """A run config sized to train in seconds on ``tiny_world``: 3 x 8 codebooks, a 1-layer decoder, one
    epoch, embeddings read from ``VECTOR_COLUMN``."""
    cfg = RunConfig(name=name)
    cfg.embedding.provider, cfg.embedding.column = "column", VECTOR_COLUMN
    cfg.semid.codebook_sizes, cfg.semid.epochs, cfg.semid.warmup_epochs = [8, 8, 8], 3, 1
    cfg.semid.hidden_dims, cfg.semid.latent_dim, cfg.semid.progress = [32], 8, False
    cfg.decoder.d_model, cfg.decoder.n_layers, cfg.decoder.n_heads, cfg.decoder.d_ff = 32, 1, 2, 64
    cfg.train.epochs, cfg.train.eval_examples, cfg.train.progress, cfg.train.warmup_steps = 1, 40, False, 5
    return cfg
