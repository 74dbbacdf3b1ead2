"""Residual quantizer: L levels, each with its own codebook, quantising what the previous levels left
over. Codebooks start from k-means on data, dead codes are revived from live residuals, and per-level
utilisation and perplexity are measured so that collapse is visible, not silent."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """What one forward pass of the quantizer returns."""

    quantized: torch.Tensor  # (B, D) sum of the chosen codewords, straight-through to the input
    codes: torch.Tensor  # (B, L) int64 codeword index per level
    residuals: list[torch.Tensor]  # L tensors (B, D): what level l was asked to quantise
    loss: torch.Tensor  # codebook loss + beta * commitment loss, summed over levels


def assign(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, the nearest codeword for every row of ``x`` (chunked).

    ||x||^2 is the same for every codeword, so the search runs on ||c||^2 - 2 x.c in one fused op."""
    cc = (codebook * codebook).sum(1)
    dists, idxs = [], []
    for part in x.split(chunk):
        d, i = torch.addmm(cc, part, codebook.T, alpha=-2.0).min(1)
        dists.append((d + (part * part).sum(1)).clamp_min_(0.0))
        idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


def subtract_codewords(x: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor, own: bool = False,
                       chunk: int = 16384) -> torch.Tensor:
    """``x - codebook[idx]`` (no gradient), a chunk of rows at a time: into ``x`` itself when ``own`` (the
    caller's working copy), else into one new tensor; the gathered codewords are never a whole copy."""
    out = x if own else torch.empty_like(x)
    for s in range(0, len(x), chunk):
        torch.sub(x[s:s + chunk], codebook[idx[s:s + chunk]], out=out[s:s + chunk])
    return out


def nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword for every row of ``x``."""
    return assign(x, codebook)[1]


def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; empty clusters are re-seeded at the worst-served points."""
    x = x.detach().float()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    centroids = _kmeanspp(x, k, generator)
    for _ in range(iters):
        best, idx = assign(x, centroids)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            centroids[empty] = x[best.topk(empty.numel()).indices]
    return centroids


def _kmeanspp(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to squared distance."""
    n = x.shape[0]
    norms = (x * x).sum(1)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(n, (1,), generator=generator)[0]
    closest = (norms - 2 * (x @ x[chosen[0]]) + norms[chosen[0]]).clamp_min_(0.0)
    for i in range(1, k):
        cumulative = closest.double().cumsum(0)
        if cumulative[-1] <= 0:  # fewer distinct points than k: fall back to uniform draws
            chosen[i] = torch.randint(n, (1,), generator=generator)[0]
        else:  # inverse-CDF draw: far cheaper than torch.multinomial over n points
            u = torch.rand(1, generator=generator, dtype=torch.float64) * cumulative[-1]
            chosen[i] = torch.searchsorted(cumulative, u).clamp_max(n - 1)[0]
        c = chosen[i]
        torch.minimum(closest, (norms - 2 * (x @ x[c]) + norms[c]).clamp_min_(0.0), out=closest)
    return x[chosen].clone()


class ResidualQuantizer(nn.Module):
    """L codebooks of sizes ``codebook_sizes`` over ``dim``-dimensional vectors, applied residually."""

    def __init__(self, dim: int, codebook_sizes: list[int], beta: float = 0.25):
        super().__init__()
        if not codebook_sizes or min(codebook_sizes) < 2:
            raise ValueError(f"codebook_sizes must be a non-empty list of sizes >= 2, got {codebook_sizes}")
        self.dim = dim
        self.codebook_sizes = list(codebook_sizes)
        self.beta = beta
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(k, dim) / dim**0.5) for k in self.codebook_sizes]
        )
        for level, k in enumerate(self.codebook_sizes):  # usage since the last revival, per level
            self.register_buffer(f"usage_{level}", torch.zeros(k), persistent=False)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def usage(self, level: int) -> torch.Tensor:
        return getattr(self, f"usage_{level}")

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 20, generator: torch.Generator | None = None,
                    inplace: bool = False) -> None:
        """Set every codebook by k-means on the residuals the previous levels leave on ``z`` (``inplace``: the
        residuals are worked out in ``z`` itself, the caller's to give up)."""
        residual = z.detach().float()
        for level, k in enumerate(self.codebook_sizes):
            centroids = kmeans(residual, k, iters, generator)
            self.codebooks[level].copy_(centroids)
            residual = subtract_codewords(residual, centroids, nearest(residual, centroids), own=inplace or level > 0)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z`` level by level; gradients reach ``z`` straight through the codeword choice."""
        residual = z
        quantized = torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for level, codebook in enumerate(self.codebooks):
            idx = nearest(residual.detach(), codebook.detach())
            chosen = codebook[idx]
            loss = loss + F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())
            if self.training:
                self.usage(level).add_(torch.bincount(idx, minlength=codebook.shape[0]).float())
            codes.append(idx)
            residuals.append(residual)
            quantized = quantized + chosen
            residual = residual - chosen.detach()
        quantized = z + (quantized - z).detach()
        return QuantizerOutput(quantized, torch.stack(codes, 1), residuals, loss)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Codes (N, L) for ``z``, greedy nearest codeword at every level (``inplace``: the residuals are
        worked out in ``z`` itself)."""
        residual = z.float()
        codes = []
        for level, codebook in enumerate(self.codebooks):
            idx = nearest(residual, codebook)
            codes.append(idx)
            residual = subtract_codewords(residual, codebook, idx, own=inplace or level > 0)
        return torch.stack(codes, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codewords named by ``codes`` (N, L)."""
        return sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))

    @torch.no_grad()
    def revive_dead(self, z: torch.Tensor, generator: torch.Generator | None = None,
                    inplace: bool = False) -> list[int]:
        """Move codewords unused since the last call onto random residuals of ``z``; return counts per level
        (``inplace``: the residuals are worked out in ``z`` itself).

        Levels are handled top-down, so a level's revived codes already see the residuals that the
        (repaired) levels above it leave."""
        revived = []
        residual = z.detach().float()
        for level, codebook in enumerate(self.codebooks):
            dead = (self.usage(level) == 0).nonzero().flatten()
            if dead.numel():
                pick = torch.randint(residual.shape[0], (dead.numel(),), generator=generator)
                noise = torch.randn(dead.numel(), self.dim, generator=generator) * residual.std() * 0.01
                codebook[dead] = residual[pick] + noise
            revived.append(int(dead.numel()))
            self.usage(level).zero_()
            residual = subtract_codewords(residual, codebook, nearest(residual, codebook), own=inplace or level > 0)
        return revived


def code_stats(codes: np.ndarray, codebook_sizes: list[int]) -> list[dict]:
    """Per level: utilisation (share of codewords used), perplexity (exp of usage entropy), used count."""
    stats = []
    for level, k in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=k)
        p = counts[counts > 0] / counts.sum()
        stats.append(
            {
                "utilization": float((counts > 0).mean()),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
                "used": int((counts > 0).sum()),
                "size": int(k),
            }
        )
    return stats
