"""The bidder protocol, and the heuristic bidders that compete in the simulator.

A bidder controls one advertiser's bid coefficient α (bid = α × predicted value on every impression of a step).
Any object with these methods can bid in :class:`simulators.env.AuctionEnv` (as a competitor) or in
``python -m pipelines simulate`` (as a behaviour policy)::

    reset(advertiser: Advertiser) -> None    # a new period starts; budget, target, bid scale
    act(state: np.ndarray) -> float          # the 16 state features (market.STATE_FEATURES) -> α
    observe(feedback: Feedback) -> None      # optional: what the step just run did

Heuristics here keep their own running totals from ``observe``; learned bidders (``bidding/``) read the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from simulators.market import Advertiser, Feedback

__all__ = [
    "Bidder",
    "ExploringBidder",
    "DualPIDBidder",
    "FixedBidder",
    "HEURISTICS",
    "heuristic",
    "OnlineLPBidder",
    "PacingBidder",
    "PIDBidder",
    "default_competitors",
]


@runtime_checkable
class Bidder(Protocol):
    """Chooses one advertiser's bid coefficient every step."""

    def reset(self, advertiser: Advertiser) -> None: ...

    def act(self, state: np.ndarray) -> float: ...


@dataclass
class FixedBidder:
    """Bids the same α all period."""

    alpha: float = 1.0

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser

    def act(self, state: np.ndarray) -> float:
        return self.alpha

    def observe(self, feedback: Feedback) -> None:
        pass


@dataclass
class PIDBidder:
    """PID control of the realised cost per conversion.

    After every step, with cumulative cost C and conversions V (V counted as at least 1):
    ``e = clip(1 − (C / max(V, 1)) / (setpoint · target), −1, 1)`` (positive: cheaper than aimed at, bid up), and
    ``α = clip(α0 · exp(kp·e + ki·Σe + kd·(e − e_prev)), lo, hi)``. Before the first step α = α0.
    """

    alpha0: float = 1.0
    kp: float = 0.5
    ki: float = 0.05
    kd: float = 0.0
    lo: float = 0.1
    hi: float = 3.0
    setpoint: float = 1.0
    """The cost per conversion aimed at, as a multiple of the target."""

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser
        self.cost = 0.0
        self.conversions = 0.0
        self.integral = 0.0
        self.prev_error = 0.0
        self.alpha = self.alpha0

    def act(self, state: np.ndarray) -> float:
        return self.alpha

    def observe(self, feedback: Feedback) -> None:
        i = self.advertiser.index
        self.cost += float(feedback.outcome.cost[i])
        self.conversions += float(feedback.outcome.conversions[i])
        if self.cost <= 0:
            return  # nothing spent yet: no evidence about the cost per conversion
        cpa = self.cost / max(self.conversions, 1.0)
        e = min(1.0, max(-1.0, 1.0 - cpa / (self.setpoint * self.advertiser.bid_scale)))
        self.integral += e
        u = self.kp * e + self.ki * self.integral + self.kd * (e - self.prev_error)
        self.prev_error = e
        self.alpha = min(self.hi, max(self.lo, self.alpha0 * math.exp(u)))


@dataclass
class DualPIDBidder:
    """Two PI loops, one on the budget and one on the cost per conversion; the bid is the lower of their α.

    After step t (of T), with cumulative spend S, budget B, cost C and (counted) conversions V:

    * budget loop: ``e_b = clip((B·(t+1)/T − S) / (B/T), −3, 3)`` (positive: behind the even pace),
      ``α_b = α0 · exp(budget_kp·e_b + budget_ki·Σe_b)``;
    * CPA loop (once something was spent): ``e_c = clip(1 − (C / max(V, 1)) / (setpoint · target), −1, 1)``,
      ``α_c = α0 · exp(cpa_kp·e_c + cpa_ki·Σe_c)``;
    * ``α = clip(min(α_b, α_c), lo, hi)``. Before the first step α = α0.

    The setpoint may sit above 1: the score's penalty is gentle enough that the best plays often end a little over
    their target (docs/simulator.md). bench-bidding tunes α0, the setpoint and the gains on training periods.
    """

    alpha0: float = 1.0
    cpa_kp: float = 0.5
    cpa_ki: float = 0.05
    setpoint: float = 1.0
    budget_kp: float = 0.3
    budget_ki: float = 0.02
    lo: float = 0.01
    hi: float = 5.0
    n_steps: int = 48

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser
        self.spent = 0.0
        self.budget_sum = 0.0
        self.alpha_budget = self.alpha0
        # the CPA loop is a PID on the cost per conversion (no derivative term, no clipping of its own)
        self.cpa_loop = PIDBidder(self.alpha0, self.cpa_kp, self.cpa_ki, 0.0, 0.0, math.inf, self.setpoint)
        self.cpa_loop.reset(advertiser)
        self.alpha = min(self.hi, max(self.lo, self.alpha0))

    @property
    def alpha_cpa(self) -> float:
        return self.cpa_loop.alpha

    def act(self, state: np.ndarray) -> float:
        return self.alpha

    def observe(self, feedback: Feedback) -> None:
        adv = self.advertiser
        self.spent += float(feedback.outcome.cost[adv.index])
        self.cpa_loop.observe(feedback)
        if adv.budget > 0:
            per_step = adv.budget / self.n_steps
            e_b = min(3.0, max(-3.0, (per_step * (feedback.outcome.step + 1) - self.spent) / per_step))
            self.budget_sum += e_b
            self.alpha_budget = self.alpha0 * math.exp(
                min(50.0, self.budget_kp * e_b + self.budget_ki * self.budget_sum)
            )
        else:
            self.alpha_budget = 0.0
        self.alpha = min(self.hi, max(self.lo, min(self.alpha_budget, self.alpha_cpa)))


@dataclass
class PacingBidder:
    """Budget pacing: spend in step with time.

    After step t (of T), with spend S and budget B: the error in per-step budgets is
    ``e = (B·(t+1)/T − S) / (B/T)``; ``α ← clip(α · exp(eta · clip(e, −3, 3)), lo, hi)``.
    """

    alpha0: float = 1.0
    eta: float = 0.3
    lo: float = 0.1
    hi: float = 2.0
    n_steps: int = 48

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser
        self.spent = 0.0
        self.alpha = self.alpha0

    def act(self, state: np.ndarray) -> float:
        return self.alpha

    def observe(self, feedback: Feedback) -> None:
        b = self.advertiser.budget
        self.spent += float(feedback.outcome.cost[self.advertiser.index])
        if b <= 0:
            self.alpha = self.lo
            return
        per_step = b / self.n_steps
        e = (per_step * (feedback.outcome.step + 1) - self.spent) / per_step
        self.alpha = min(self.hi, max(self.lo, self.alpha * math.exp(self.eta * min(3.0, max(-3.0, e)))))


@dataclass
class OnlineLPBidder:
    """Online-LP style: each step, the α that would spend the budget left on the traffic left.

    It keeps a sample of (value at α = 1, least winning cost) pairs from the last ``window`` steps, ranks them by
    value per cost, and treats impressions as bought at their least winning cost in that order until the budget left
    (scaled by the traffic left over the sample size) runs out; α is the cost/value ratio of the last impression
    bought, never above ``cap`` (the target-neutral bid when cap = 1).
    """

    window: int = 3
    sample: int = 256
    cap: float = 1.0
    seed: int = 0
    n_steps: int = 48

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser
        self.spent = 0.0
        self.ratios: list[np.ndarray] = []  # per step of the window: the sample's cost / value ratios, sorted
        self.costs: list[np.ndarray] = []  # and their costs, in the same order
        self.rng = np.random.default_rng(self.seed + 7919 * advertiser.index)
        self._cum_cost: np.ndarray | None = None
        self._ratio = np.zeros(0)

    def act(self, state: np.ndarray) -> float:
        if self._cum_cost is None:
            return self.cap
        n_steps_left = round(float(state[0]) * self.n_steps)
        if n_steps_left <= 0:
            return self.cap
        # traffic left: this step's impressions, plus the mean step for the steps after it
        traffic_left = 1000.0 * (float(state[13]) + max(n_steps_left - 1, 0) * float(state[15]))
        budget_left = max(self.advertiser.budget - self.spent, 0.0)
        size = self._cum_cost.size
        # buy the sample in order of value per cost while the cost, scaled to the traffic left, fits the budget
        k = int(np.searchsorted(self._cum_cost, budget_left * size / max(traffic_left, 1e-12), side="right"))
        if k >= size:
            return self.cap
        if k == 0:
            return 0.0
        return float(min(self.cap, self._ratio[k - 1]))

    def observe(self, feedback: Feedback) -> None:
        i = self.advertiser.index
        self.spent += float(feedback.outcome.cost[i])
        n = feedback.p_value.shape[0]
        if n == 0:
            return
        pick = np.arange(n) if n <= self.sample else self.rng.integers(0, n, size=self.sample)
        value = feedback.p_value[pick, i].astype(np.float64) * self.advertiser.bid_scale
        if feedback.factor is not None:  # order value, or 0 for users an acquisition advertiser does not want
            value *= feedback.factor[pick, i]
        cost = feedback.least_winning_cost[pick].astype(np.float64)
        ratio = cost / np.maximum(value, 1e-12)  # the α at which each sampled impression is just won
        order = np.argsort(ratio, kind="stable")
        # each step's sample is kept sorted by ratio: the stable sort of the window's runs below is then a merge, and
        # gives the same order as sorting the window's samples from scratch (ties keep step, then sample order)
        self.ratios = (self.ratios + [ratio[order]])[-self.window :]
        self.costs = (self.costs + [cost[order]])[-self.window :]
        ratio, cost = np.concatenate(self.ratios), np.concatenate(self.costs)
        order = np.argsort(ratio, kind="stable")
        self._ratio = ratio[order]
        self._cum_cost = np.cumsum(cost[order])


HEURISTICS: tuple[str, ...] = ("fixed", "pid", "pacing", "lp")
"""Names of the heuristic bidders, for :func:`heuristic`."""


def check_alpha_range(fixed_alpha: tuple[float, float]) -> tuple[float, float]:
    """``fixed_alpha`` as (low, high), or a ValueError unless it is two numbers with 0 < low <= high."""
    if len(fixed_alpha) != 2 or not 0 < fixed_alpha[0] <= fixed_alpha[1]:
        raise ValueError(f"fixed_alpha must be two numbers 0 < low <= high, got {fixed_alpha}")
    return float(fixed_alpha[0]), float(fixed_alpha[1])


def heuristic(
    kind: str,
    rng: np.random.Generator,
    n_steps: int = 48,
    fixed_alpha: tuple[float, float] = (0.6, 1.3),
    fixed_alpha_log: bool = False,
) -> Bidder:
    """A heuristic bidder of ``kind`` (one of :data:`HEURISTICS`) with settings drawn from ``rng``; a ``fixed``
    bidder's α is drawn from ``fixed_alpha``, uniformly or (``fixed_alpha_log``) log-uniformly."""
    if kind == "fixed":
        lo, hi = check_alpha_range(fixed_alpha)
        if fixed_alpha_log:
            return FixedBidder(alpha=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        return FixedBidder(alpha=float(rng.uniform(lo, hi)))
    if kind == "pid":
        return PIDBidder(
            alpha0=float(rng.uniform(0.7, 1.3)),
            kp=float(rng.uniform(0.2, 0.8)),
            ki=float(rng.uniform(0.0, 0.1)),
            kd=float(rng.uniform(0.0, 0.2)),
        )
    if kind == "pacing":
        return PacingBidder(
            alpha0=float(rng.uniform(0.6, 1.4)), eta=float(rng.uniform(0.1, 0.5)), n_steps=n_steps
        )
    if kind == "lp":
        return OnlineLPBidder(
            window=int(rng.integers(2, 6)),
            cap=float(rng.uniform(0.8, 1.2)),
            seed=int(rng.integers(2**31)),
            n_steps=n_steps,
        )
    raise ValueError(f"unknown heuristic bidder {kind!r}; known: {', '.join(HEURISTICS)}")


class ExploringBidder:
    """Any bidder with multiplicative exploration noise: it bids ``α · exp(σ·z)``, z ~ N(0, 1) drawn every step.

    For behaviour data: a logged dataset where every bidder bids exactly its policy's α shows only one action per
    state, so an offline value cannot tell what a slightly higher or lower bid would have brought (and guesses).
    ``observe`` passes through, so the wrapped bidder reacts to what the noisy bids really did."""

    def __init__(self, bidder: Bidder, sigma: float, rng: np.random.Generator) -> None:
        if not sigma >= 0:
            raise ValueError(f"exploration sigma must be >= 0, got {sigma}")
        self.bidder, self.sigma, self.rng = bidder, float(sigma), rng
        self._observe = getattr(bidder, "observe", None)

    def reset(self, advertiser: Advertiser) -> None:
        self.bidder.reset(advertiser)

    def act(self, state: np.ndarray) -> float:
        return float(self.bidder.act(state)) * math.exp(self.sigma * float(self.rng.standard_normal()))

    def observe(self, feedback: Feedback) -> None:
        if self._observe is not None:
            self._observe(feedback)


def default_competitors(n: int, rng: np.random.Generator, n_steps: int = 48) -> list[Bidder]:
    """``n`` heuristic competitors with heterogeneous settings: fixed α, PID on CPA, budget pacing and online LP
    in turn, each with parameters drawn from ``rng``."""
    return [heuristic(HEURISTICS[i % len(HEURISTICS)], rng, n_steps) for i in range(n)]
