"""Training a Semantic-ID codebook: ``SemIDConfig`` (``semid.codebook_config``) composes the RQ-VAE (or
RQ-KMeans), the taxonomy contrastive term and the hierarchical sampler with the training settings;
``train_codebook`` turns product embeddings into a ``SemIDModel`` that encodes any product (seen or new) into
L codes."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from semid.capacity import cap_last_level
from semid.codebook_config import SemIDConfig
from semid.contrastive import (
    ContrastiveScales,
    calibrate,
    encode_paths,
    label_tensor,
    level_weights,
    taxonomy_contrastive_loss,
)
from semid.progress import progress
from semid.quantizer import code_stats, nearest, subtract_codewords
from semid.rqkmeans import RQKMeans
from semid.rqvae import RQVAE, RQVAEConfig
from semid.sampler import HierarchicalSampler, SamplerConfig

log = logging.getLogger(__name__)


def rqvae_config(cfg: SemIDConfig, input_dim: int) -> RQVAEConfig:
    """The RQ-VAE's shape from a codebook config and the embedding width."""
    return RQVAEConfig(input_dim, list(cfg.hidden_dims), cfg.latent_dim, list(cfg.codebook_sizes),
                       cfg.beta, cfg.dropout, cfg.skip)


STANDARDIZE_ROWS = 1 << 17  # a catalog up to this many products is standardised at once; a larger one by slices
SLICE_ROWS = 1 << 14  # products per slice where a large catalog is standardised a slice at a time


@dataclass
class Standardizer:
    """Input transform fitted on the training catalog: optional L2 normalisation, centring, scaling."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,) or (1,)
    normalize: bool

    @classmethod
    def fit(cls, x: np.ndarray, mode: str, normalize: bool) -> Standardizer:
        if len(x) > STANDARDIZE_ROWS:
            return cls._fit_slices(x, mode, normalize)
        # one working copy of the catalog, changed in place (the same arithmetic as x - mean, then its square)
        x = _unit(x) if normalize else np.array(x, np.float32)
        mean = x.mean(0) if mode != "none" else np.zeros(x.shape[1], np.float32)
        centred = np.subtract(x, mean, out=x)
        if mode == "per_dim":
            scale = centred.std(0) + 1e-6
        elif mode == "global":  # one scale keeps the geometry: unit mean squared coordinate
            scale = np.array([np.sqrt(np.square(centred, out=centred).mean()) + 1e-6])
        else:
            scale = np.ones(1)
        return cls(mean.astype(np.float32), np.asarray(scale, np.float32), normalize)

    @classmethod
    def _fit_slices(cls, x: np.ndarray, mode: str, normalize: bool) -> Standardizer:
        """``fit`` on SLICE_ROWS products at a time, the sums in float64: a large catalog is never copied
        whole (the means agree with ``fit``'s to float32 round-off)."""
        n, d = x.shape

        def squares(mean: np.ndarray):
            for s in range(0, n, SLICE_ROWS):
                part = _unit(x[s:s + SLICE_ROWS]) if normalize else np.array(x[s:s + SLICE_ROWS], np.float32)
                yield np.square(np.subtract(part, mean, out=part), out=part)

        mean = np.zeros(d, np.float32)
        if mode != "none":
            total = np.zeros(d)
            for s in range(0, n, SLICE_ROWS):
                part = x[s:s + SLICE_ROWS]
                total += (_unit(part) if normalize else np.asarray(part, np.float32)).sum(0, dtype=np.float64)
            mean = (total / n).astype(np.float32)
        if mode == "per_dim":
            scale = np.sqrt(sum(sq.sum(0, dtype=np.float64) for sq in squares(mean)) / n) + 1e-6
        elif mode == "global":
            scale = np.array([np.sqrt(sum(sq.sum(dtype=np.float64) for sq in squares(mean)) / (n * d)) + 1e-6])
        else:
            scale = np.ones(1)
        return cls(mean, np.asarray(scale, np.float32), normalize)

    def transform(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """The standardised copy of ``x`` (float32), made in one working array; ``inplace``: ``x`` itself
        (float32, the caller's own copy) becomes it."""
        if inplace:
            if self.normalize:
                norms = np.linalg.norm(x, axis=1, keepdims=True)
                np.divide(x, np.where(norms > 0, norms, 1.0), out=x)
        else:
            x = _unit(x) if self.normalize else np.array(x, np.float32)
        np.subtract(x, self.mean, out=x)
        return np.divide(x, self.scale, out=x)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as a new float32 array (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, np.where(norms > 0, norms, 1.0), out=np.empty_like(x))


class StandardRows:
    """The standardised rows of raw embeddings, computed as they are read: ``x[idx]`` and ``x.split(n)`` give
    float32 tensors, ``x.numpy()[idx]`` arrays, ``x.mean(0)`` the column means. What the RQ-VAE reads for a
    large catalog instead of a standardised copy of it (every row's values are the copy's)."""

    def __init__(self, raw: np.ndarray, standardizer: Standardizer):
        self.raw, self.standardizer = raw, standardizer
        self.shape = tuple(raw.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx) -> np.ndarray:
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        if isinstance(idx, slice):  # a view of the caller's array: standardised into a copy
            return self.standardizer.transform(self.raw[idx])
        return self.standardizer.transform(np.asarray(self.raw[idx], np.float32), inplace=True)  # a gathered copy

    def __getitem__(self, idx) -> torch.Tensor:
        return torch.from_numpy(self.rows(idx))

    def split(self, size: int):
        return (self[s:s + size] for s in range(0, len(self), size))

    def numpy(self) -> "_NumpyRows":
        return _NumpyRows(self)

    def mean(self, dim: int) -> torch.Tensor:
        if dim != 0:
            raise ValueError("StandardRows.mean: only over products (dim 0)")
        total = sum(part.sum(0, dtype=torch.float64) for part in self.split(SLICE_ROWS))
        return (total / len(self)).float()


class _NumpyRows:
    """``StandardRows`` indexed as numpy arrays (what the hierarchical sampler reads)."""

    def __init__(self, rows: StandardRows):
        self._rows = rows

    def __getitem__(self, idx) -> np.ndarray:
        return self._rows.rows(idx)


RESIDUAL_BATCH = 1 << 18  # products per slice when computing last-level residuals
ENCODE_ROWS = 1 << 15  # products per slice when encoding a catalog (a multiple of the encoders' own batches)


def _less_codewords(z: np.ndarray | torch.Tensor, codes: np.ndarray, books: list[np.ndarray]) -> np.ndarray:
    """Latents ``z`` (an array or a CPU tensor) less the codewords of their first L-1 ``codes``: what the last
    level quantises, as a new float32 array."""
    z = np.array(z.numpy() if isinstance(z, torch.Tensor) else z, np.float32, copy=True)
    for level, book in enumerate(books[:-1]):
        z -= book[codes[:, level]]
    return z


class SemIDModel:
    """A trained codebook with its input standardiser: embeddings in, L codes out."""

    def __init__(self, cfg: SemIDConfig, standardizer: Standardizer, net: RQVAE | RQKMeans):
        self.cfg = cfg
        self.standardizer = standardizer
        self.net = net

    @property
    def codebook_sizes(self) -> list[int]:
        return list(self.cfg.codebook_sizes)

    @property
    def input_dim(self) -> int:
        return int(self.standardizer.mean.shape[0])

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes (N, L) int64 for raw embeddings; works for products the codebook never saw. A catalog larger
        than ENCODE_ROWS is standardised and encoded a slice at a time (the same codes)."""
        return self.encode_with_residuals(embeddings, residuals=False)[0]

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes (N, L) of a whole catalog with the last level capped (``capped``): the residuals the cap splits
        crowded prefixes by are taken in the same pass as the codes, not by a second pass of the encoder."""
        if not self.cfg.last_code_capacity:
            return self.encode(embeddings)
        return self.capped(embeddings, *self.encode_with_residuals(embeddings))

    def encode_with_residuals(self, embeddings: np.ndarray, residuals: bool = True
                              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes (N, L) and, with ``residuals``, what the last codebook quantises for each product (N, latent
        dim) float32 (``last_residuals`` of every product); ENCODE_ROWS products at a time."""
        books = self.codewords()
        codes = np.empty((len(embeddings), len(books)), np.int64)
        res = np.empty((len(embeddings), books[-1].shape[1]), np.float32) if residuals else None
        for s in range(0, len(embeddings), ENCODE_ROWS):
            z = self._latents(self._inputs(embeddings[s:s + ENCODE_ROWS]))
            part = self.net.encode(z) if isinstance(self.net, RQKMeans) else self.net.quantizer.encode(z).numpy()
            codes[s:s + len(part)] = part
            if res is not None:
                res[s:s + len(part)] = _less_codewords(z, part, books)
        return codes, res

    def _latents(self, x: np.ndarray) -> np.ndarray | torch.Tensor:
        """What the quantiser reads for standardised inputs: the RQ-VAE's encoder outputs, or ``x`` itself."""
        if isinstance(self.net, RQKMeans):
            return np.asarray(x, np.float32)
        self.net.eval()
        return self.net.latents(torch.from_numpy(x))

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        """Reconstruction of the standardised inputs from their codes (standardised space)."""
        x = self._inputs(embeddings)
        if isinstance(self.net, RQKMeans):
            return self.net.decode(self.net.encode(x))
        self.net.eval()
        return self.net.reconstruct(torch.from_numpy(x)).numpy()

    def codewords(self) -> list[np.ndarray]:
        """Each level's codebook, (size, latent dim) float32: the sum of an SID's codewords is the vector its
        codes stand for, so SIDs compare by cosine without the embeddings they came from (cold start)."""
        if isinstance(self.net, RQKMeans):
            return [np.asarray(c, np.float32) for c in self.net.codebooks]
        return [c.detach().cpu().numpy().astype(np.float32) for c in self.net.quantizer.codebooks]

    def last_residuals(self, embeddings: np.ndarray, codes: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """What the last codebook quantises for each product (at ``rows``, default all): its latent less the
        codewords of its first L-1 codes, (n, latent dim) float32 (``semid.capacity`` splits crowded prefixes
        by it)."""
        rows = np.arange(len(codes)) if rows is None else np.asarray(rows, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        books = self.codewords()
        out = np.empty((rows.size, books[-1].shape[1]), np.float32)
        for s in range(0, rows.size, RESIDUAL_BATCH):  # a catalog of millions, a slice at a time
            at = rows[s:s + RESIDUAL_BATCH]
            z = self._latents(self._inputs(embeddings[at]))
            out[s:s + at.size] = _less_codewords(z, codes[at], books)
        return out

    def capped(self, embeddings: np.ndarray, codes: np.ndarray, residuals: np.ndarray | None = None) -> np.ndarray:
        """``codes`` with the last level capped at ``cfg.last_code_capacity`` products a tuple (0: unchanged);
        ``embeddings`` are the products' own, rows aligned, and ``residuals`` their ``last_residuals`` where
        already known (else worked out for the crowded prefixes' products; ``semid.capacity``)."""
        if not self.cfg.last_code_capacity:
            return codes
        of_rows = (lambda rows: residuals[rows]) if residuals is not None else (
            lambda rows: self.last_residuals(embeddings, codes, rows))
        return cap_last_level(codes, of_rows, self.codewords()[-1], self.cfg.last_code_capacity)

    def reconstruction_error(self, embeddings: np.ndarray) -> float:
        """Share of input variance the codes fail to reconstruct: mean ||x - x_hat||^2 / mean ||x - mean||^2."""
        x = self._inputs(embeddings)
        err = ((x - self.reconstruct(embeddings)) ** 2).sum(1).mean()
        return float(err / ((x - x.mean(0)) ** 2).sum(1).mean())

    def _inputs(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings)
        if e.ndim != 2 or e.shape[1] != self.input_dim:
            raise ValueError(f"embeddings must be (n, {self.input_dim}), got {e.shape}")
        return self.standardizer.transform(e)

    def state_dict(self) -> dict[str, np.ndarray]:
        """All weights as named float32 arrays (the standardiser included), for safetensors and hashing."""
        state = {"standardizer.mean": self.standardizer.mean, "standardizer.scale": self.standardizer.scale}
        if isinstance(self.net, RQKMeans):
            state.update({f"rqkmeans.{k}": v for k, v in self.net.state_dict().items()})
        else:
            state.update({f"rqvae.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()})
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}

    @classmethod
    def from_state_dict(cls, cfg: SemIDConfig, state: dict[str, np.ndarray]) -> SemIDModel:
        """Rebuild a model saved with ``state_dict`` under the same config."""
        std = Standardizer(state["standardizer.mean"], state["standardizer.scale"], cfg.normalize)
        if cfg.method == "rqkmeans":
            net: RQVAE | RQKMeans = RQKMeans(cfg.codebook_sizes, cfg.kmeans_iters, cfg.seed)
            net.load_state_dict({k[len("rqkmeans."):]: v for k, v in state.items() if k.startswith("rqkmeans.")})
        else:
            net = RQVAE(rqvae_config(cfg, len(std.mean)))
            net.load_state_dict({k[len("rqvae."):]: torch.from_numpy(v) for k, v in state.items() if k.startswith("rqvae.")})
            net.eval()
        return cls(cfg, std, net)

    @property
    def codebook_version(self) -> str:
        """Short sha256 over the weights (names, shapes, bytes): any change to the codebook changes it."""
        return weights_version(self.state_dict())


def weights_version(state: dict[str, np.ndarray]) -> str:
    """12 hex digits of sha256 over sorted tensor names, shapes and float32 bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        arr = np.ascontiguousarray(state[name], dtype=np.float32)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:12]


def train_codebook(
    embeddings: np.ndarray,
    category_paths: Sequence[Sequence[str] | None] | pa.Array | pa.ChunkedArray | None,
    cfg: SemIDConfig,
    init: SemIDModel | None = None,
) -> tuple[SemIDModel, list[dict]]:
    """Train a codebook on ``embeddings`` (n, d); ``category_paths`` (root to leaf, or None; a list<string>
    Arrow column too) feeds the taxonomy loss and sampler. ``init`` continues from a previous model (same
    shapes) so most products keep their codes: no k-means, ``init_epochs`` at ``init_lr_ratio * lr``.
    Returns the model and one history dict per epoch. Deterministic for a seed."""
    embeddings = np.asarray(embeddings)
    if embeddings.dtype != np.float16:  # float16: a large catalog's own storage, read a slice at a time
        embeddings = np.asarray(embeddings, np.float32)
    _check(embeddings, category_paths, cfg)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            if cfg.method == "rqkmeans":
                return _train_rqkmeans(embeddings, cfg, init)
            return _train_rqvae(embeddings, category_paths, cfg, init)
    finally:
        torch.set_num_threads(threads)


def _check(embeddings: np.ndarray, category_paths, cfg: SemIDConfig) -> None:
    """The inputs fit each other and the codebook (the config's own values are checked when it is made)."""
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {embeddings.shape}")
    slices = range(0, len(embeddings), STANDARDIZE_ROWS)  # no catalog-sized mask
    if not all(np.isfinite(embeddings[s:s + STANDARDIZE_ROWS]).all() for s in slices):
        raise ValueError("embeddings contain NaN or infinite values")
    if category_paths is not None and len(category_paths) != len(embeddings):
        raise ValueError(f"{len(category_paths)} category paths for {len(embeddings)} embeddings")
    if len(embeddings) < max(cfg.codebook_sizes):
        raise ValueError(f"{len(embeddings)} products cannot fill a codebook of {max(cfg.codebook_sizes)} codewords")


def _train_rqkmeans(x: np.ndarray, cfg: SemIDConfig, init: SemIDModel | None) -> tuple[SemIDModel, list[dict]]:
    start = time.perf_counter()
    std = init.standardizer if init is not None else Standardizer.fit(x, cfg.standardize, cfg.normalize)
    inputs = std.transform(x)
    previous = init.net.codebooks if init is not None and isinstance(init.net, RQKMeans) else None
    net = RQKMeans(cfg.codebook_sizes, cfg.kmeans_iters, cfg.seed).fit(inputs, init=previous)
    model = SemIDModel(cfg, std, net)
    stats = code_stats(net.encode(inputs), cfg.codebook_sizes)
    entry = {"epoch": 1, "seconds": round(time.perf_counter() - start, 2), **_stats_fields(stats)}
    entry["reconstruction_error"] = model.reconstruction_error(x)
    log.info("rqkmeans: utilisation %s", entry["utilization"])
    return model, [entry]


def _stats_fields(stats: list[dict]) -> dict:
    return {
        "utilization": [round(s["utilization"], 4) for s in stats],
        "perplexity": [round(s["perplexity"], 1) for s in stats],
    }


def _train_rqvae(
    x_raw: np.ndarray, category_paths, cfg: SemIDConfig, init: SemIDModel | None
) -> tuple[SemIDModel, list[dict]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    std = init.standardizer if init is not None else Standardizer.fit(x_raw, cfg.standardize, cfg.normalize)
    # a large catalog is standardised a slice at a time as it is read, not copied whole beside the caller's
    x = StandardRows(x_raw, std) if len(x_raw) > STANDARDIZE_ROWS else torch.from_numpy(std.transform(x_raw))
    net = RQVAE(rqvae_config(cfg, x.shape[1]))
    model = SemIDModel(cfg, std, net)
    nodes = encode_paths(category_paths, len(x))
    use_taxonomy = cfg.contrastive_lambda > 0 and (nodes >= 0).any()
    sampler_cfg = SamplerConfig(cfg.contrastive_batch_size or cfg.batch_size, cfg.parent_share, cfg.per_leaf,
                                cfg.hard_share)
    sampler = HierarchicalSampler(nodes, sampler_cfg, cfg.seed, embeddings=x.numpy())
    weights = level_weights(len(cfg.codebook_sizes), cfg.contrastive_decay)
    epochs, lr = (cfg.epochs, cfg.lr) if init is None else (cfg.init_epochs, cfg.lr * cfg.init_lr_ratio)
    opt = _optimizer(net, cfg, lr)
    steps_per_epoch = max(1, math.ceil(len(x) / cfg.batch_size))
    warmup = 0 if init is not None else cfg.warmup_epochs
    total_steps = (warmup + epochs) * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total_steps, cfg.min_lr_ratio))
    history: list[dict] = []
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    else:
        net.init_pca(x)
    rng = np.random.default_rng(cfg.seed)
    scales: ContrastiveScales | None = None
    bar = progress(warmup + epochs, "rq-vae", "epochs", cfg.progress, logger=log)
    for epoch in range(warmup + epochs):
        start = time.perf_counter()
        quantize = epoch >= warmup
        if quantize and epoch == warmup:
            if init is None:
                seeds = x
                if 0 < cfg.kmeans_sample < len(x):  # a sample of a large catalog (the default: every product)
                    seeds = x[torch.randperm(len(x), generator=gen)[: max(cfg.kmeans_sample, max(cfg.codebook_sizes))]]
                net.quantizer.init_kmeans(net.latents(seeds), cfg.kmeans_iters, gen, True)  # latents given up
            scales = _calibrate(net, x, gen, cfg.contrastive_sharpness) if use_taxonomy else None
        net.train()
        sums = {"loss": 0.0, "recon": 0.0, "rq": 0.0, "contrastive": 0.0}
        batches = _uniform_batches(len(x), cfg.batch_size, rng)
        for step, idx in enumerate(batches):
            # reconstruction sees uniform batches whatever lambda is; the taxonomy term its own
            # hierarchical batch, so lambda = 0 is exactly the vanilla RQ-VAE
            tax_idx = sampler.batch() if scales is not None and step % cfg.contrastive_every == 0 else None
            terms = _step(net, x, idx, tax_idx, nodes, quantize, scales, weights, cfg)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(terms[k].detach())
        n_batches = len(batches)
        sums["contrastive"] *= n_batches / max(1, math.ceil(n_batches / cfg.contrastive_every))  # mean where computed
        entry = _epoch_summary(net, x, epoch, quantize, sums, n_batches, cfg, gen, start)
        history.append(entry)
        bar.set_postfix(recon=f"{entry['recon']:.4f}", util=entry.get("utilization", "-"))
        bar.update(1)
        log.debug("epoch %d %s", epoch + 1, entry)
    bar.close()
    net.eval()
    return model, history


@torch.no_grad()
def _calibrate(net: RQVAE, x: torch.Tensor, gen: torch.Generator, sharpness: float, sample: int = 8192) -> ContrastiveScales:
    """Fix the contrastive distance scales on a sample of the catalog, once the codebooks are set."""
    idx = torch.randperm(len(x), generator=gen)[:sample]
    net.eval()
    out = net.quantizer(net.encoder(x[idx]))
    return calibrate(out.residuals, list(net.quantizer.codebooks), sharpness)


def _optimizer(net: RQVAE, cfg: SemIDConfig, lr: float) -> torch.optim.Optimizer:
    codebooks = list(net.quantizer.parameters())
    ids = {id(p) for p in codebooks}
    others = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": others, "weight_decay": cfg.weight_decay}, {"params": codebooks, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _lr_factor(step: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over the first 2% of steps, then cosine decay to ``min_ratio``."""
    warm = max(1, total // 50)
    if step < warm:
        return (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _uniform_batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _step(net: RQVAE, x, idx, tax_idx, nodes, quantize: bool, scales: ContrastiveScales | None, weights,
          cfg: SemIDConfig) -> dict:
    """Loss terms of one step: reconstruction and quantisation on batch ``idx`` (before quantisation
    starts, a plain autoencoder), plus lambda * the taxonomy term on the hierarchical batch ``tax_idx``."""
    xb = x[idx]
    if not quantize:
        recon = torch.nn.functional.mse_loss(net.decoder(net.encoder(xb)), xb)
        zero = recon.new_zeros(())
        return {"loss": recon, "recon": recon.detach(), "rq": zero, "contrastive": zero}
    out = net(xb)
    loss = out.recon_loss + out.rq_loss
    contrastive = loss.new_zeros(())
    if scales is not None and tax_idx is not None:
        residuals = net.quantizer(net.encoder(x[tax_idx])).residuals
        labels = label_tensor(nodes, tax_idx)
        contrastive = taxonomy_contrastive_loss(
            residuals, list(net.quantizer.codebooks), labels, weights, scales, cfg.contrastive_temperature
        )
        loss = loss + cfg.contrastive_lambda * cfg.contrastive_every * contrastive
    return {"loss": loss, "recon": out.recon_loss.detach(), "rq": out.rq_loss.detach(), "contrastive": contrastive.detach()}


@torch.no_grad()
def _summary_in_slices(net: RQVAE, x: StandardRows, cfg: SemIDConfig, gen: torch.Generator,
                       batch: int = 8192) -> dict:
    """``_epoch_summary``'s revival and code statistics with the latents computed a slice at a time, never
    all at once: the steps of ``ResidualQuantizer.revive_dead`` (the same draws from ``gen``; each level's
    residual spread summed over slices in float64), then every product's codes."""
    q = net.quantizer

    def residual(rows: torch.Tensor, level: int) -> torch.Tensor:  # what ``level`` quantises for these rows
        r = net.encoder(rows)
        for book in list(q.codebooks)[:level]:
            r = subtract_codewords(r, book, nearest(r, book), own=True)
        return r

    out = {}
    if cfg.revive_dead:
        revived = []
        for level, book in enumerate(q.codebooks):
            dead = (q.usage(level) == 0).nonzero().flatten()
            if dead.numel():
                pick = torch.randint(len(x), (dead.numel(),), generator=gen)
                total = square = 0.0
                for part in x.split(batch):
                    r = residual(part, level).double()
                    total, square = total + float(r.sum()), square + float((r * r).sum())
                count = len(x) * q.dim
                std = math.sqrt(max(square - total * total / count, 0.0) / max(count - 1, 1))
                noise = torch.randn(dead.numel(), q.dim, generator=gen) * std * 0.01
                book[dead] = residual(x[pick], level) + noise
            revived.append(int(dead.numel()))
            q.usage(level).zero_()
        out["revived"] = revived
    codes = torch.cat([q.encode(net.encoder(part), True) for part in x.split(batch)])
    out.update(_stats_fields(code_stats(codes.numpy(), cfg.codebook_sizes)))
    return out


@torch.no_grad()
def _epoch_summary(net: RQVAE, x, epoch: int, quantize: bool, sums: dict, n: int, cfg: SemIDConfig, gen, start) -> dict:
    """Revive dead codes, then measure the epoch: mean losses, utilisation and perplexity on all products."""
    entry = {"epoch": epoch + 1, "phase": "rq" if quantize else "warmup"}
    entry.update({k: round(v / max(n, 1), 6) for k, v in sums.items()})
    if quantize:
        net.eval()
        if isinstance(x, StandardRows):  # a large catalog: its latents a slice at a time
            entry.update(_summary_in_slices(net, x, cfg, gen))
        else:
            latents = net.latents(x)
            if cfg.revive_dead:
                entry["revived"] = net.quantizer.revive_dead(latents, gen)
            entry.update(_stats_fields(code_stats(net.quantizer.encode(latents, True).numpy(), cfg.codebook_sizes)))
    entry["seconds"] = round(time.perf_counter() - start, 2)
    return entry
