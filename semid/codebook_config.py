"""``SemIDConfig``, the run config section ``semid``: everything that decides a codebook (the RQ-VAE or
RQ-KMeans, the taxonomy contrastive term, the hierarchical sampler and the training settings). A module of its
own, free of torch, so a config is read and checked before the model stack loads (``semid.train`` trains it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semid.config import Checks


@dataclass
class SemIDConfig:
    """Everything that decides a codebook; saved with the run. YAML keys are these field names."""

    method: Literal["rqvae", "rqkmeans"] = "rqvae"  # trained RQ-VAE, or residual k-means (the reference)
    # codewords per level (1,824 + disambiguation): a coarse first level keeps near neighbours together
    # (docs/semantic-ids.md, "Measured reasons behind defaults")
    codebook_sizes: list[int] = field(default_factory=lambda: [32, 256, 512, 1024])
    hidden_dims: list[int] = field(default_factory=lambda: [256])  # encoder MLP widths (decoder mirrors)
    latent_dim: int = 128  # quantised latent width: 32 loses neighbourhoods that cosine sees
    beta: float = 0.25  # commitment weight
    dropout: float = 0.0  # dropout in the MLPs
    skip: bool = True  # linear PCA-initialised path beside encoder and decoder MLPs (starts as PCA + RQ-KMeans)
    normalize: bool = True  # L2-normalise embeddings first, so distances follow cosine
    standardize: Literal["global", "per_dim", "none"] = "global"  # centre, then one scale or one per dim
    epochs: int = 40  # RQ-VAE epochs (an epoch = about n products)
    warmup_epochs: int = 0  # autoencoder epochs without quantisation before k-means (skip=False needs some)
    # continuing from a previous codebook (``init``, ``--init-from``): a short, gentle run fits new products
    # while most keep their codes; the full schedule drifts
    # (docs/semantic-ids.md, "Measured reasons behind defaults")
    init_epochs: int = 5  # RQ-VAE epochs when continuing from a previous codebook (replaces epochs)
    init_lr_ratio: float = 0.25  # peak learning rate when continuing, as a share of lr
    batch_size: int = 512  # products per batch
    lr: float = 2e-3  # AdamW peak learning rate, cosine-decayed to min_lr_ratio * lr
    min_lr_ratio: float = 0.05  # final learning rate as a share of lr (train's spelling; was lr_min_ratio)
    weight_decay: float = 0.0  # AdamW weight decay (codebooks excluded)
    contrastive_lambda: float = 0.01  # weight of the taxonomy term; 0 = vanilla RQ-VAE
    contrastive_temperature: float = 0.05  # InfoNCE temperature, on distances relative to their mean at init
    contrastive_decay: float = 0.5  # level weights 1, decay, decay^2, ...: coarsest heaviest
    contrastive_sharpness: float = 0.1  # soft-assignment temperature / mean distance to the nearest codeword
    # the taxonomy term on every n-th step only, weighted n x lambda (the same total pull): its second forward
    # pass and soft assignments cost several plain steps; every 2nd step by default
    # (docs/semantic-ids.md, "Semantic IDs on Instacart")
    contrastive_every: int = 2
    # products in the taxonomy term's hierarchical batch (0: batch_size). Its cost grows with the square of this
    # batch (pairwise distances per level), reconstruction's linearly with batch_size, so a large catalog trains
    # reconstruction on big batches and the taxonomy term on a smaller one (docs/scaling.md, "Catalog scale")
    contrastive_batch_size: int = 0
    parent_share: float = 0.5  # hierarchical sampler: share of a batch from one parent's leaves
    per_leaf: int = 8  # hierarchical sampler: products per leaf in that share
    hard_share: float = 0.5  # hierarchical sampler: share of the rest taken from look-alike unrelated products
    kmeans_iters: int = 20  # Lloyd iterations for codebook initialisation (and RQ-KMeans)
    # RQ-VAE codebook initialisation on at most this many products drawn at random (0: all of them); k-means++
    # and Lloyd cost grow with products x codewords, so a catalog of millions seeds its codebooks on a sample
    # (docs/scaling.md, "Catalog scale")
    kmeans_sample: int = 0
    # at most this many products on one code tuple (0: no cap, every product takes its nearest codewords): a
    # prefix that would crowd more onto one tuple spreads over the last codebook by a k-d split of its
    # residuals (semid/capacity.py). Keeps the disambiguation level, and so the decoder's vocabulary, narrow
    # on catalogs of millions (docs/scaling.md, "The 5M bars")
    last_code_capacity: int = 0
    revive_dead: bool = True  # move codewords unused over an epoch onto live residuals
    seed: int = 0  # seeds weights, k-means, sampling: same seed + data = same codebook
    threads: int = 0  # torch CPU threads while training; 0 leaves the process setting alone
    progress: bool = True  # progress over epochs (a bar on a terminal, else a few log lines)

    OLD_KEYS = {"lr_min_ratio": "min_lr_ratio"}  # old spelling -> key, read from old run folders

    def __post_init__(self) -> None:
        c = Checks(self, "semid")
        c.literals()
        c.sizes("codebook_sizes")
        c.sizes("hidden_dims", empty=True)
        c.at_least(1, "latent_dim", "epochs", "init_epochs", "batch_size", "contrastive_every", "per_leaf",
                   "kmeans_iters")
        c.at_least(0, "warmup_epochs", "beta", "weight_decay", "contrastive_lambda", "contrastive_decay", "seed",
                   "threads", "kmeans_sample", "contrastive_batch_size", "last_code_capacity")
        c.above(0, "lr", "init_lr_ratio", "contrastive_temperature", "contrastive_sharpness")
        c.within(0, 1, "min_lr_ratio", "parent_share", "hard_share")
        c.within(0, 1, "dropout", open_high=True)
