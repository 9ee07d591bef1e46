"""Judge a bidder in simulation: unseen periods, several budget ratios, the same competitors for every bidder.

For every test period p, budget ratio b and advertiser slot i (``slots``), the period's advertisers are drawn from
``[seed, p]``, advertiser i's budget is multiplied by b, every other advertiser is a default heuristic competitor
(drawn from the same seed), and the bidder under test bids for advertiser i. All bidders therefore face exactly the
same markets, and differences in score are the bidders' own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from simulators.bidders import Bidder, FixedBidder, default_competitors
from simulators.market import MarketConfig, sample_advertisers
from simulators.rollout import run_period


@dataclass(frozen=True)
class EvalConfig:
    """How bidders are judged."""

    periods: int = 10
    """Unseen test periods."""
    first_period: int = 100_000
    """Number of the first test period (training data uses small numbers, so these are unseen)."""
    budget_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    """Budget multipliers of the tested advertiser."""
    slots: tuple[int, ...] = (0, 11, 23, 35)
    """Advertiser indices the tested bidder takes over, in turn (must be < n_advertisers)."""
    seed: int = 0
    """Seed of the test markets."""


def evaluate(
    make_bidder: Callable[[], Bidder],
    market: MarketConfig,
    cfg: EvalConfig,
    curves: bool = False,
) -> dict:
    """Play the bidder in every (period, budget ratio, slot) of ``cfg``; return its figures.

    ``score_by_budget``: mean score per budget ratio; ``score_mean``: their mean; ``cpa_violation_rate``: share of
    plays whose cost per conversion ended above the target (bid scale); ``roi``: value of conversions / cost over all
    plays; ``cac``: cost per conversion over all plays, relative to the target; ``budget_used``: mean share of the
    budget spent; ``act_ms``: mean milliseconds per ``act`` call. With ``curves``, also the mean share of budget spent
    and the mean cost per conversion / target after each step (for pacing plots; the mean over the plays that have
    converted by then, NaN before any has).
    """
    T = market.n_steps
    by_ratio: dict[float, list[float]] = {b: [] for b in cfg.budget_ratios}
    violations = plays = 0
    cost_total = value_total = conv_total = target_cost_total = 0.0
    used: list[float] = []
    act_seconds = 0.0
    act_calls = 0
    spend_curve = np.zeros(T)
    cpa_curve = np.zeros(T)
    cpa_plays = np.zeros(T)
    for b, slot, adv, play in _plays(market, cfg):
        budget = adv.budget
        bidder = _Timed(make_bidder())
        traj = play(bidder)
        act_seconds += bidder.seconds
        act_calls += bidder.calls
        cost = float(traj.cost[:, slot].sum())
        conv = float(traj.conversions[:, slot].sum())
        scale = float(adv.bid_scale[slot])
        by_ratio[b].append(float(traj.scores[slot]))
        plays += 1
        violations += _violates(cost, conv, scale)
        cost_total += cost
        conv_total += conv
        value_total += conv * float(adv.value[slot])
        target_cost_total += conv * scale
        used.append(cost / budget[slot] if budget[slot] > 0 else 0.0)
        if curves:
            cum_cost = np.cumsum(traj.cost[:, slot])
            cum_conv = np.cumsum(traj.conversions[:, slot])
            has = cum_conv > 0  # no cost per conversion before the first conversion
            cpa = cum_cost / np.maximum(cum_conv, 1) / scale
            spend_curve += cum_cost / max(budget[slot], 1e-9)
            cpa_curve += np.where(has, cpa, 0.0)
            cpa_plays += has
    score_by_budget = [float(np.mean(by_ratio[b])) for b in cfg.budget_ratios]
    out = {
        "score_by_budget": score_by_budget,
        "score_mean": float(np.mean(score_by_budget)),
        "cpa_violation_rate": violations / max(plays, 1),
        "roi": value_total / cost_total if cost_total > 0 else math.nan,
        "cac": cost_total / target_cost_total if conv_total > 0 else math.nan,
        "budget_used": float(np.mean(used)),
        "act_ms": 1000 * act_seconds / max(act_calls, 1),
        "plays": plays,
    }
    if curves:
        out["spend_curve"] = (spend_curve / plays).tolist()
        out["cpa_curve"] = np.where(cpa_plays > 0, cpa_curve / np.maximum(cpa_plays, 1), np.nan).tolist()
    return out


HINDSIGHT_GRID: tuple[float, ...] = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0)
"""The constant α values :func:`hindsight_alpha` tries in every play."""


def hindsight_alpha(
    market: MarketConfig,
    cfg: EvalConfig,
    grid: Sequence[float] = HINDSIGHT_GRID,
) -> dict:
    """A reference, not a bidder: in every play of :func:`evaluate`, the best constant α of ``grid`` chosen *after*
    playing the period with each of them (so it knows the day's traffic and competitors in advance).

    It tells how much any bidder can still gain: a bidder that sees only the past rarely beats the best constant α
    of its own day by much (for one budget and a CPA or ROI target, the hindsight-optimal bid is a constant times the
    predicted value). Returns ``score_by_budget`` and ``score_mean`` as :func:`evaluate` does, the ``budget_used``
    and ``cpa_violation_rate`` of the chosen plays, ``alpha_median`` (the median chosen α; where several α score the
    same, the smallest is chosen), ``at_grid_edge`` (plays that score and whose best α is the smallest or largest of
    ``grid``: the grid may be too narrow there) and ``plays``.
    """
    grid = sorted({float(a) for a in grid})
    alpha_max = market.rules.alpha_max
    if not grid or not all(math.isfinite(a) and 0 <= a <= alpha_max for a in grid):
        raise ValueError(f"grid must hold α values in [0, {alpha_max}], got {grid}")
    by_ratio: dict[float, list[float]] = {b: [] for b in cfg.budget_ratios}
    used: list[float] = []
    chosen: list[float] = []
    violations = edge = 0
    for b, slot, adv, play in _plays(market, cfg):
        best = None
        for a in grid:
            traj = play(FixedBidder(a))
            score = float(traj.scores[slot])
            if best is None or score > best[0]:
                best = (score, a, float(traj.cost[:, slot].sum()), float(traj.conversions[:, slot].sum()))
        score, a, cost, conv = best
        scale = float(adv.bid_scale[slot])
        by_ratio[b].append(score)
        chosen.append(a)
        used.append(cost / adv.budget[slot] if adv.budget[slot] > 0 else 0.0)
        violations += _violates(cost, conv, scale)
        # a play in which nothing scores says nothing about the grid
        edge += int(len(grid) > 1 and score > 0 and a in (grid[0], grid[-1]))
    score_by_budget = [float(np.mean(by_ratio[b])) for b in cfg.budget_ratios]
    return {
        "score_by_budget": score_by_budget,
        "score_mean": float(np.mean(score_by_budget)),
        "cpa_violation_rate": violations / max(len(chosen), 1),
        "budget_used": float(np.mean(used)),
        "alpha_median": float(np.median(chosen)),
        "at_grid_edge": edge,
        "plays": len(chosen),
    }


def _violates(cost: float, conversions: float, bid_scale: float) -> int:
    """1 when a play's cost per conversion ended above the target (or it paid without converting), else 0."""
    if conversions > 0:
        return int(cost / conversions > bid_scale * (1 + 1e-9))
    return int(cost > 0)


def _plays(market: MarketConfig, cfg: EvalConfig):
    """Every play of ``cfg``: (budget ratio, slot, advertisers, play), where ``play(bidder)`` runs the period with
    ``bidder`` in ``slot`` against fresh default competitors and returns its trajectories; calling it again replays
    the very same market. Slots beyond the market's advertisers are left out (slot 0 if none is left)."""
    T = market.n_steps
    slots = [s for s in cfg.slots if s < market.n_advertisers] or [0]
    for p in range(cfg.first_period, cfg.first_period + cfg.periods):
        base = sample_advertisers(market, np.random.default_rng([cfg.seed, p, 0]))
        for b in cfg.budget_ratios:
            for slot in slots:
                budget = base.budget.copy()
                budget[slot] *= b
                adv = base._replace(budget=budget)

                def play(bidder: Bidder, p=p, slot=slot, adv=adv):
                    others = default_competitors(
                        market.n_advertisers - 1, np.random.default_rng([cfg.seed, p, 1]), T
                    )
                    return run_period(
                        market,
                        [*others[:slot], bidder, *others[slot:]],
                        np.random.default_rng([cfg.seed, p, 2]),
                        advertisers=adv,
                    )

                yield b, slot, adv, play


class _Timed:
    """Wraps a bidder and times its ``act`` calls."""

    def __init__(self, bidder: Bidder) -> None:
        self.bidder = bidder
        self.seconds = 0.0
        self.calls = 0
        observe = getattr(bidder, "observe", None)
        if observe is not None:
            self.observe = observe

    def reset(self, advertiser) -> None:
        self.bidder.reset(advertiser)

    def act(self, state: np.ndarray) -> float:
        t = time.perf_counter()
        a = self.bidder.act(state)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return a


def compare(
    bidders: dict[str, Callable[[], Bidder]], market: MarketConfig, cfg: EvalConfig, **kw
) -> dict[str, dict]:
    """:func:`evaluate` for every named bidder factory, on the same markets."""
    return {name: evaluate(make, market, cfg, **kw) for name, make in bidders.items()}


__all__: Sequence[str] = ["HINDSIGHT_GRID", "EvalConfig", "compare", "evaluate", "hindsight_alpha"]
