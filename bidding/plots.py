"""Figures of the bidding half: the simulated market, and bidders judged over a day and over budget ratios.

One function per figure; each returns a :class:`matplotlib.figure.Figure` and, given ``path``, also writes it as a
PNG. Figures are built without pyplot (no global figure list, no GUI backend: PNGs are rendered with Agg), so the
same call serves ``bench-bidding`` logging to MLflow, a test and a notebook. :func:`market_sample` plays one period
to gather what :func:`plot_market` draws. What each figure shows is in ``docs/notebooks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from simulators.bidders import default_competitors
from simulators.market import Feedback, MarketConfig
from simulators.rollout import run_period


def save(fig: Figure, path: str | os.PathLike | None, dpi: int = 110) -> Figure:
    """Write ``fig`` to ``path`` as a PNG (folders made as needed) when a path is given; return ``fig``."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


class MarketSample(NamedTuple):
    """One period of a market played by the default heuristic competitors."""

    impressions: np.ndarray
    """(T,) impression opportunities per step."""
    bids: np.ndarray
    """Every positive bid placed, all steps and advertisers (currency units)."""
    lwc: list[np.ndarray]
    """Per step, the least winning cost of each impression: the lowest bid that would have won a slot."""
    price: np.ndarray
    """Cost per shown impression of each (step, advertiser) with exposures."""


class _Recorder:
    """A bidder wrapper that keeps the per-impression feedback of every step."""

    def __init__(self, bidder) -> None:
        self.bidder, self.feedback = bidder, []
        self._observe = getattr(bidder, "observe", None)

    def reset(self, advertiser) -> None:
        self.bidder.reset(advertiser)

    def act(self, state: np.ndarray) -> float:
        return self.bidder.act(state)

    def observe(self, feedback: Feedback) -> None:
        self.feedback.append(feedback)
        if self._observe is not None:
            self._observe(feedback)


def market_sample(cfg: MarketConfig, seed: int = 0) -> MarketSample:
    """Play one period of ``cfg`` with the default competitors (seeded) and gather traffic, bids and prices."""
    bidders = default_competitors(cfg.n_advertisers, np.random.default_rng([seed, 1]), cfg.n_steps)
    rec = _Recorder(bidders[0])
    traj = run_period(cfg, [rec, *bidders[1:]], np.random.default_rng([seed, 2]))
    scale = traj.advertisers.bid_scale
    bids = [fb.p_value * (traj.actions[t] * scale)[None, :] for t, fb in enumerate(rec.feedback)]
    bids = np.concatenate([b.reshape(-1) for b in bids]) if bids else np.zeros(0)
    shown = traj.exposures > 0
    return MarketSample(
        np.array([fb.outcome.impressions for fb in rec.feedback]),
        bids[bids > 0],
        [np.asarray(fb.least_winning_cost) for fb in rec.feedback],
        traj.cost[shown] / traj.exposures[shown],
    )


def plot_market(sample: MarketSample, path: str | os.PathLike | None = None) -> Figure:
    """Traffic over the day, the distribution of bids against winning prices, and prices over the day."""
    fig = Figure(figsize=(16, 4.5))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    steps = np.arange(len(sample.impressions))
    ax1.bar(steps, sample.impressions, color="#4c72b0")
    ax1.set(xlabel="step of the day", ylabel="impression opportunities", title="Traffic over the day")
    ax1.grid(axis="y", alpha=0.3)
    lwc = np.concatenate(sample.lwc) if sample.lwc else np.zeros(0)
    lwc = lwc[lwc > 0]
    pos = np.concatenate([sample.bids, lwc, sample.price])
    bins = np.geomspace(max(pos.min(), 1e-4), pos.max(), 40) if pos.size else 10
    ax2.hist(
        sample.bids, bins=bins, alpha=0.6, density=True, color="#4c72b0", label=f"bids ({sample.bids.size:,})"
    )
    ax2.hist(
        lwc, bins=bins, alpha=0.6, density=True, color="#dd8452", label="least winning cost per impression"
    )
    ax2.hist(sample.price, bins=bins, histtype="step", lw=1.5, density=True, color="black",
             label="price paid per shown impression")  # fmt: skip
    ax2.set_xscale("log")
    ax2.set(xlabel="currency units per impression (log scale)", ylabel="density", title="Bids and prices")
    ax2.legend(fontsize=8)
    q = np.array(
        [np.percentile(x[x > 0], [25, 50, 75]) if (x > 0).any() else [np.nan] * 3 for x in sample.lwc]
    )
    if len(q):
        ax3.fill_between(steps, q[:, 0], q[:, 2], alpha=0.3, color="#dd8452", label="25-75th percentile")
        ax3.plot(steps, q[:, 1], color="#dd8452", label="median")
    ax3.set(
        xlabel="step of the day",
        ylabel="least winning cost (currency units)",
        title="Price of a slot over the day",
    )
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_bidders(
    results: Mapping[str, Mapping], ratios: Sequence[float], path: str | os.PathLike | None = None
) -> Figure:
    """Score by budget ratio, budget pacing and cost per conversion over the day, one line per bidder.

    ``results[name]`` is :func:`bidding.evaluate.evaluate` with ``curves=True`` (``score_by_budget``,
    ``spend_curve``, ``cpa_curve``); ``bench-bidding`` logs this figure as ``bidding.png``.
    """
    fig = Figure(figsize=(16, 4.5))
    axes = fig.subplots(1, 3)
    for name, r in results.items():
        axes[0].plot([100 * x for x in ratios], r["score_by_budget"], marker="o", label=name)
        axes[1].plot(r["spend_curve"], label=name)
        axes[2].plot(r["cpa_curve"], label=name)
    axes[0].set(xlabel="budget (% of the period's)", ylabel="mean score", title="Score by budget")
    axes[1].set(xlabel="step", ylabel="share of budget spent", title="Budget pacing over the day")
    axes[2].axhline(1.0, color="grey", lw=0.8, ls="--", label="target")
    axes[2].set(xlabel="step", ylabel="cost per conversion / target", title="CPA over the day")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def score_table(results: Mapping[str, Mapping], ratios: Sequence[float]) -> pl.DataFrame:
    """One row per bidder, best mean score first: score per budget ratio, mean, CPA violations, budget used."""
    rows = [
        {
            "bidder": name,
            **{f"score @{b:.0%}": float(s) for b, s in zip(ratios, r["score_by_budget"], strict=True)},
            "mean": float(r["score_mean"]),
            "CPA violations": float(r["cpa_violation_rate"]),
            "budget used": float(r["budget_used"]),
        }
        for name, r in results.items()
    ]
    return pl.DataFrame(rows).sort("mean", descending=True)
