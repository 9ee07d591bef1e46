"""SASRec (Kang & McAuley, 2018): a causal self-attention model over item-id sequences, the sequential baseline.

Items are embedded by id (row + 1; 0 is padding); a stack of pre-norm causal transformer blocks reads the last
``max_len`` purchases and the output at each position scores every item by a dot product with the (shared) item
embeddings. Training: full-softmax cross-entropy of the next item at every position of the users' training
sequences; early-stopped on validation recall@10. It reads no query: on the search task it ranks from the history
alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onesearch.cascade.sources import Catalog
from onesearch.metrics import target_ranks
from onesearch.retrieval import Requests, Retrieved, top_k


@dataclass(frozen=True)
class SASRecConfig:
    """Settings of the SASRec baseline."""

    d_model: int = 64
    """Embedding width."""
    n_heads: int = 2
    """Attention heads."""
    layers: int = 2
    """Transformer blocks."""
    max_len: int = 50
    """Most recent purchases read."""
    dropout: float = 0.2
    """Dropout on embeddings, attention and residual branches."""
    batch_size: int = 128
    """Sequences per step."""
    lr: float = 1e-3
    """Adam learning rate."""
    epochs: int = 200
    """Maximum epochs."""
    max_minutes: float = 10.0
    """Training time cap (0 = none)."""
    patience: int = 5
    """Evaluations without a better validation recall@10 before stopping."""
    eval_every: int = 2
    """Evaluate every this many epochs."""
    seed: int = 0
    """Seed of initialisation, shuffling and dropout."""


class SASRecModel(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item = nn.Embedding(n_items + 1, cfg.d_model, padding_idx=0)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, 4 * cfg.d_model, cfg.dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.item.weight, std=0.02)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) item rows + 1 (0 = padding, left-padded) → (B, L, d) hidden states."""
        B, L = seq.shape
        real = seq > 0
        x = self.item(seq) * self.cfg.d_model**0.5 + self.pos.weight[:L]
        x = self.drop(x) * real.unsqueeze(-1)
        # a position sees the real positions up to itself, and always itself (padding rows then stay finite)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        allowed = (torch.ones(L, L, dtype=torch.bool, device=seq.device).tril() & real[:, None, :]) | eye
        blocked = (~allowed).repeat_interleave(self.cfg.n_heads, dim=0)  # (B·heads, L, L)
        h = self.blocks(x, mask=blocked)
        return self.ln(h) * real.unsqueeze(-1)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight[1:].T


def _left_pad(seqs: list[np.ndarray], L: int) -> np.ndarray:
    out = np.zeros((len(seqs), L), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-L:]
        if len(s):
            out[i, L - len(s) :] = s
    return out


class SASRec:
    """The ``sasrec`` system."""

    name = "sasrec"

    def __init__(self, catalog: Catalog, cfg: SASRecConfig | None = None):
        self.catalog, self.cfg = catalog, cfg or SASRecConfig()
        torch.manual_seed(self.cfg.seed)
        self.model = SASRecModel(catalog.n, self.cfg)
        self.minutes = 0.0

    def _seq(self, histories: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(_left_pad([self.catalog.rows(h) + 1 for h in histories], self.cfg.max_len))

    def fit(self, sequences: list[np.ndarray], valid: Requests, valid_target: np.ndarray) -> dict:
        """Train on item-id ``sequences`` (each user's training purchases, oldest first)."""
        cfg = self.cfg
        rows = [self.catalog.rows(s) + 1 for s in sequences]
        rows = [r for r in rows if len(r) >= 2]
        if not rows:
            raise ValueError("SASRec: no training sequence has two or more purchases")
        data = torch.from_numpy(_left_pad(rows, cfg.max_len + 1))  # inputs [:-1], targets [1:]
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
        rng = np.random.default_rng(cfg.seed)
        t0 = time.perf_counter()
        best, best_state, bad, history = -1.0, None, 0, []
        for epoch in range(cfg.epochs):
            self.model.train()
            perm = rng.permutation(len(data))
            total = 0.0
            for s in range(0, len(perm), cfg.batch_size):
                b = data[perm[s : s + cfg.batch_size]]
                inp, tgt = b[:, :-1], b[:, 1:]
                h = self.model(inp)
                keep = (tgt > 0) & (inp > 0)
                loss = F.cross_entropy(self.model.scores(h[keep]), tgt[keep] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            out_of_time = cfg.max_minutes > 0 and (time.perf_counter() - t0) / 60 >= cfg.max_minutes
            if (epoch + 1) % cfg.eval_every == 0 or out_of_time or epoch == cfg.epochs - 1:
                got = self.retrieve(valid, 10)
                r = target_ranks(got.items, valid_target)
                score = float(((r >= 1) & (r <= 10)).mean())
                history.append({"epoch": epoch + 1, "loss": total, "val_recall@10": score})
                print(f"[sasrec] epoch {epoch + 1} val recall@10 {score:.4f}", file=sys.stderr, flush=True)
                if score > best:
                    best, bad = score, 0
                    best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
                else:
                    bad += 1
                if bad >= cfg.patience or out_of_time:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.minutes = (time.perf_counter() - t0) / 60
        return {
            "val_recall@10": best,
            "epochs": history[-1]["epoch"] if history else 0,
            "minutes": self.minutes,
        }

    @torch.no_grad()
    def retrieve(self, req: Requests, k: int) -> Retrieved:
        self.model.eval()
        items, scores = [], []
        for s in range(0, req.size, 512):
            seq = self._seq(req.history[s : s + 512])
            h = self.model(seq)[:, -1]
            sc = self.model.scores(h).numpy()
            sc[(seq[:, -1] == 0).numpy()] = self.catalog.pop  # no history: fall back to popularity
            got = top_k(sc, k, self.catalog.item_ids)
            items.append(got.items)
            scores.append(got.scores)
        return Retrieved(np.concatenate(items), np.concatenate(scores))
