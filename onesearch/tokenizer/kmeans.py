"""Residual k-means with an optional balanced last level and an optimised product-quantised (OPQ) level.

``RQKMeansQuantizer`` fits L codebooks one after another: level 0 clusters the (L2-normalised) embeddings,
level l clusters what level l-1 left over (the residual). Residuals are nearly isotropic, and plain k-means on
them lets one centroid near the origin swallow most items (on Scientific: 1,890 of 4,344 items on one code of
the third level, 40% of items colliding). ``balanced`` fits the last level (``last``) or every level after the
first (``residual``) with capacity-constrained assignment, so no code holds more than ``ceil(slack * n / k)``
items; level 0, which carries the core attributes, stays unconstrained. Balancing applies while fitting: the
training items keep their balanced codes (``train_codes``), and :meth:`RQKMeansQuantizer.encode` of new items
takes the nearest code with the codebooks frozen. With ``pq_subspaces = M > 0`` the final residual is
then product-quantised after a learned rotation (OPQ, Ge et al. 2013): the rotated residual is cut into M
sub-vectors, each quantised by its own k-means codebook, giving M more codes that separate items the residual
levels left together. All maths is numpy float32; every random choice comes from the seed passed to ``fit``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
from safetensors.numpy import load_file, save_file

from onesearch.tokenizer.base import (
    QUANTIZER_WEIGHTS,
    check_embeddings,
    read_quantizer_meta,
    save_quantizer_files,
)


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared L2 distances (n, k) between rows of ``x`` and rows of ``c``."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), with a few candidates per step (greedy variant)."""
    n = x.shape[0]
    centers = np.empty((k, x.shape[1]), dtype=x.dtype)
    centers[0] = x[rng.integers(n)]
    closest = sq_dists(x, centers[:1])[:, 0]
    n_trials = 2 + int(math.log(k))
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: repeat points
            centers[i:] = x[rng.integers(n, size=k - i)]
            break
        cand = rng.choice(n, size=n_trials, p=closest / total)
        d_cand = np.minimum(closest[None, :], sq_dists(x[cand], x).astype(closest.dtype))
        best = int(np.argmin(d_cand.sum(1)))
        centers[i] = x[cand[best]]
        closest = d_cand[best]
    return centers


def balanced_assign(d: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each row of the distance matrix ``d`` (n, k) to a column, at most ``capacity`` rows per column.

    Regret-ordered greedy: rows with the most to lose (largest gap between their best and second-best
    distance) choose first, each taking its nearest column that still has room.
    """
    n, k = d.shape
    if capacity * k < n:
        raise ValueError(f"balanced_assign: capacity {capacity} x {k} codes cannot hold {n} items")
    prefs = np.argsort(d, axis=1, kind="stable")
    if k > 1:
        part = np.partition(d, 1, axis=1)
        regret = part[:, 1] - part[:, 0]
    else:
        regret = np.zeros(n)
    room = np.full(k, capacity, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for i in np.argsort(-regret, kind="stable"):
        row = prefs[i]
        j = 0
        while room[row[j]] <= 0:
            j += 1
        room[row[j]] -= 1
        out[i] = row[j]
    return out


def kmeans(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    n_iter: int = 50,
    capacity: int | None = None,
    init: np.ndarray | None = None,
    tol: float = 1e-6,
    balanced_iters: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding.

    With ``capacity``, the unconstrained Lloyd steps (at most ``n_iter``, fewer on convergence) are followed by
    ``balanced_iters`` steps whose assignment is :func:`balanced_assign`, and the returned assignment is
    balanced too. Returns (centroids (k, d), assignment (n,)) with the assignment made against the returned
    centroids. An emptied cluster is re-seeded with the point farthest from its centroid; with fewer points
    than k, the extra centroids duplicate points.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = kmeans_pp_init(x, k, rng) if init is None else init.astype(np.float32).copy()
    rows = np.arange(x.shape[0])

    def assign_to(c: np.ndarray, constrained: bool) -> tuple[np.ndarray, np.ndarray]:
        d = sq_dists(x, c)
        return (balanced_assign(d, capacity) if constrained else d.argmin(1)), d

    def update(c: np.ndarray, a: np.ndarray, d: np.ndarray) -> np.ndarray:
        c = c.copy()
        counts = np.bincount(a, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, a, x)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = np.flatnonzero(~nonempty)
        if empty.size:
            far = np.argsort(-d[rows, a])[: empty.size]
            c[empty[: far.size]] = x[far]
        return c

    prev = np.inf
    for _ in range(max(1, n_iter)):
        a, d = assign_to(c, False)
        inertia = float(d[rows, a].sum())
        c = update(c, a, d)
        if prev - inertia <= tol * max(prev, 1e-12):
            break
        prev = inertia
    if capacity is not None:
        for _ in range(balanced_iters):
            a, d = assign_to(c, True)
            c = update(c, a, d)
    a, _ = assign_to(c, capacity is not None)
    return c, a


def spread_collisions(codes: np.ndarray, d_last: np.ndarray) -> np.ndarray:
    """New last-level codes for (n, L) ``codes`` given each item's squared distance to every last-level code
    (n, K): within each group of items with the same L codes, the item nearest the group's code keeps it and each
    other one (nearest first) takes its nearest code that no item with the same first L - 1 codes holds. Once a
    prefix has all K codes taken, its remaining movers are dealt out over its codes, each to the one that the
    fewest of the prefix's items hold (nearest first among equals) when that holds at least two fewer, so a group of g identical items ends with at
    most ceil(g / K) of them on one ID: the disambiguation level's width, and with it the decoder's last softmax
    and the trie's last mask, stays bounded by the group size over K instead of the group size (items with no
    behaviour at all share one embedding, and on a 1M-item synthetic world 3,652 of them shared one ID)."""
    codes = np.asarray(codes, dtype=np.int64)
    last = codes[:, -1].copy()
    n, k = d_last.shape
    _, full, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    full = full.reshape(-1)
    movers = np.flatnonzero(counts[full] > 1)
    if movers.size == 0:
        return last
    _, prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix = prefix.reshape(-1)
    used: dict[int, set[int]] = {}
    for p, c in zip(prefix.tolist(), last.tolist(), strict=True):
        used.setdefault(p, set()).add(c)
    own = d_last[np.arange(n), last]
    # within a group, nearest to the shared code first: it stays, the others move in that order
    order = movers[np.lexsort((movers, own[movers], full[movers]))]
    first = np.r_[True, full[order][1:] != full[order][:-1]]
    held: dict[int, np.ndarray] = {}  # a full prefix: how many of its items hold each code
    for i, keep in zip(order.tolist(), first.tolist(), strict=True):
        if keep:
            continue
        p = prefix[i]
        taken = used[p]
        pref = np.argsort(d_last[i], kind="stable")
        if len(taken) < k:
            for c in pref.tolist():
                if c not in taken:
                    last[i] = c
                    taken.add(c)
                    break
            continue
        if p not in held:
            held[p] = np.bincount(last[prefix == p], minlength=k)
        count = held[p]
        c = int(pref[np.argmin(count[pref])])  # the least-held code, nearest first among equals
        if count[c] + 1 < count[last[i]]:  # a move that leaves both codes less crowded than before
            count[last[i]] -= 1
            count[c] += 1
            last[i] = c
    return last


@dataclass(frozen=True)
class RQKMeansConfig:
    """Residual k-means with optional balanced last level and OPQ level."""

    codebook_sizes: tuple[int, ...] = (256, 256, 256)
    """Codes per residual k-means level, coarse to fine."""
    balanced: str = "none"
    """Balanced (capacity-constrained) assignment while fitting: none, last (level), or residual (levels >= 1)."""
    balance_slack: float = 1.0
    """Capacity of a balanced code is ceil(slack * items / codes)."""
    pq_subspaces: int = 0
    """Sub-vectors of the OPQ level (0 = no OPQ level); each adds one code."""
    pq_codes: int = 256
    """Codes per OPQ sub-vector."""
    pq_balanced: bool = True
    """Fit the OPQ sub-codebooks with balanced assignment."""
    opq_iters: int = 8
    """Alternations of rotation and sub-codebook updates when fitting OPQ."""
    n_iter: int = 40
    """Lloyd iterations per k-means fit."""
    spread_collisions: bool = False
    """After fitting, give every item that shares all its codes with another the nearest code of the last level
    that no item of its prefix (all earlier codes) holds; the one nearest the shared code keeps it. Earlier levels
    do not change, so purity does not either; new items (encode) still take the plain nearest code."""
    normalize: bool = True
    """L2-normalise embeddings before quantising."""
    max_fit_points: int = 65536
    """Fit the codebooks (and the OPQ rotation) on at most this many items, drawn from the catalogue with the
    fit's seed; every item is then assigned with the codebooks fixed (balanced levels with capacity for the whole
    catalogue), so ``train_codes`` still cover and balance all items. Fitting then costs the same at any catalogue
    size and only the assignment grows, linearly (faiss's k-means samples the same way: 256 points per centroid
    of 256 codes). 0 = fit on every item."""

    def __post_init__(self) -> None:
        if not self.codebook_sizes or any(int(s) < 1 for s in self.codebook_sizes):
            raise ValueError(f"RQKMeansConfig.codebook_sizes must be positive, got {self.codebook_sizes}")
        if self.pq_subspaces < 0 or self.pq_codes < 1:
            raise ValueError("RQKMeansConfig.pq_subspaces must be >= 0 and pq_codes >= 1")
        if self.balanced not in ("none", "last", "residual"):
            raise ValueError(f"RQKMeansConfig.balanced must be none, last or residual, got {self.balanced!r}")
        if self.balance_slack < 1.0:
            raise ValueError(f"RQKMeansConfig.balance_slack must be >= 1, got {self.balance_slack}")
        if self.max_fit_points < 0:
            raise ValueError(f"RQKMeansConfig.max_fit_points must be >= 0, got {self.max_fit_points}")


class RQKMeansQuantizer:
    """Residual k-means (+ balanced last level, + OPQ level); implements :class:`~onesearch.tokenizer.base.Quantizer`."""

    def __init__(self, cfg: RQKMeansConfig | None = None, method: str = "rqkmeans") -> None:
        self.cfg = cfg or RQKMeansConfig()
        self.method = method
        self.codebooks: list[np.ndarray] = []
        self.rotation: np.ndarray | None = None
        self.pq_codebooks: list[np.ndarray] = []
        self.dim: int | None = None
        self.train_codes: np.ndarray | None = None
        """Codes of the fitted items as assigned while fitting (balanced where configured)."""
        self.train_residual: np.ndarray | None = None
        """Norm of each fitted item's final residual (orders items within a collision group)."""

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (*map(int, self.cfg.codebook_sizes), *([int(self.cfg.pq_codes)] * self.cfg.pq_subspaces))

    def _prep(self, emb: np.ndarray) -> np.ndarray:
        x = check_embeddings(emb, dim=self.dim)
        if self.cfg.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    def fit(self, emb: np.ndarray, seed: int = 0) -> Self:
        x = check_embeddings(emb)
        if x.shape[0] < 2:
            raise ValueError(f"{self.method}: need at least 2 items to fit, got {x.shape[0]}")
        self.dim = x.shape[1]
        x = self._prep(x)
        rng = np.random.default_rng(seed)
        n = x.shape[0]
        m = self.cfg.max_fit_points
        sampled = 0 < m < n
        fit_x = x[np.sort(rng.choice(n, m, replace=False))] if sampled else x
        residual = fit_x.copy()
        self.codebooks = []
        codes = []
        for level, k in enumerate(self.cfg.codebook_sizes):
            k = int(k)
            cap = self._capacity(residual.shape[0], k) if self._balanced(level) else None
            c, a = kmeans(residual, k, rng, self.cfg.n_iter, capacity=cap)
            self.codebooks.append(c)
            codes.append(a)
            residual -= c[a]
        self.rotation, self.pq_codebooks = None, []
        if self.cfg.pq_subspaces:
            pq_codes, residual = self._fit_opq(residual, rng)
            codes.extend(pq_codes)
        if sampled:  # every item, with the codebooks fitted on the sample
            train_codes, residual = self._assign(x, balanced=True)
        else:
            train_codes = np.stack(codes, 1).astype(np.int64)
        self.train_codes = train_codes
        if self.cfg.spread_collisions:
            # the last level's input and codebook: the last OPQ sub-vector, or the last residual level
            if self.cfg.pq_subspaces:
                sl, book = self._split(self.cfg.pq_subspaces)[-1], self.pq_codebooks[-1]
            else:
                sl, book = slice(None), self.codebooks[-1]
            x_last = residual[:, sl] + book[self.train_codes[:, -1]]
            self.train_codes[:, -1] = spread_collisions(self.train_codes, sq_dists(x_last, book))
            residual[:, sl] = x_last - book[self.train_codes[:, -1]]
        self.train_residual = np.linalg.norm(residual, axis=1)
        return self

    def _balanced(self, level: int) -> bool:
        last = len(self.cfg.codebook_sizes) - 1
        return (self.cfg.balanced == "residual" and level > 0) or (
            self.cfg.balanced == "last" and level == last
        )

    def _capacity(self, n: int, k: int) -> int:
        return math.ceil(self.cfg.balance_slack * n / k)

    def _split(self, m: int) -> list[slice]:
        bounds = np.linspace(0, self.dim, m + 1).round().astype(int)
        return [slice(bounds[i], bounds[i + 1]) for i in range(m)]

    def _fit_opq(self, r: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """Fit rotation + sub-codebooks on residuals ``r``; return the training codes and final residuals."""
        m = self.cfg.pq_subspaces
        if m > self.dim:
            raise ValueError(f"{self.method}: pq_subspaces {m} exceeds the embedding dimension {self.dim}")
        parts = self._split(m)
        k = int(self.cfg.pq_codes)
        cap = self._capacity(r.shape[0], k) if self.cfg.pq_balanced else None
        rot = np.eye(self.dim, dtype=np.float32)
        books: list[np.ndarray | None] = [None] * m
        assign: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * m
        for it in range(max(1, self.cfg.opq_iters) + 1):
            xr = r @ rot
            recon = np.empty_like(xr)
            for j, sl in enumerate(parts):
                iters = self.cfg.n_iter if it == 0 else max(5, self.cfg.n_iter // 4)
                books[j], assign[j] = kmeans(xr[:, sl], k, rng, iters, capacity=cap, init=books[j])
                recon[:, sl] = books[j][assign[j]]
            if it == max(1, self.cfg.opq_iters):
                break  # the last pass only refits the sub-codebooks on the final rotation
            # Orthogonal Procrustes: the rotation that best maps r onto the PQ reconstruction.
            u, _, vt = np.linalg.svd(r.T @ recon, full_matrices=False)
            rot = (u @ vt).astype(np.float32)
        self.rotation = rot
        self.pq_codebooks = [b for b in books if b is not None]
        return list(assign), xr - recon

    def encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.codebooks:
            raise RuntimeError(f"{self.method}: encode called before fit (or load)")
        codes, residual = self._assign(self._prep(emb), balanced=False)
        return codes, np.linalg.norm(residual, axis=1)

    def _assign(self, x: np.ndarray, balanced: bool) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, levels) of prepared embeddings ``x`` with the codebooks fixed, and the final residuals: the
        nearest code, or with ``balanced`` the capacity-constrained assignment on the levels fitted that way
        (capacity for these n items)."""
        n = x.shape[0]
        residual = x.copy()
        codes = []
        for level, c in enumerate(self.codebooks):
            d = sq_dists(residual, c)
            cap = self._capacity(n, c.shape[0]) if balanced and self._balanced(level) else None
            a = d.argmin(1) if cap is None else balanced_assign(d, cap)
            del d
            codes.append(a)
            residual -= c[a]
        if self.rotation is not None:
            xr = residual @ self.rotation
            recon = np.empty_like(xr)
            for j, sl in enumerate(self._split(len(self.pq_codebooks))):
                book = self.pq_codebooks[j]
                d = sq_dists(xr[:, sl], book)
                cap = self._capacity(n, book.shape[0]) if balanced and self.cfg.pq_balanced else None
                a = d.argmin(1) if cap is None else balanced_assign(d, cap)
                del d
                codes.append(a)
                recon[:, sl] = book[a]
            residual = xr - recon
        return np.stack(codes, 1).astype(np.int64), residual

    def save(self, directory: str | Path) -> None:
        if not self.codebooks:
            raise RuntimeError(f"{self.method}: nothing to save before fit")
        tensors = {f"level{i}": c for i, c in enumerate(self.codebooks)}
        if self.rotation is not None:
            tensors["rotation"] = self.rotation
            tensors.update({f"pq{j}": c for j, c in enumerate(self.pq_codebooks)})
        meta = {
            "class": "RQKMeansQuantizer",
            "method": self.method,
            "dim": self.dim,
            "config": asdict(self.cfg),
        }
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_quantizer_files(directory, lambda p: save_file(arrays, p), meta)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        d = Path(directory)
        meta = read_quantizer_meta(d)
        cfg = meta["config"]
        cfg["codebook_sizes"] = tuple(cfg["codebook_sizes"])
        q = cls(RQKMeansConfig(**cfg), method=meta["method"])
        q.dim = meta["dim"]
        t = load_file(str(d / QUANTIZER_WEIGHTS))
        q.codebooks = [t[f"level{i}"] for i in range(len(q.cfg.codebook_sizes))]
        if "rotation" in t:
            q.rotation = t["rotation"]
            q.pq_codebooks = [t[f"pq{j}"] for j in range(q.cfg.pq_subspaces)]
        return q
