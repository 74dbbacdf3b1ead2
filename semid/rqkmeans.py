"""RQ-KMeans: residual k-means with faiss, no network. Level 1 clusters the inputs, each later level
clusters what the previous levels left over. The reference a trained RQ-VAE has to beat."""
from __future__ import annotations

import numpy as np


def _faiss():
    try:
        import faiss
    except ImportError as e:  # faiss is an optional extra (cpu or gpu build)
        raise ImportError("RQ-KMeans needs faiss: pip install 'genrec[cpu]' (faiss-cpu)") from e
    return faiss


class RQKMeans:
    """Residual k-means codebooks; ``codebooks[l]`` is a (K_l, D) float32 array."""

    def __init__(self, codebook_sizes: list[int], iters: int = 25, seed: int = 0):
        self.codebook_sizes = list(codebook_sizes)
        self.iters = iters
        self.seed = seed
        self.codebooks: list[np.ndarray] = []

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def fit(self, x: np.ndarray, init: list[np.ndarray] | None = None) -> RQKMeans:
        """Fit level by level on residuals; ``init`` (previous codebooks) seeds the centroids if given."""
        faiss = _faiss()
        residual = np.ascontiguousarray(x, dtype=np.float32)
        self.codebooks = []
        for level, k in enumerate(self.codebook_sizes):
            if residual.shape[0] < k:
                raise ValueError(f"level {level + 1}: {residual.shape[0]} points cannot fill {k} codewords")
            km = faiss.Kmeans(residual.shape[1], k, niter=self.iters, seed=self.seed + level,
                              max_points_per_centroid=1 << 20, verbose=False)
            km.train(residual, init_centroids=None if init is None else np.ascontiguousarray(init[level]))
            centroids = km.centroids.astype(np.float32)
            self.codebooks.append(centroids)
            residual = residual - centroids[self._nearest(residual, centroids)]
        return self

    @staticmethod
    def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
        faiss = _faiss()
        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(np.ascontiguousarray(centroids))
        return index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes (N, L) int64: nearest centroid of the running residual at every level."""
        if not self.codebooks:
            raise RuntimeError("RQKMeans.encode called before fit")
        residual = np.asarray(x, dtype=np.float32)
        codes = []
        for centroids in self.codebooks:
            idx = self._nearest(residual, centroids)
            codes.append(idx)
            residual = residual - centroids[idx]
        return np.stack(codes, 1).astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Sum of the centroids named by ``codes``."""
        return sum(c[codes[:, level]] for level, c in enumerate(self.codebooks))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"codebooks.{level}": c for level, c in enumerate(self.codebooks)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.codebooks = [np.asarray(state[f"codebooks.{level}"], dtype=np.float32) for level in range(self.levels)]
