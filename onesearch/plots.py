"""Figures of the search half: the catalogue, the semantic-ID tree, keyword enhancement, retrieval quality, speed.

One function per figure; each returns a :class:`matplotlib.figure.Figure` and, given ``path``, also writes it as a
PNG. Figures are built without pyplot (no global figure list, no GUI backend: PNGs are rendered with Agg), so
the same call serves a job logging to MLflow, a test and a notebook, which shows a returned figure inline.
What each figure shows is in ``docs/notebooks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from onesearch.data import schema as S
from onesearch.retrieval import BUCKET_NAMES, COLD, HEAD, TAIL

BUCKET_COLORS = {"head": "#4c72b0", "tail": "#dd8452", "cold": "#8c8c8c"}


def save(fig: Figure, path: str | os.PathLike | None, dpi: int = 120) -> Figure:
    """Write ``fig`` to ``path`` as a PNG (folders made as needed) when a path is given; return ``fig``."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def plot_hr(
    curves: Mapping[str, Sequence[float]], title: str, path: str | os.PathLike | None = None
) -> Figure:
    """HR@K for K = 1..len(curve), one line per system (``bench-search`` logs it as ``hr_at_k.png``)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, label=name)
    ax.set_xlabel("K (list length)")
    ax.set_ylabel("HR@K (share of requests with\nthe target in the top K)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def plot_catalog(
    items: pl.DataFrame, purchases: pl.DataFrame, buckets: np.ndarray, path: str | os.PathLike | None = None
) -> Figure:
    """The catalogue: items per top-level category, and training purchases per item ranked (the long tail).

    ``purchases`` are the training purchases (``item_id`` column); ``buckets`` the head / tail / cold bucket of
    each item of ``items`` (:func:`onesearch.retrieval.item_buckets`), which colours the ranked curve.
    """
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    level = 0  # the first level, or the second when every item shares one root (Amazon's "Industrial & Scientific")
    if items[S.CATEGORY_PATH].list.first().drop_nulls().n_unique() == 1:
        level = 1
    top = items.select(
        pl.col(S.CATEGORY_PATH).list.get(level, null_on_oob=True).fill_null("(none)").alias("c")
    )
    per = top.group_by("c").len().sort("len")
    ax1.barh(per["c"].to_list(), per["len"].to_list(), color="#4c72b0")
    ax1.set_xlabel("items")
    ax1.set_title(f"Items per category, level {level + 1} of the tree ({items.height} items)")
    ax1.grid(axis="x", alpha=0.3)
    ids = items[S.ITEM_ID].to_numpy()
    counts_by_id = dict(zip(*np.unique(purchases[S.ITEM_ID].to_numpy(), return_counts=True), strict=True))
    counts = np.array([counts_by_id.get(int(i), 0) for i in ids])
    order = np.lexsort((ids, -counts))
    rank = np.arange(1, len(ids) + 1)
    for b, name in ((HEAD, "head"), (TAIL, "tail"), (COLD, "cold")):
        sel = np.asarray(buckets)[order] == b
        n = int(sel.sum())
        ax2.bar(
            rank[sel], counts[order][sel], width=1.0, color=BUCKET_COLORS[name], label=f"{name} ({n} items)"
        )
    ax2.set_xlabel("item rank by training purchases")
    ax2.set_ylabel("training purchases per item")
    ax2.set_title("Purchases per item: head, tail and cold items")
    ax2.legend()
    ax2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_code_tree(tree, title: str = "", path: str | os.PathLike | None = None) -> Figure:
    """The semantic-ID code tree (:func:`onesearch.tokenizer.report.code_tree`): items per node at each depth,
    codebook utilisation per level, and the collisions that the disambiguation code resolves."""
    fig = Figure(figsize=(15, 4.2))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for d, sizes in enumerate(tree.node_sizes):
        ax1.plot(np.arange(1, len(sizes) + 1), sizes, marker=".", label=f"depth {d + 1} ({len(sizes)} nodes)")
    ax1.set_yscale("log")
    ax1.set_xlabel("node rank (largest first)")
    ax1.set_ylabel("items under the node (log scale)")
    ax1.set_title("Items per node of the code tree")
    ax1.legend()
    ax1.grid(alpha=0.3)
    n_levels = len(tree.utilization)
    labels = [f"level {i + 1}" for i in range(n_levels - 1)] + ["disamb."]
    bars = ax2.bar(
        labels, [100 * u for u in tree.utilization], color=["#4c72b0"] * (n_levels - 1) + ["#8c8c8c"]
    )
    for bar, size in zip(bars, tree.codebook_sizes, strict=True):
        ax2.annotate(
            f"of {size}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
        )
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("codes used (% of the codebook)")
    ax2.set_title("Codebook utilisation per level")
    ax2.grid(axis="y", alpha=0.3)
    sizes = np.asarray(tree.collision_sizes)
    k, n_ids = np.unique(sizes, return_counts=True)
    ax3.bar(k, k * n_ids, color=["#55a868" if x == 1 else "#c44e52" for x in k])
    ax3.set_xlabel("items sharing one semantic ID (before disambiguation)")
    ax3.set_ylabel("items")
    ax3.set_xticks(k)
    ax3.set_title(f"Collisions: {tree.collision_rate:.1%} of items share their ID")
    ax3.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_keyword_effect(effect, path: str | os.PathLike | None = None) -> Figure:
    """The share-valued metrics of :func:`onesearch.tokenizer.report.keyword_effect` as paired bars, without and
    with keyword enhancement, and the share of items whose level-1 code-mates changed."""
    shares = effect.metrics.filter(pl.col("metric") != "level-1 codes used").drop_nulls()
    names = shares["metric"].to_list()
    y = np.arange(len(names))
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    for off, col, color in ((-0.2, "without keywords", "#8c8c8c"), (0.2, "with keywords", "#4c72b0")):
        ax.barh(y + off, [100 * v for v in shares[col].to_list()], height=0.4, color=color, label=col)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("% of items")
    ax.set_xlim(0, 100)
    ax.set_title(
        f"What keyword enhancement changed: {effect.moved_share:.0%} of items changed level-1 code-mates"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_buckets(stats: Mapping[str, Mapping], path: str | os.PathLike | None = None) -> Figure:
    """Per system, recall@10 by the target's bucket and the share of top-10 slots given to each bucket
    (:func:`onesearch.retrieval.bucket_metrics` per system); the dashed line is each bucket's catalogue share."""
    systems = list(stats)
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(systems))
    w = 0.8 / len(BUCKET_NAMES)
    for j, b in enumerate(BUCKET_NAMES):
        rec = [stats[s]["recall"][b] for s in systems]
        n = next(iter(stats.values()))["targets"][b]
        ax1.bar(x + (j - 1) * w, [np.nan if r is None else r for r in rec], w, color=BUCKET_COLORS[b],
                label=f"{b} targets ({n} requests)")  # fmt: skip
    ax1.set_xticks(x, systems)
    ax1.set_ylabel("recall@10 (share of requests)")
    ax1.set_ylim(0, 1)
    ax1.set_title("Recall@10 by the target's bucket")
    ax1.legend()
    ax1.grid(axis="y", alpha=0.3)
    bottom = np.zeros(len(systems))
    for b in BUCKET_NAMES:
        share = np.array([100 * stats[s]["exposure"][b] for s in systems])
        ax2.bar(x, share, 0.6, bottom=bottom, color=BUCKET_COLORS[b], label=f"{b} items")
        bottom += share
    cat = next(iter(stats.values()))["catalog"]
    edge = 0.0
    for b in BUCKET_NAMES[:-1]:
        edge += 100 * cat[b]
        ax2.axhline(edge, color="black", lw=0.8, ls="--")
    ax2.set_xticks(x, systems)
    ax2.set_ylabel("% of top-10 slots")
    ax2.set_ylim(0, 100)
    ax2.set_title("Exposure: who fills the top 10 (dashed: catalogue shares)")
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_decode_speed(
    beams: Sequence[int],
    qps: Sequence[float],
    hr: Sequence[float] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Generator decoding speed (requests per second) against beam width, and HR@10 on a second axis if given."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    (l1,) = ax.plot(beams, qps, marker="o", color="#4c72b0", label="requests / s (batch 64)")
    ax.set_xscale("log")
    ax.set_xticks(list(beams), [str(b) for b in beams])
    ax.set_xlabel("beam width")
    ax.set_ylabel("requests per second")
    ax.set_title("Constrained beam search: speed against beam width")
    ax.grid(alpha=0.3)
    lines = [l1]
    if hr is not None:
        ax2 = ax.twinx()
        (l2,) = ax2.plot(beams, hr, marker="s", color="#c44e52", label="HR@10")
        ax2.set_ylabel("HR@10 (share of test requests)")
        ax2.set_ylim(0, 1)
        lines.append(l2)
    ax.legend(handles=lines, loc="upper center")
    fig.tight_layout()
    return save(fig, path)


def plot_history(
    histories: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    labels: Mapping[str, str] | None = None,
    title: str = "",
    path: str | os.PathLike | None = None,
) -> Figure:
    """Metrics over training steps: one panel per metric, one line per run.

    ``histories[run][metric] = (steps, values)`` (e.g. from ``MlflowClient.get_metric_history``); ``labels``
    maps a metric to its y-axis label.
    """
    metrics = list(dict.fromkeys(m for h in histories.values() for m in h))
    fig = Figure(figsize=(6 * max(len(metrics), 1), 4.2))
    axes = np.atleast_1d(fig.subplots(1, max(len(metrics), 1)))
    for ax, m in zip(axes, metrics, strict=False):
        for run, h in histories.items():
            if m in h:
                steps, values = h[m]
                ax.plot(steps, values, marker=".", label=run)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel((labels or {}).get(m, m))
        ax.set_title(m)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
