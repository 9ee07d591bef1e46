"""The trie of valid semantic IDs as per-level lookup tables.

Level ``l`` of the trie has one node per distinct prefix of length ``l`` (level 0: the root alone). Two tables per
level make constrained decoding a pair of tensor lookups, batched over requests and beams:

- ``valid[l]``: (nodes_l, V_l) bool; row ``node`` is the mask of codes that extend that prefix to a real item.
- ``keys[l]`` / ``child[l]``: the sorted ``node · V_l + code`` of every edge, and the node it leads to (at the last
  level: the item's row in the SID table); ``torch.searchsorted`` follows the edges chosen by the beams.

Memory is ``Σ_l nodes_l · V_l`` bytes for the masks plus 12 bytes per edge: for 12k items and 256-code levels
about 3 MB; for 1M items about 260 MB (the widest level dominates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class SIDTrie:
    """Per-level tables of the valid-ID trie (see the module docstring)."""

    codebook_sizes: tuple[int, ...]
    valid: list[Tensor]
    keys: list[Tensor]
    child: list[Tensor]
    n_items: int

    @classmethod
    def build(cls, codes: np.ndarray, codebook_sizes: tuple[int, ...]) -> SIDTrie:
        """Trie of the rows of ``codes`` (n_items, L); the leaf of row i is i. Rows must be unique."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ValueError(f"codes must be a non-empty (n_items, levels) array, got shape {codes.shape}")
        n, L = codes.shape
        if len(codebook_sizes) != L:
            raise ValueError(f"{len(codebook_sizes)} codebook sizes for {L} levels")
        if len(np.unique(codes, axis=0)) != n:
            raise ValueError("codes are not unique: a trie leaf would hold two items (disambiguate first)")
        node = np.zeros(n, dtype=np.int64)
        n_nodes = 1
        valid, keys, child = [], [], []
        for lv in range(L):
            V = int(codebook_sizes[lv])
            key = node * V + codes[:, lv]
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            mask = np.zeros((n_nodes, V), dtype=bool)
            mask[uniq // V, uniq % V] = True
            nxt = np.arange(len(uniq)) if lv < L - 1 else first  # leaf → SID-table row (rows are unique)
            valid.append(torch.from_numpy(mask))
            keys.append(torch.from_numpy(uniq))
            child.append(torch.from_numpy(nxt.astype(np.int64)))
            node, n_nodes = inv.reshape(-1), len(uniq)
        return cls(tuple(int(v) for v in codebook_sizes), valid, keys, child, n)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def nodes_per_level(self) -> list[int]:
        return [int(v.shape[0]) for v in self.valid]

    def to(self, device: torch.device | str) -> SIDTrie:
        mv = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return SIDTrie(self.codebook_sizes, mv(self.valid), mv(self.keys), mv(self.child), self.n_items)

    def mask(self, level: int, node: Tensor) -> Tensor:
        """(…) node ids (-1 = a dead path) → (…, V_level) bool mask of valid next codes."""
        m = self.valid[level][node.clamp_min(0)]
        return m & (node >= 0).unsqueeze(-1)

    def step(self, level: int, node: Tensor, code: Tensor) -> Tensor:
        """Follow edges: node ids and codes (same shape) → next node ids (item rows at the last level), -1 if none."""
        V = self.codebook_sizes[level]
        key = node.clamp_min(0) * V + code
        keys = self.keys[level]
        pos = torch.searchsorted(keys, key.reshape(-1)).reshape(key.shape).clamp_max(len(keys) - 1)
        hit = (keys[pos] == key) & (node >= 0)
        return torch.where(hit, self.child[level][pos], torch.full_like(key, -1))
