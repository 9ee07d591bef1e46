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
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from simulators.bidders import Bidder, FixedBidder, default_competitors
from simulators.market import MarketConfig, sample_advertisers
from simulators.rollout import run_period


@dataclass(frozen=True)
class EvalConfig:
    """How bidders are judged."""

    periods: int = 20
    """Test periods. Plays of one period share its market, so periods, not plays, are the independent samples."""
    first_period: int = 100_000
    """Number of the first test period (training data uses small numbers, so these are unseen)."""
    budget_ratios: tuple[float, ...] = (1.0,)
    """Budget multipliers of the tested advertiser."""
    slots: tuple[int, ...] = ()
    """Advertiser indices the tested bidder takes over, in turn (empty = every advertiser of the market)."""
    test_seed: int = 0
    """Seed of the test markets. 0 is the development seed (tuning, validation); for final figures pass a seed
    never used before and keep it for every later comparison (docs/bidding.md says which one the reported use)."""
    rotate: int = 1
    """Play every rotate-th slot of a period, starting at the period's number mod rotate: each slot is played once
    in every rotate consecutive periods, at 1/rotate of the cost (1 = every slot in every period)."""
    workers: int = 1
    """Processes that play periods in parallel (the figures are the same whatever the number)."""

    def __post_init__(self) -> None:
        if self.periods < 1 or self.workers < 1 or self.rotate < 1:
            raise ValueError(
                f"periods, rotate and workers must be positive, got {self.periods}, {self.rotate} and {self.workers}"
            )
        if not self.budget_ratios or not all(math.isfinite(b) and b > 0 for b in self.budget_ratios):
            raise ValueError(f"budget_ratios must be positive numbers, got {self.budget_ratios}")
        if any(s < 0 for s in self.slots):
            raise ValueError(f"slots must be advertiser indices >= 0, got {self.slots}")


def evaluate(
    make_bidder: Callable[[], Bidder] | Sequence[Callable[[], Bidder]],
    market: MarketConfig,
    cfg: EvalConfig,
    curves: bool = False,
    executor: Executor | None = None,
) -> dict:
    """Play the bidder in every (period, budget ratio, slot) of ``cfg``; return its figures.

    ``score_by_budget``: mean score per budget ratio; ``score_mean``: their mean; ``period_scores``: (periods,
    plays per period) scores, the same layout for every bidder (for paired bootstrap CIs, :mod:`bidding.stats`);
    ``cpa_violation_rate``: share of plays whose cost per counted conversion ended above the target (bid scale);
    ``roi``: value of conversions / cost over all plays; ``cac``: cost per conversion over all plays, relative to the
    target; ``budget_used``: mean share of the budget spent; ``act_ms``: mean milliseconds per ``act`` call. With
    ``curves``, also the mean share of budget spent and the mean cost per conversion / target after each step (for
    pacing plots; the mean over the plays that have converted by then, NaN before any has).

    Several factories (one per training seed of a learned bidder) take the periods in turn, a whole slot rotation
    each: the i-th test period is played by ``make_bidder[(i // rotate) % len(make_bidder)]``, so every seed plays
    every slot, and seed-to-seed differences are part of the periods' spread and of the bootstrap CIs.

    With ``cfg.workers`` > 1, or an ``executor`` (a process pool to reuse), the periods are played in other
    processes; the factories are sent there with cloudpickle (a closure over a trained bidder is fine) and every
    play is the same as when played here.
    """
    makers = list(make_bidder) if isinstance(make_bidder, (list, tuple)) else [make_bidder]
    if not makers:
        raise ValueError("no bidder factory given")
    _check_slots(market, cfg)
    periods = range(cfg.first_period, cfg.first_period + cfg.periods)
    # seeds take whole rotations in turn, so each seed plays every slot
    jobs = [(makers[(i // cfg.rotate) % len(makers)], p) for i, p in enumerate(periods)]
    if cfg.workers == 1 and executor is None:
        parts = [_play_period(make, market, cfg, p, curves) for make, p in jobs]
    else:
        parts = _in_processes(jobs, market, cfg, curves, executor)
    rec = {k: np.stack([part[k] for part in parts]) for k in parts[0] if k not in ("seconds", "calls")}
    ratios = np.asarray(cfg.budget_ratios)
    score, cost, conv = rec["score"], rec["cost"], rec["conversions"]
    by_ratio = [float(score[:, rec["ratio"][0] == b].mean()) for b in ratios]
    cost_total, conv_total = float(cost.sum()), float(conv.sum())
    act_calls = sum(part["calls"] for part in parts)
    out = {
        "score_by_budget": by_ratio,
        "score_mean": float(np.mean(by_ratio)),
        "period_scores": score.tolist(),
        "cpa_violation_rate": float(rec["violation"].mean()),
        "roi": float((conv * rec["value"]).sum() / cost_total) if cost_total > 0 else math.nan,
        "cac": cost_total / float((conv * rec["scale"]).sum()) if conv_total > 0 else math.nan,
        "budget_used": float(rec["used"].mean()),
        "act_ms": 1000 * sum(part["seconds"] for part in parts) / max(act_calls, 1),
        "plays": int(score.size),
        "seeds": len(makers),
    }
    if curves:
        plays = score.size
        cpa_plays = rec["cpa_plays"].sum(axis=(0, 1))
        out["spend_curve"] = (rec["spend_curve"].sum(axis=(0, 1)) / plays).tolist()
        cpa_sum = rec["cpa_curve"].sum(axis=(0, 1))
        out["cpa_curve"] = np.where(cpa_plays > 0, cpa_sum / np.maximum(cpa_plays, 1), np.nan).tolist()
    return out


def _play_period(
    make_bidder: Callable[[], Bidder], market: MarketConfig, cfg: EvalConfig, p: int, curves: bool
):
    """The plays of test period ``p``: per play (budget ratio × slot, in that order) its figures."""
    rows: dict[str, list] = {
        k: []
        for k in ("ratio", "slot", "score", "cost", "conversions", "used", "violation", "value", "scale")
    }
    if curves:
        rows.update(spend_curve=[], cpa_curve=[], cpa_plays=[])
    seconds = 0.0
    calls = 0
    for b, slot, adv, play in _period_plays(market, cfg, p):
        bidder = _Timed(make_bidder())
        traj = play(bidder)
        seconds += bidder.seconds
        calls += bidder.calls
        cost = float(traj.cost[:, slot].sum())
        conv = float(traj.conversions[:, slot].sum())
        scale = float(adv.bid_scale[slot])
        budget = float(adv.budget[slot])
        rows["ratio"].append(b)
        rows["slot"].append(slot)
        rows["score"].append(float(traj.scores[slot]))
        rows["cost"].append(cost)
        rows["conversions"].append(conv)
        rows["used"].append(cost / budget if budget > 0 else 0.0)
        rows["violation"].append(_violates(cost, conv, scale))
        rows["value"].append(float(adv.value[slot]))
        rows["scale"].append(scale)
        if curves:
            cum_cost = np.cumsum(traj.cost[:, slot])
            cum_conv = np.cumsum(traj.conversions[:, slot])
            has = cum_conv > 0  # no cost per conversion before the first conversion
            rows["spend_curve"].append(cum_cost / max(budget, 1e-9))
            rows["cpa_curve"].append(np.where(has, cum_cost / np.maximum(cum_conv, 1e-12) / scale, 0.0))
            rows["cpa_plays"].append(has)
    out = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    out["seconds"], out["calls"] = seconds, calls
    return out


def _period_worker(payload: bytes, market: MarketConfig, cfg: EvalConfig, p: int, curves: bool):
    import cloudpickle

    return _play_period(cloudpickle.loads(payload), market, cfg, p, curves)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (safe with torch) to pass to :func:`evaluate` again and again."""
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def _in_processes(
    jobs, market: MarketConfig, cfg: EvalConfig, curves: bool, executor: Executor | None
) -> list[dict]:
    """:func:`_play_period` of every (factory, period) job in other processes."""
    import cloudpickle

    payloads = {}
    for make, _ in jobs:
        if id(make) not in payloads:
            try:
                payloads[id(make)] = cloudpickle.dumps(make)
            except Exception as e:  # noqa: BLE001 - any pickling failure gets the same advice
                raise ValueError(
                    f"playing in other processes needs a bidder factory that cloudpickle can send: {e}"
                ) from e
    pool = executor if executor is not None else process_pool(cfg.workers)
    try:
        futures = [
            pool.submit(_period_worker, payloads[id(make)], market, cfg, p, curves) for make, p in jobs
        ]
        return [f.result() for f in futures]
    finally:
        if executor is None:
            pool.shutdown()


def _check_slots(market: MarketConfig, cfg: EvalConfig) -> None:
    n = len(_slots(market, cfg))
    if n % cfg.rotate:
        raise ValueError(
            f"rotate ({cfg.rotate}) must divide the number of slots played ({n}): every period plays as many"
        )


def _slots(market: MarketConfig, cfg: EvalConfig) -> list[int]:
    """The slots of ``cfg`` that the market has (slot 0 if none; every advertiser when ``cfg.slots`` is empty)."""
    slots = (
        [s for s in cfg.slots if s < market.n_advertisers] if cfg.slots else list(range(market.n_advertisers))
    )
    return slots or [0]


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
    """Every play of ``cfg``, period by period (see :func:`_period_plays`)."""
    for p in range(cfg.first_period, cfg.first_period + cfg.periods):
        yield from _period_plays(market, cfg, p)


def _period_plays(market: MarketConfig, cfg: EvalConfig, p: int):
    """The plays of test period ``p``: (budget ratio, slot, advertisers, play), where ``play(bidder)`` runs the
    period with ``bidder`` in ``slot`` against fresh default competitors and returns its trajectories; calling it
    again replays the very same market. Slots beyond the market's advertisers are left out (slot 0 if none is
    left); no slots means every advertiser; with ``cfg.rotate`` = r, every r-th of them, from p mod r."""
    T = market.n_steps
    slots = _slots(market, cfg)[p % cfg.rotate :: cfg.rotate]
    seed = cfg.test_seed
    base = sample_advertisers(market, np.random.default_rng([seed, p, 0]))
    for b in cfg.budget_ratios:
        for slot in slots:
            budget = base.budget.copy()
            budget[slot] *= b
            adv = base._replace(budget=budget)

            def play(bidder: Bidder, slot=slot, adv=adv, before_step=None):
                others = default_competitors(market.n_advertisers - 1, np.random.default_rng([seed, p, 1]), T)
                return run_period(
                    market,
                    [*others[:slot], bidder, *others[slot:]],
                    np.random.default_rng([seed, p, 2]),
                    advertisers=adv,
                    before_step=before_step,
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


__all__: Sequence[str] = [
    "HINDSIGHT_GRID",
    "EvalConfig",
    "compare",
    "evaluate",
    "hindsight_alpha",
    "process_pool",
]
