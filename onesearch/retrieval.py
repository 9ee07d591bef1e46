"""One interface for every retriever (generator, cascade, SASRec, popularity) and the side-by-side metrics.

A retriever answers :class:`Requests` — per request an optional query and the user's purchase history as item
ids, oldest first — with :class:`Retrieved`: the top-K item ids and scores, best first, -1 where it has fewer.

Item buckets (:func:`item_buckets`) come from the training interactions: the items with at least one are ranked
by count and the top 20% of them are ``head``, the rest ``tail``; items with none are ``cold``. On top of
:mod:`onesearch.metrics`, :func:`side_by_side_metrics` reports recall (= HR) on requests whose target is a tail or
a cold item, and ``tail_exposure@10``: the share of all top-10 slots filled with tail or cold items.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.data.splits import leave_one_out
from onesearch.metrics import ranking_metrics, target_ranks

HEAD, TAIL, COLD = 0, 1, 2
BUCKET_NAMES = ("head", "tail", "cold")


class Requests(NamedTuple):
    """B requests."""

    query: list[str | None]
    """Query text per request; None for a recommendation request."""
    history: list[np.ndarray]
    """Purchased item ids per request, oldest first (may be empty)."""

    @property
    def size(self) -> int:
        return len(self.history)

    def take(self, idx: np.ndarray | list[int]) -> Requests:
        return Requests([self.query[i] for i in idx], [self.history[i] for i in idx])


class Retrieved(NamedTuple):
    items: np.ndarray
    """(B, K) int64 item ids, best first; -1 where there are fewer than K."""
    scores: np.ndarray
    """(B, K) float32 scores (higher is better); -inf where there is no item."""


class Retriever(Protocol):
    name: str

    def retrieve(self, requests: Requests, k: int) -> Retrieved: ...


def top_k(scores: np.ndarray, k: int, ids: np.ndarray) -> Retrieved:
    """Best ``k`` of (B, n) scores over the items ``ids`` (n,), ties broken by the lower column."""
    B, n = scores.shape
    kk = min(k, n)
    cols = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    out_s = np.take_along_axis(scores, cols, 1).astype(np.float32)
    out_i = ids[cols]
    if kk < k:
        out_i = np.pad(out_i, ((0, 0), (0, k - kk)), constant_values=-1)
        out_s = np.pad(out_s, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return Retrieved(out_i.astype(np.int64), out_s)


def item_buckets(item_ids: np.ndarray, train_item_ids: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Bucket (HEAD, TAIL, COLD) of each of ``item_ids`` from the item ids of the training interactions."""
    ids, counts = np.unique(np.asarray(train_item_ids, dtype=np.int64), return_counts=True)
    pos = {int(i): c for i, c in zip(ids, counts, strict=True)}
    c = np.array([pos.get(int(i), 0) for i in item_ids])
    out = np.full(len(item_ids), COLD, dtype=np.int8)
    seen = np.flatnonzero(c > 0)
    out[seen] = TAIL
    n_head = int(round(head_share * len(seen)))
    if n_head:
        order = seen[np.lexsort((np.asarray(item_ids)[seen], -c[seen]))]  # by count, ties by id
        out[order[:n_head]] = HEAD
    return out


def side_by_side_metrics(
    retrieved: np.ndarray, target: np.ndarray, bucket_of: dict[int, int] | np.ndarray, item_ids: np.ndarray
) -> dict[str, float | None]:
    """hr@10, ndcg@10, mrr@10, hr@50, tail_hr@10, cold_hr@10, tail_exposure@10 for (B, K≥50) retrieved ids, and
    the first four again over the requests whose target is not cold (``warm_hr@10``, ...), with the count of cold
    targets (``cold_requests``): a system that finds cold items from text must not look better only for them.

    ``bucket_of`` is the bucket per item of ``item_ids`` (same order). A bucket with no target gives None.
    """
    ranks, hit, tb, slots = _bucketed(retrieved, target, bucket_of, item_ids, 10)
    names = {"recall@10": "hr@10", "ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@50": "hr@50"}
    base = ranking_metrics(ranks, ks=(10, 50), mrr_k=10)
    out: dict[str, float | None] = {v: base[k] for k, v in names.items()}
    warm = tb != COLD
    wm = ranking_metrics(ranks[warm], ks=(10, 50), mrr_k=10) if warm.any() else {}
    out |= {f"warm_{v}": wm.get(k) for k, v in names.items()}
    out["cold_requests"] = int((~warm).sum())
    for name, b in (("tail", TAIL), ("cold", COLD)):
        sel = tb == b
        out[f"{name}_hr@10"] = float(hit[sel].mean()) if sel.any() else None
    out["tail_exposure@10"] = float(((slots == TAIL) | (slots == COLD)).mean()) if slots.size else 0.0
    return out


def _bucketed(
    retrieved: np.ndarray, target: np.ndarray, bucket_of, item_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the bucket metrics read: the target ranks, whether each target is in the top ``k``, each target's
    bucket (COLD when unknown), and the bucket of every filled top-``k`` slot (-1 for an unknown item)."""
    lookup = {int(i): int(b) for i, b in zip(item_ids, np.asarray(bucket_of), strict=True)}
    ranks = target_ranks(retrieved, target)
    hit = (ranks >= 1) & (ranks <= k)
    tb = np.array([lookup.get(int(t), COLD) for t in target], dtype=np.int64)
    top = np.asarray(retrieved)[:, :k].reshape(-1)
    slots = np.array([lookup.get(int(i), -1) for i in top[top >= 0]], dtype=np.int64)
    return ranks, hit, tb, slots


def hr_curve(retrieved: np.ndarray, target: np.ndarray, max_k: int = 50) -> list[float]:
    """HR@K for K = 1..max_k."""
    ranks = target_ranks(retrieved, target)
    return [float(((ranks >= 1) & (ranks <= k)).mean()) for k in range(1, max_k + 1)]


def split_requests(ds, task: str) -> dict[str, tuple[Requests, np.ndarray]]:
    """Requests and target item ids of the leave-one-out splits of ``task`` (recommend or search).

    Same protocol as the generator's examples (:mod:`onesearch.model.data`): recommend trains on every prefix of
    each user's training purchases; search uses the split search log with the purchases before each request.
    """
    buys = ds.interactions.filter(pl.col(S.EVENT) == "purchase")
    if task == "recommend":
        split = leave_one_out(buys)
        per_user = split.group_by(S.USER_ID, maintain_order=True).agg(
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "train").alias("train"),
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "valid").first().alias("valid"),
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "test").first().alias("test"),
        )
        out: dict[str, tuple[list, list]] = {"train": ([], []), "valid": ([], []), "test": ([], [])}
        for tr, va, te in per_user.select("train", "valid", "test").iter_rows():
            seq = np.asarray(tr, dtype=np.int64)
            for t in range(1, len(seq)):
                out["train"][0].append(seq[:t])
                out["train"][1].append(seq[t])
            if va is not None and te is not None and len(seq):
                out["valid"][0].append(seq)
                out["valid"][1].append(va)
                out["test"][0].append(np.append(seq, va))
                out["test"][1].append(te)
        return {k: (Requests([None] * len(h), h), np.asarray(t, dtype=np.int64)) for k, (h, t) in out.items()}
    if task != "search":
        raise ValueError(f"task must be recommend or search, got {task!r}")
    if ds.search_log is None:
        raise ValueError(f"dataset {ds.name!r} has no search log; use --task recommend")
    seqs = {
        u: np.asarray(r, dtype=np.int64)
        for u, r in buys.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
        .group_by(S.USER_ID, maintain_order=True)
        .agg(S.ITEM_ID)
        .iter_rows()
    }
    log = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP))
    empty = np.zeros(0, dtype=np.int64)
    res = {}
    for name in ("train", "valid", "test"):
        part = log.filter(pl.col(S.SPLIT) == name)
        hist = [
            seqs.get(u, empty)[:p]
            for u, p in zip(part[S.USER_ID].to_list(), part[S.POSITION].to_list(), strict=True)
        ]
        res[name] = (Requests(part[S.QUERY].to_list(), hist), part[S.ITEM_ID].to_numpy().astype(np.int64))
    return res


def training_sequences(train: pl.DataFrame) -> list[np.ndarray]:
    """Each user's purchases in ``train`` (:func:`onesearch.data.splits.training_purchases`), oldest first."""
    seqs = train.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True).group_by(S.USER_ID, maintain_order=True)
    return [np.asarray(s, dtype=np.int64) for s in seqs.agg(S.ITEM_ID)[S.ITEM_ID].to_list()]


def holdout_fold(ds, task: str, train: pl.DataFrame) -> tuple[pl.DataFrame, Requests, np.ndarray]:
    """A time holdout inside the training period, for models whose features count purchases (the cascade ranker).

    Returns the purchases before each user's last training request and those last requests with their targets:
    features computed from the returned purchases never include the request's own answer, as they would if the
    ranker learned from requests drawn from the same purchases its popularity and co-purchase counts come from.
    recommend: the last training purchase of each user with two or more; search: each user's last training-split
    search request.
    """
    ordered = train.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
    idx = pl.int_range(pl.len()).over(S.USER_ID)
    if task == "recommend":
        n = pl.len().over(S.USER_ID)
        fold = ordered.filter((n < 2) | (idx < n - 1))
        hist, tgt = [], []
        for seq in training_sequences(train):
            if len(seq) >= 2:
                hist.append(seq[:-1])
                tgt.append(seq[-1])
        return fold, Requests([None] * len(hist), hist), np.asarray(tgt, dtype=np.int64)
    log = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP)).filter(pl.col(S.SPLIT) == "train")
    last = log.group_by(S.USER_ID, maintain_order=True).agg(pl.all().last())
    cut = last.select(S.USER_ID, pl.col(S.POSITION).alias("_cut"))
    fold = ordered.join(cut, on=S.USER_ID, how="left", maintain_order="left")
    fold = fold.filter(pl.col("_cut").is_null() | (idx < pl.col("_cut"))).drop("_cut")
    seqs = dict(
        zip(fold[S.USER_ID].unique(maintain_order=True).to_list(), training_sequences(fold), strict=True)
    )
    empty = np.zeros(0, dtype=np.int64)
    hist = [
        seqs.get(u, empty)[:p]
        for u, p in zip(last[S.USER_ID].to_list(), last[S.POSITION].to_list(), strict=True)
    ]
    return fold, Requests(last[S.QUERY].to_list(), hist), last[S.ITEM_ID].to_numpy().astype(np.int64)


def bucket_metrics(
    retrieved: np.ndarray, target: np.ndarray, bucket_of: np.ndarray, item_ids: np.ndarray, k: int = 10
) -> dict[str, dict[str, float | int | None]]:
    """Per bucket (head / tail / cold): recall@k of the requests whose target is in it, and its share of the
    filled top-k slots.

    Returns ``{"recall": {bucket: float | None}, "exposure": {bucket: float}, "targets": {bucket: int},
    "catalog": {bucket: float}}``: ``recall`` is None for a bucket with no target; ``exposure`` sums to 1 over the
    buckets (0 everywhere when nothing was retrieved); ``catalog`` is each bucket's share of ``item_ids``, the
    exposure a system that picked items at random would give.
    """
    bucket_of = np.asarray(bucket_of)
    _, hit, tb, slots = _bucketed(retrieved, target, bucket_of, item_ids, k)
    out: dict[str, dict[str, float | int | None]] = {
        "recall": {},
        "exposure": {},
        "targets": {},
        "catalog": {},
    }
    for b, name in enumerate(BUCKET_NAMES):
        sel = tb == b
        out["recall"][name] = float(hit[sel].mean()) if sel.any() else None
        out["exposure"][name] = float((slots == b).mean()) if slots.size else 0.0
        out["targets"][name] = int(sel.sum())
        out["catalog"][name] = float((bucket_of == b).mean()) if bucket_of.size else 0.0
    return out


def throughput(system: Retriever, requests: Requests, k: int, batch: int = 64) -> float:
    """Requests per second of ``system`` answering ``requests`` for its top ``k``, ``batch`` at a time."""
    t0 = time.perf_counter()
    for s in range(0, requests.size, batch):
        system.retrieve(requests.take(range(s, min(s + batch, requests.size))), k)
    return requests.size / (time.perf_counter() - t0)


def top_lists(
    requests: Requests,
    target: np.ndarray,
    retrieved: dict[str, np.ndarray],
    items: pl.DataFrame,
    rows: list[int] | np.ndarray,
    k: int = 10,
) -> list[tuple[str, pl.DataFrame]]:
    """Per chosen request, a caption and every system's top ``k`` side by side (titles, the target marked ``✓``).

    ``retrieved`` maps a system name to its (B, ≥k) retrieved ids over ``requests``; ``rows`` picks the requests.
    The caption names the query (``(recommend)`` without one) and the target; the table has a ``rank`` column
    and one column of item titles per system.
    """
    title = dict(zip(items[S.ITEM_ID].to_list(), items[S.TITLE].to_list(), strict=True))
    name = lambda i: "" if i < 0 else str(title.get(int(i)) or f"item {int(i)}")  # noqa: E731
    out = []
    for r in rows:
        t = int(target[r])
        caption = f"query: {requests.query[r] or '(recommend)'!r}; target: {name(t)} (item {t})"
        cols: dict[str, list] = {"rank": list(range(1, k + 1))}
        for s, ids in retrieved.items():
            cols[s] = [("✓ " if int(i) == t else "") + name(i) for i in ids[r, :k]]
        out.append((caption, pl.DataFrame(cols)))
    return out
