"""RQ-VAE: an encoder maps a product embedding to a latent, a residual quantizer turns the latent into L
codes, and a decoder reconstructs the embedding from the quantised latent.

Encoder and decoder are MLPs, optionally beside a linear skip path (``skip``): the skip starts as the
data's principal axes and the MLP's last layer at zero, so training starts from plain PCA + residual
k-means and the network only has to learn what improves on it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from semid.quantizer import ResidualQuantizer

PCA_ROWS = 1 << 15  # products per slice of the covariance that init_pca sums (a catalog up to it: one slice)


@dataclass
class RQVAEConfig:
    """Shape of the RQ-VAE; the training settings live in ``semid.train.SemIDConfig``."""

    input_dim: int = 384  # embedding width (MiniLM: 384)
    hidden_dims: list[int] = field(default_factory=lambda: [256])  # encoder widths; decoder mirrors
    latent_dim: int = 128  # quantised latent width
    codebook_sizes: list[int] = field(default_factory=lambda: [32, 256, 512, 1024])  # one entry per level
    beta: float = 0.25  # commitment weight: how hard the encoder is pulled towards its codewords
    dropout: float = 0.0  # dropout between hidden layers
    skip: bool = True  # linear (PCA-initialised) skip path beside each MLP


def mlp(widths: list[int], dropout: float) -> nn.Sequential:
    """Linear layers through ``widths`` with SiLU (and optional dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.SiLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Coder(nn.Module):
    """MLP from ``widths[0]`` to ``widths[-1]``, plus (if ``skip``) a linear map of the input."""

    def __init__(self, widths: list[int], dropout: float, skip: bool):
        super().__init__()
        self.mlp = mlp(widths, dropout)
        self.skip = nn.Linear(widths[0], widths[-1], bias=False) if skip else None
        if skip:  # start as the linear map alone; the MLP grows from zero
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(x)
        return out if self.skip is None else out + self.skip(x)


@dataclass
class RQVAEOutput:
    """One forward pass: reconstruction, latent, codes and the two loss terms."""

    reconstruction: torch.Tensor  # (B, input_dim)
    latent: torch.Tensor  # (B, latent_dim) before quantisation
    codes: torch.Tensor  # (B, L)
    residuals: list[torch.Tensor]  # per level, the residual that level quantised
    recon_loss: torch.Tensor
    rq_loss: torch.Tensor


class RQVAE(nn.Module):
    """Encoder -> residual quantizer -> decoder."""

    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.input_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = Coder(widths, cfg.dropout, cfg.skip)
        self.decoder = Coder(widths[::-1], cfg.dropout, cfg.skip)
        self.quantizer = ResidualQuantizer(cfg.latent_dim, cfg.codebook_sizes, cfg.beta)

    @torch.no_grad()
    def init_pca(self, x: torch.Tensor) -> None:
        """Point the skip paths at the top ``latent_dim`` principal axes of ``x`` (encoder) and back,
        scaled so the latent starts with unit mean square per dimension."""
        if self.encoder.skip is None:
            return
        mean = x.mean(0)
        cov = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        for part in x.split(PCA_ROWS):  # a slice at a time: no catalog-sized copy, in float64 or otherwise
            centred = (part - mean).double()
            cov += centred.T @ centred
        cov /= max(len(x) - 1, 1)
        values, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
        k = self.cfg.latent_dim
        axes = vectors[:, -k:].flip(1).T.float()  # (latent, input), largest first
        axes = axes * torch.where(axes.sum(1, keepdim=True) < 0, -1.0, 1.0)  # fix eigh's sign freedom
        scale = float(values[-k:].clamp_min(0).mean().sqrt().clamp_min(1e-6))
        self.encoder.skip.weight.copy_(axes / scale)
        self.decoder.skip.weight.copy_(axes.T * scale)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        z = self.encoder(x)
        q = self.quantizer(z)
        x_hat = self.decoder(q.quantized)
        recon = F.mse_loss(x_hat, x)
        return RQVAEOutput(x_hat, z, q.codes, q.residuals, recon, q.loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        """Codes (N, L) for standardised inputs ``x``; works for products never seen in training."""
        return torch.cat([self.quantizer.encode(self.encoder(part)) for part in x.split(batch)])

    @torch.no_grad()
    def latents(self, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        """Encoder outputs (N, latent_dim), batched (written into one tensor: the parts are not held beside it)."""
        out = None
        for s, part in zip(range(0, len(x), batch), x.split(batch)):
            z = self.encoder(part)
            if out is None:
                out = z.new_empty((len(x), z.shape[1]))
            out[s:s + len(z)] = z
        return out if out is not None else self.encoder(x[:0])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        """Decode the quantised latent of ``x`` back to input space."""
        out = []
        for part in x.split(batch):
            codes = self.quantizer.encode(self.encoder(part))
            out.append(self.decoder(self.quantizer.decode(codes)))
        return torch.cat(out)
