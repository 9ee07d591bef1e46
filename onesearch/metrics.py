"""Ranking metrics with one relevant item per request (leave-one-out), shared by every retriever.

``rank`` is the 1-based position of the target in a system's ranked list, 0 when it is absent. Then

- ``recall@k`` (= hit rate, HR@k): mean of ``1 ≤ rank ≤ k``;
- ``ndcg@k``: mean of ``1 / log2(rank + 1)`` where ``1 ≤ rank ≤ k`` (the ideal DCG of one relevant item is 1);
- ``mrr@k``: mean of ``1 / rank`` where ``1 ≤ rank ≤ k``.
"""

from __future__ import annotations

import numpy as np


def target_ranks(items: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(B, K) ranked item ids/rows and (B,) targets → (B,) 1-based rank of the target, 0 when absent."""
    items, target = np.asarray(items), np.asarray(target)
    if items.ndim != 2 or target.shape != (items.shape[0],):
        raise ValueError(f"items must be (B, K) and target (B,), got {items.shape} and {target.shape}")
    hit = items == target[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, 0)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (5, 10), mrr_k: int = 10) -> dict[str, float]:
    """recall@k and ndcg@k for each k, and mrr@mrr_k, from 1-based ranks (0 = miss)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks to average (empty evaluation set)")
    out: dict[str, float] = {}
    for k in ks:
        hit = (r >= 1) & (r <= k)
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0).mean())
    hit = (r >= 1) & (r <= mrr_k)
    out[f"mrr@{mrr_k}"] = float(np.where(hit, 1.0 / np.maximum(r, 1), 0.0).mean())
    return out
