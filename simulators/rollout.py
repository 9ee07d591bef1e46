"""Run a whole delivery period with one bidder per advertiser and keep every advertiser's trajectory.

This is how offline datasets are made (``python -m pipelines simulate``: each period yields N trajectories) and how
bidders are judged against each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from simulators.bidders import Bidder
from simulators.market import STATE_FEATURES, Advertisers, Market, MarketConfig

TRAJECTORY_COLUMNS: tuple[str, ...] = (
    "period",
    "advertiser",
    "step",
    "policy",
    "kind",
    *STATE_FEATURES,
    "action",
    "reward",
    "cost",
    "conversions",
    "exposures",
    "budget",
    "target",
    "bid_scale",
    "done",
)
"""Columns of an offline trajectory table (one row per period, advertiser and step), in order; the meaning of each
is in docs/simulator.md. Written by ``python -m pipelines simulate``, read by ``bidding``."""


class Trajectories(NamedTuple):
    """One period, every advertiser: arrays are (T, N) unless said otherwise."""

    states: np.ndarray
    """(T, N, 16) float32 state before each step (market.STATE_FEATURES)."""
    actions: np.ndarray
    """float32 bid coefficient α used (after clipping to [0, alpha_max] of the market's rules)."""
    rewards: np.ndarray
    """float32 change of the running score."""
    cost: np.ndarray
    conversions: np.ndarray
    exposures: np.ndarray
    advertisers: Advertisers
    scores: np.ndarray
    """(N,) the period's final score per advertiser."""
    expected: np.ndarray | None = None
    """float32 expected conversions of each step's exposed wins (Σ p, weighted as the conversions count)."""


def run_period(
    cfg: MarketConfig,
    bidders: Sequence[Bidder],
    rng: np.random.Generator,
    *,
    advertisers: Advertisers | None = None,
    before_step: Callable[[Market, np.ndarray], None] | None = None,
    after_step: Callable[[Market], None] | None = None,
) -> Trajectories:
    """Play one period with ``bidders[i]`` bidding for advertiser i. ``before_step(market, alphas)``, when given, is
    called before every step with the clipped coefficients about to bid, and ``after_step(market)`` after it (to
    record the market, not to change it)."""
    if len(bidders) != cfg.n_advertisers:
        raise ValueError(f"need one bidder per advertiser ({cfg.n_advertisers}), got {len(bidders)}")
    market = Market(cfg, rng, advertisers=advertisers)
    adv, rules = market.advertisers, cfg.rules
    for i, b in enumerate(bidders):
        b.reset(adv.spec(i, rules))
    T, N = cfg.n_steps, cfg.n_advertisers
    states = np.zeros((T, N, 16), dtype=np.float32)
    actions = np.zeros((T, N), dtype=np.float32)
    rewards = np.zeros((T, N), dtype=np.float32)
    cost = np.zeros((T, N), dtype=np.float32)
    conversions = np.zeros((T, N), dtype=np.float32)
    exposures = np.zeros((T, N), dtype=np.int32)
    expected = np.zeros((T, N), dtype=np.float32)
    observers = [b.observe for b in bidders if getattr(b, "observe", None) is not None]
    score = np.zeros(N)
    for t in range(T):
        s = market.states()
        alphas = np.empty(N)
        for i, b in enumerate(bidders):
            a = float(b.act(s[i]))
            if not math.isfinite(a):
                raise ValueError(f"bidder {i} ({type(b).__name__}) returned a non-finite α {a} at step {t}")
            alphas[i] = rules.clip(a)
        if before_step is not None:
            before_step(market, alphas)
        outcome, feedback = market.step(alphas)
        if after_step is not None:
            after_step(market)
        for observe in observers:
            observe(feedback)
        new_score = rules.score(market.conversions, market.spent, adv.bid_scale)
        states[t], actions[t], rewards[t] = s, alphas, new_score - score
        cost[t], conversions[t], exposures[t] = outcome.cost, outcome.conversions, outcome.exposures
        expected[t] = outcome.expected
        score = new_score
    return Trajectories(states, actions, rewards, cost, conversions, exposures, adv, score, expected)
