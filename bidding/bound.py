"""The hindsight bound of a play: the best score any bidder could expect on the realised day, impression by impression.

A bidder sets one α per step; the bound may instead pick every impression on its own, knowing the whole day in
advance. For the tested advertiser of a play:

* the competitors' bids on every impression are those they make when the tested advertiser does not bid (recorded
  from that play: exact for competitors that do not react to the market, an approximation for those that do);
* taking the lowest *shown* slot k of an impression costs ``max(k-th highest competitor bid, reserve)`` (the second
  price of that slot; the exposure draws are part of the day's traffic, so they are known in hindsight) and brings
  its expected conversions ``p`` (× the order value for ROI advertisers, × the new-user flag for acquisition ones);
  a higher slot would cost more for the same conversions;
* the best expected conversions V*(C) at total cost C is a fractional knapsack: impressions in order of
  conversions per cost. The bound is ``max over C ≤ budget of V*(C) × min(1, (target · V*(C) / C)^β)``, the score
  of the best point of that curve (the score rewards conversions more than it penalises a missed target up to a
  point, so the best C may end above the target).

It is an LP relaxation (fractional impressions, expected conversions): no bidder should exceed it on average, and
the gap says how much any bidder could still gain.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from bidding.evaluate import EvalConfig, _period_plays
from simulators.auction import AuctionRules
from simulators.bidders import FixedBidder
from simulators.market import Market, MarketConfig

__all__ = ["best_score", "hindsight_bound"]


def best_score(
    cost: np.ndarray,
    value: np.ndarray,
    budget: float,
    target: float,
    rules: AuctionRules,
    keep_target: bool = False,
) -> tuple[float, float, float]:
    """The best score of a fractional knapsack over items of ``cost`` (n,) and expected conversions ``value``
    (n,): ``max over C ≤ budget of V*(C) · min(1, (target · V*(C) / C)^β)``. Returns (score, cost, conversions)
    of the best point.

    V* is piecewise linear, so on each segment the score is the smaller of V (rising) and T^β V^(β+1) / C^β; the
    maximum is at a breakpoint, at the budget, at the one point where the cost per conversion reaches the target
    (C = target · V: it rises along the curve, from the cheapest conversions up), or where the penalised score is
    stationary on a segment (C = β (v0 − e c0) / e for a segment through (c0, v0) of slope e). All are checked.

    With ``keep_target`` only points whose cost per conversion meets the target (C ≤ target · V) count: the most
    conversions a bidder that keeps the target could expect, where the target point or the budget comes first."""
    best, kept = _best_points(cost, value, budget, target, rules)
    return kept if keep_target else best


Point = tuple[float, float, float]


def _best_points(
    cost: np.ndarray, value: np.ndarray, budget: float, target: float, rules: AuctionRules
) -> tuple[Point, Point]:
    """(score, cost, conversions) of :func:`best_score`'s best point, and of its best point that keeps the target,
    from one knapsack curve."""
    cost = np.asarray(cost, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    keep = value > 0
    cost, value = cost[keep], value[keep]
    if cost.size == 0 or budget <= 0:
        free = float(value[cost <= 0].sum()) if cost.size else 0.0
        return (free, 0.0, free), (free, 0.0, free)
    with np.errstate(divide="ignore"):
        eff = np.where(cost > 0, value / np.where(cost > 0, cost, 1.0), np.inf)
    order = np.argsort(-eff, kind="stable")
    cum_c = np.concatenate([[0.0], np.cumsum(cost[order])])
    cum_v = np.concatenate([[0.0], np.cumsum(value[order])])
    # segments [c0, c1] of the curve, cut at the budget
    c0, c1, v0, v1 = cum_c[:-1], cum_c[1:], cum_v[:-1], cum_v[1:]
    live = (c0 < budget) & (c1 > c0)
    c0, c1, v0, v1 = c0[live], c1[live], v0[live], v1[live]
    e = (v1 - v0) / (c1 - c0)
    hi = np.minimum(c1, budget)
    beta = rules.beta
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = target * (v0 - e * c0) / (1.0 - target * e)  # C = target · V on the segment's line
        still = beta * (v0 - e * c0) / e
    cands = [cum_c[cum_c <= budget], hi]
    for x in (cross, still):
        ok = np.isfinite(x) & (x >= c0) & (x <= hi)
        cands.append(x[ok])
    c = np.concatenate(cands)
    v = np.interp(c, cum_c, cum_v)
    scores = rules.score(v, c, target)
    # the cost per conversion only rises along the curve: the points that keep the target are a prefix
    kept = np.where(c <= target * v * (1 + 1e-9), scores, -np.inf)
    k, j = int(np.argmax(scores)), int(np.argmax(kept))
    return (float(scores[k]), float(c[k]), float(v[k])), (float(kept[j]), float(c[j]), float(v[j]))


class _Recorder:
    """Before every step, the tested advertiser's cheapest shown-slot cost and expected conversions per impression."""

    def __init__(self, slot: int, rules: AuctionRules) -> None:
        self.slot, self.rules = slot, rules
        self.costs: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def __call__(self, market: Market, alphas: np.ndarray) -> None:
        if market.p_t.shape[1] == 0:
            return
        K, s = self.rules.n_slots, self.slot
        bids = market.bids(alphas)
        others = np.delete(bids, s, axis=0)  # (N − 1, n) competitors' bids
        k = min(K, others.shape[0])
        top = -np.sort(-np.partition(others, others.shape[0] - k, axis=0)[-k:], axis=0)  # (k, n) best first
        if k < K:
            top = np.vstack([top, np.zeros((K - k, top.shape[1]), dtype=top.dtype)])
        price = np.maximum(top.T.astype(np.float64), self.rules.reserve_price)  # (n, K): cost of slot k
        shown = market.shown()
        price = np.where(shown, price, np.inf)
        self.costs.append(price.min(axis=1))  # the cheapest shown slot (inf when none is shown)
        scale = float(market.advertisers.bid_scale[s])
        self.values.append(market.predicted_values()[:, s].astype(np.float64) / max(scale, 1e-300))


def hindsight_bound(
    market: MarketConfig,
    cfg: EvalConfig,
    executor: Executor | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The bound of every play of ``cfg`` (same periods, budget ratios and slots as :func:`evaluate`, same layout of
    ``period_scores``), with ``score_mean``, ``score_by_budget``, ``budget_used`` and ``cpa_ratio`` (cost per
    counted conversion / target at the best point, median over plays); ``kept_score_mean``, ``kept_period_scores``
    and ``kept_budget_used``, the same for the bound of a bidder that keeps the target (:func:`best_score` with
    ``keep_target``). Periods run on ``executor`` when given."""
    periods = list(range(cfg.first_period, cfg.first_period + cfg.periods))
    if executor is None:
        rows = []
        for i, p in enumerate(periods):
            rows.append(_bound_period(market, cfg, p))
            if progress is not None:
                progress(f"period {i + 1}/{cfg.periods}")
    else:
        rows = [f.result() for f in [executor.submit(_bound_period, market, cfg, p) for p in periods]]
    ratio_of = np.array([r["ratio"] for r in rows])  # (P, S)
    scores = np.array([r["score"] for r in rows])
    score_by_budget = [float(scores[ratio_of == b].mean()) for b in cfg.budget_ratios]
    kept = np.array([r["kept"] for r in rows])
    return {
        "kept_score_mean": float(np.mean([kept[ratio_of == b].mean() for b in cfg.budget_ratios])),
        "kept_period_scores": kept.tolist(),
        "kept_budget_used": float(np.mean([r["kept_used"] for r in rows])),
        "score_by_budget": score_by_budget,
        "score_mean": float(np.mean(score_by_budget)),
        "period_scores": scores.tolist(),
        "budget_used": float(np.mean([r["used"] for r in rows])),
        "cpa_ratio": float(np.median([r["cpa_ratio"] for r in rows])),
        "plays": int(scores.size),
    }


def _bound_period(market: MarketConfig, cfg: EvalConfig, p: int) -> dict:
    """The bound of every play of test period ``p``."""
    rules = market.rules
    out: dict[str, list] = {
        "ratio": [],
        "score": [],
        "used": [],
        "cpa_ratio": [],
        "kept": [],
        "kept_used": [],
    }
    for b, slot, adv, play in _period_plays(market, cfg, p):
        rec = _Recorder(slot, rules)
        play(FixedBidder(0.0), before_step=rec)
        cost = np.concatenate(rec.costs) if rec.costs else np.zeros(0)
        value = np.concatenate(rec.values) if rec.values else np.zeros(0)
        ok = np.isfinite(cost)
        budget, target = float(adv.budget[slot]), float(adv.bid_scale[slot])
        (s, c, v), (kept, kept_cost, _) = _best_points(cost[ok], value[ok], budget, target, rules)
        out["kept"].append(kept)
        out["kept_used"].append(kept_cost / budget if budget > 0 else 0.0)
        out["ratio"].append(b)
        out["score"].append(s)
        out["used"].append(c / budget if budget > 0 else 0.0)
        out["cpa_ratio"].append(c / v / target if v > 0 else 0.0)
    return out
