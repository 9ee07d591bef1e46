"""TIGER-style RQ-VAE quantizer (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023).

An MLP encoder maps an item embedding to a small latent vector; a residual quantizer with one codebook per
level picks, level by level, the codeword nearest (L2) to what is left of the latent, so an item's codes run from
coarse to fine; an MLP decoder reconstructs the embedding from the sum of the chosen codewords. Training
minimises ``MSE(x, x_hat) + sum_l [ ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 ]`` with the
straight-through estimator carrying the decoder's gradient past the (non-differentiable) code choice.

Two things keep the codebooks in use, which matters because an unused code is a wasted semantic ID prefix:
each level's codebook starts from k-means on the encoder's residuals at that level (as TIGER does; optionally after a few
warm-up epochs of plain autoencoder training, so the latent space has taken shape), and
every ``restart_every`` steps the codes that no item picked since the last check are moved onto random
residuals of the current batch (dead-code restart).

Inputs are normalised as the config says (``standardize`` per dimension with the fitted mean / std, ``l2`` to
norm sqrt(dim) and centred, or ``none``); the statistics are saved with the weights, so :meth:`RQVAEQuantizer.encode` after
:meth:`RQVAEQuantizer.load` does exactly what it did after :meth:`RQVAEQuantizer.fit`. Every random draw comes
from ``torch.Generator`` objects seeded from the ``seed`` given to ``fit``, so fitting on CPU is deterministic.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from onesearch.device import pick_device
from onesearch.tokenizer.base import (
    QUANTIZER_CONFIG,
    QUANTIZER_WEIGHTS,
    check_embeddings,
    read_quantizer_meta,
    save_quantizer_files,
)

NORMALIZATIONS = ("standardize", "l2", "none")
"""Input normalisations :class:`RQVAEConfig` accepts."""
FORMAT_VERSION = 1
"""Version of the saved ``quantizer.json`` layout."""


@dataclass(frozen=True)
class RQVAEConfig:
    """Architecture and training schedule of the RQ-VAE."""

    codebook_sizes: tuple[int, ...] = (256, 256, 256)
    """Codes per residual level (coarse to fine); one codebook per entry."""
    latent_dim: int = 32
    """Dimension of the latent vector and of every codeword."""
    hidden_dims: tuple[int, ...] = (512, 256, 128)
    """Hidden layer widths of the encoder (the decoder mirrors them); ReLU between layers."""
    beta: float = 0.25
    """Commitment weight: how strongly the encoder output is pulled towards its chosen codewords."""
    normalize: str = "standardize"
    """Input normalisation: ``standardize`` (per-dim mean / std of the fit set), ``l2`` (rows to norm sqrt(dim), then
    centred on the fit set's mean) or ``none``."""
    epochs: int = 150
    """Passes over the fit set."""
    max_steps: int | None = None
    """Stop after this many optimiser steps even if epochs remain (None: no cap; bounds time on big catalogues)."""
    batch_size: int = 512
    """Items per optimiser step (capped at the number of items)."""
    lr: float = 1e-3
    """Learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on the encoder / decoder weights (never on the codebooks)."""
    warmup_epochs: int = 0
    """First epochs (of ``epochs``) train a plain autoencoder, no quantization, so the k-means initialisation
    places the codebooks in a latent space that already has its shape (0: codebooks start on the random encoder; on 4k clustered 384-d items 0 gave fewer
    collisions, while ``tiny`` needs 10 to separate clusters reliably)."""
    kmeans_init: bool = True
    """Initialise each level's codebook with k-means on the encoder's residuals at that level (after warm-up)."""
    kmeans_samples: int = 8192
    """Items (a random subset when there are more) the k-means initialisation runs on."""
    kmeans_iters: int = 25
    """Lloyd iterations of the k-means initialisation (after k-means++ seeding)."""
    dead_code_restart: bool = True
    """Move codes that no item picked during the last ``restart_every`` steps onto random current residuals."""
    restart_every: int = 50
    """Steps between dead-code checks."""
    encode_batch_size: int = 8192
    """Items per forward pass in :meth:`RQVAEQuantizer.encode`."""
    device: str = "auto"
    """``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda[:i]``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "codebook_sizes", tuple(int(s) for s in self.codebook_sizes))
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise ValueError(
                f"RQVAEConfig: codebook_sizes must be non-empty and positive, got {self.codebook_sizes}"
            )
        if self.hidden_dims and min(self.hidden_dims) < 1:
            raise ValueError(f"RQVAEConfig: hidden_dims must be positive, got {self.hidden_dims}")
        for name in (
            "latent_dim",
            "epochs",
            "batch_size",
            "kmeans_samples",
            "restart_every",
            "encode_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"RQVAEConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"RQVAEConfig: warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"RQVAEConfig: max_steps must be >= 1 or None, got {self.max_steps}")
        if self.kmeans_iters < 0 or self.beta < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("RQVAEConfig: kmeans_iters, beta and weight_decay must be >= 0 and lr > 0")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(
                f"RQVAEConfig: normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RQVAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        d = dict(d)
        d.pop(
            "optimizer", None
        )  # a training-only option (adagrad) that was removed: saves before it name adamw
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"RQVAEConfig: unknown field(s) {unknown}")
        return cls(**d)


RQVAE_PRESETS: dict[str, RQVAEConfig] = {
    "default": RQVAEConfig(),
    "tiny": RQVAEConfig(
        codebook_sizes=(8, 8),
        latent_dim=8,
        hidden_dims=(32,),
        epochs=40,
        warmup_epochs=10,
        batch_size=128,
        lr=3e-3,
        kmeans_iters=10,
        restart_every=10,
        device="cpu",
    ),
}
"""Named configs: ``default`` (TIGER architecture, about 25 s for 4.3k x 384 items on 2 CPU cores) and ``tiny`` (tests)."""


# -- the quantization step ------------------------------------------------------------------------------------


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (n,) of the codeword of ``codebook`` (k, d) nearest in L2 to each row of ``x`` (n, d); ties: lowest."""
    d2 = (x * x).sum(1, keepdim=True) - 2 * x @ codebook.T + (codebook * codebook).sum(1)
    return d2.argmin(1)


def residual_quantize(
    z: torch.Tensor, codebooks: list[torch.Tensor] | nn.ParameterList
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual quantization of ``z`` (n, d) with one codebook (k_l, d) per level.

    Level l picks the codeword nearest to the residual ``r_l = z - sum_{j<l} e_j``. Returns the codes (n, L)
    int64 and the quantized latent ``sum_l e_l`` (n, d) with a straight-through gradient: its value is the sum
    of the chosen codewords, its gradient passes to ``z`` unchanged (and none to the codebooks, which learn from
    the codebook loss). ``z - quantized`` is the final residual.
    """
    residual = z.detach()
    quantized = torch.zeros_like(residual)
    codes = []
    for cb in codebooks:
        cb = cb.detach()
        c = nearest_code(residual, cb)
        e = cb[c]
        quantized = quantized + e
        residual = residual - e
        codes.append(c)
    return torch.stack(codes, 1), z + (quantized - z).detach()


def quantization_loss(
    z: torch.Tensor, codes: torch.Tensor, codebooks: list[torch.Tensor] | nn.ParameterList, beta: float
) -> torch.Tensor:
    """Sum over levels of ``||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2`` (means over items and dims).

    The codebook term moves the chosen codewords towards their residuals, the commitment term moves the encoder
    output towards the codewords; residuals are formed with detached codewords so each codeword learns only from
    the residuals it quantizes.
    """
    residual = z
    total = z.new_zeros(())
    for level, cb in enumerate(codebooks):
        e = cb[codes[:, level]]
        total = total + F.mse_loss(e, residual.detach()) + beta * F.mse_loss(residual, e.detach())
        residual = residual - e.detach()
    return total


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` centres (k, d) of ``x`` (n, d): k-means++ seeding, then ``iters`` Lloyd steps; on x's device.

    With fewer distinct points than ``k`` the extra centres are copies of data points (they are found dead and
    restarted during training). Empty clusters keep their previous centre.
    """
    n = x.shape[0]
    dev = x.device
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total > 0:
            i = int(torch.multinomial((d2 / total).cpu(), 1, generator=generator))
        else:
            i = int(torch.randint(n, (1,), generator=generator))
        centres.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = nearest_code(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        c = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], c)
    return c.to(dev)


# -- the model ------------------------------------------------------------------------------------------------


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _RQVAE(nn.Module):
    """Encoder, codebooks, decoder and the input normalisation statistics (as buffers)."""

    def __init__(self, dim: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        enc = [dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = _mlp(enc)
        self.decoder = _mlp(enc[::-1])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.zeros(k, cfg.latent_dim)) for k in cfg.codebook_sizes]
        )
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_scale", torch.ones(dim))
        self.normalize = cfg.normalize

    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init (uniform +-1/sqrt(fan_in)), drawn from ``generator``; codebooks ~ N(0, 1)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    nn.init.uniform_(m.weight, -bound, bound, generator=generator)
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            for cb in self.codebooks:
                cb.copy_(torch.randn(cb.shape, generator=generator))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the input normalisation."""
        if self.normalize == "l2":
            x = x * (math.sqrt(x.shape[1]) / x.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return (x - self.input_mean) / self.input_scale


# -- the quantizer --------------------------------------------------------------------------------------------


class RQVAEQuantizer:
    """RQ-VAE semantic-ID quantizer; follows :class:`onesearch.tokenizer.base.Quantizer`.

    After :meth:`fit`, ``history`` holds one dict per epoch with the mean ``loss``, ``recon`` (reconstruction
    MSE) and ``quant`` (codebook + commitment) over its steps and ``restarted`` (codes restarted that epoch);
    ``fit_seconds`` is the wall time of the fit.
    """

    method = "rqvae"

    def __init__(self, cfg: RQVAEConfig | str = RQVAEConfig()) -> None:
        self.cfg = RQVAE_PRESETS[cfg] if isinstance(cfg, str) else cfg
        self.dim: int | None = None
        self.model: _RQVAE | None = None
        self.history: list[dict[str, float]] = []
        self.fit_seconds: float | None = None
        self.train_codes: np.ndarray | None = None
        """After ``fit``: the fitted items' codes (n, levels) from the final, frozen model (= ``encode(emb)``)."""
        self.train_residual: np.ndarray | None = None
        """After ``fit``: each fitted item's final latent residual norm (n,) (orders items sharing all codes)."""
        self._device = pick_device(self.cfg.device, "RQVAEConfig")

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self.cfg.codebook_sizes

    @property
    def codebooks(self) -> list[np.ndarray]:
        """The fitted codebooks, one (k_l, latent_dim) float32 array per level."""
        model = self._fitted()
        return [cb.detach().cpu().numpy().copy() for cb in model.codebooks]

    def _fitted(self) -> _RQVAE:
        if self.model is None:
            raise RuntimeError("RQVAEQuantizer: not fitted (call fit or load first)")
        return self.model

    # -- fit ------------------------------------------------------------------------------------------------

    def fit(self, emb: np.ndarray, seed: int = 0) -> Self:
        """Train encoder, codebooks and decoder on ``emb`` (n, d); deterministic for a seed on CPU."""
        arr = check_embeddings(emb)
        n, dim = arr.shape
        if n < 2:
            raise ValueError(f"embeddings: need at least 2 items to fit an RQ-VAE, got {n}")
        cfg, dev = self.cfg, self._device
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(int(seed))

        model = _RQVAE(dim, cfg)
        model.reset_parameters(g)
        model.to(dev)
        x_all = torch.from_numpy(np.ascontiguousarray(arr)).to(dev)
        if cfg.normalize == "standardize":
            mean = x_all.mean(0)
            std = x_all.std(0)
            floor = max(float(std.median()) * 1e-3, 1e-8)
            model.input_mean.copy_(mean)
            model.input_scale.copy_(std.clamp_min(floor))
        elif cfg.normalize == "l2":
            x_norm = model.prepare(x_all)
            model.input_mean.copy_(x_norm.mean(0))
        data = model.prepare(x_all)

        params = [p for name, p in model.named_parameters() if not name.startswith("codebooks")]
        # AdamW: TIGER's Adagrad at lr 0.4 diverged on standardised inputs here
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            [
                {"params": params, "weight_decay": cfg.weight_decay},
                {"params": list(model.codebooks), "weight_decay": 0.0},
            ],
            lr=cfg.lr,
        )

        bs = min(cfg.batch_size, n)
        usage = [torch.zeros(k, dtype=torch.long, device=dev) for k in cfg.codebook_sizes]
        self.history = []
        step = qstep = 0
        placed = not cfg.kmeans_init
        model.train()
        for epoch in range(cfg.epochs):
            warmup = epoch < cfg.warmup_epochs
            if epoch == cfg.warmup_epochs and cfg.kmeans_init:
                self._kmeans_init(model, data, g)
                placed = True
            perm = torch.randperm(n, generator=g).to(dev)
            sums = torch.zeros(3, device=dev)
            batches, restarted = 0, 0
            # the last partial batch is dropped when it would be under half a batch (noisy, tiny steps)
            starts = [s for s in range(0, n, bs) if n - s >= bs // 2 or s == 0]
            for s in starts:
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                x = data[perm[s : s + bs]]
                z = model.encoder(x)
                if (
                    warmup
                ):  # plain autoencoder: the latent space takes shape before codebooks are placed in it
                    recon = F.mse_loss(model.decoder(z), x)
                    quant = recon.new_zeros(())
                else:
                    codes, zq = residual_quantize(z, model.codebooks)
                    recon = F.mse_loss(model.decoder(zq), x)
                    quant = quantization_loss(z, codes, model.codebooks, cfg.beta)
                loss = recon + quant
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                batches += 1
                sums += torch.stack([loss, recon, quant]).detach()
                if warmup:
                    continue
                qstep += 1
                for level, k in enumerate(cfg.codebook_sizes):
                    usage[level] += torch.bincount(codes[:, level], minlength=k)
                if cfg.dead_code_restart and qstep % cfg.restart_every == 0:
                    restarted += self._restart_dead(model, opt, z.detach(), codes, usage, g)
                    for u in usage:
                        u.zero_()
            if batches == 0:
                break
            mean = (sums / batches).tolist()
            self.history.append(
                {
                    "epoch": epoch,
                    "loss": mean[0],
                    "recon": mean[1],
                    "quant": mean[2],
                    "restarted": restarted,
                    "warmup": warmup,
                }
            )

        if not placed:  # max_steps ended training inside the warm-up
            self._kmeans_init(model, data, g)
        model.eval()
        self.model, self.dim = model, dim
        self.train_codes, self.train_residual = self.encode(arr)
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _kmeans_init(self, model: _RQVAE, data: torch.Tensor, g: torch.Generator) -> None:
        """Level by level: k-means on the current encoder's residuals (a sample of ``kmeans_samples`` items)."""
        cfg = self.cfg
        n = data.shape[0]
        idx = torch.randperm(n, generator=g)[: cfg.kmeans_samples].to(data.device)
        with torch.no_grad():
            residual = model.encoder(data[idx])
            for cb in model.codebooks:
                c = kmeans(residual, cb.shape[0], cfg.kmeans_iters, g)
                cb.copy_(c)
                residual = residual - c[nearest_code(residual, c)]

    def _restart_dead(
        self,
        model: _RQVAE,
        opt: torch.optim.Optimizer,
        z: torch.Tensor,
        codes: torch.Tensor,
        usage: list[torch.Tensor],
        g: torch.Generator,
    ) -> int:
        """Move every code unused since the last check onto a random residual of the current batch."""
        restarted = 0
        with torch.no_grad():
            residual = z
            for level, cb in enumerate(model.codebooks):
                dead = torch.nonzero(usage[level] == 0).flatten()
                if dead.numel():
                    pick = torch.randint(residual.shape[0], (dead.numel(),), generator=g).to(z.device)
                    cb[dead] = residual[pick]
                    state = opt.state.get(cb, {})
                    for key in ("exp_avg", "exp_avg_sq", "sum"):
                        if key in state:
                            state[key][dead] = 0
                    restarted += int(dead.numel())
                residual = residual - cb[codes[:, level]]
        return restarted

    # -- encode ---------------------------------------------------------------------------------------------

    def encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, levels) int64 with the frozen codebooks and the norm (n,) of each item's final latent residual."""
        model = self._fitted()
        arr = check_embeddings(emb, dim=self.dim)
        n = arr.shape[0]
        codes = np.empty((n, len(self.codebook_sizes)), dtype=np.int64)
        norms = np.empty(n, dtype=np.float32)
        bs = self.cfg.encode_batch_size
        model.eval()
        with torch.no_grad():
            for s in range(0, n, bs):
                x = torch.from_numpy(np.ascontiguousarray(arr[s : s + bs])).to(self._device)
                z = model.encoder(model.prepare(x))
                c, zq = residual_quantize(z, model.codebooks)
                codes[s : s + bs] = c.cpu().numpy()
                norms[s : s + bs] = (z - zq).norm(dim=1).cpu().numpy()
        return codes, norms

    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        """Decoder output for ``emb`` in the normalised input space (for diagnostics)."""
        model = self._fitted()
        arr = check_embeddings(emb, dim=self.dim)
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(arr)).to(self._device)
            _, zq = residual_quantize(model.encoder(model.prepare(x)), model.codebooks)
            return model.decoder(zq).cpu().numpy()

    # -- persistence ----------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``quantizer.json`` (method, config, dim, codebook sizes) and ``quantizer.safetensors`` (weights)."""
        model = self._fitted()
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        meta = {
            "method": self.method,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "codebook_sizes": list(self.codebook_sizes),
            "config": self.cfg.to_dict(),
        }
        save_quantizer_files(directory, lambda p: save_file(tensors, p), meta)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | None = None) -> Self:
        """Read a quantizer saved by :meth:`save`; ``device`` overrides the saved config's device."""
        d = Path(directory)
        meta = read_quantizer_meta(d)
        if meta.get("method") != cls.method:
            raise ValueError(
                f"{d / QUANTIZER_CONFIG}: method is {meta.get('method')!r}, expected {cls.method!r}"
            )
        cfg = RQVAEConfig.from_dict(meta["config"])
        if device is not None:
            cfg = RQVAEConfig.from_dict({**cfg.to_dict(), "device": device})
        q = cls(cfg)
        model = _RQVAE(int(meta["dim"]), cfg)
        state = load_file(str(d / QUANTIZER_WEIGHTS))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"{d / QUANTIZER_WEIGHTS}: weights do not match {QUANTIZER_CONFIG}: {e}"
            ) from None
        model.to(q._device).eval()
        q.model, q.dim = model, int(meta["dim"])
        return q
