"""The heuristic bidders' update rules on hand-worked feedback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.bidders import (
    HEURISTICS,
    Bidder,
    DualPIDBidder,
    ExploringBidder,
    FixedBidder,
    OnlineLPBidder,
    PacingBidder,
    PIDBidder,
    heuristic,
)
from simulators.market import Advertiser, Feedback, StepOutcome


def _adv(budget: float, bid_scale: float = 10.0) -> Advertiser:
    return Advertiser(0, 0, budget, "cpa", bid_scale, bid_scale, bid_scale, False)


def _feedback(step: int, cost: float, conversions: float = 0.0, p=None, lwc=None) -> Feedback:
    arr = lambda v: np.array([v, 0.0])  # noqa: E731  (advertiser 0 and one other)
    outcome = StepOutcome(step, arr(cost), arr(conversions), arr(0), arr(0), arr(0), arr(0), 0.0, 0)
    p = np.zeros((0, 2), np.float32) if p is None else np.stack([p, np.zeros_like(p)], axis=1)
    lwc = np.zeros(0, np.float32) if lwc is None else np.asarray(lwc, np.float32)
    return Feedback(outcome, p, lwc)


def test_pacing_rule_by_hand():
    # budget 480 over 48 steps: 10 per step; eta 0.3
    b = PacingBidder(alpha0=1.0, eta=0.3, lo=0.1, hi=2.0, n_steps=48)
    b.reset(_adv(480.0))
    b.observe(_feedback(0, 4.0))  # e = (10 - 4) / 10 = 0.6
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(0.3 * 0.6))
    b.observe(_feedback(1, 30.0))  # spent 34, e = (20 - 34) / 10 = -1.4
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(0.18 - 0.42))
    b.observe(_feedback(2, 100.0))  # spent 134, e = -10.4, clipped to -3
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(-0.24 - 0.9))


def test_pid_rule_by_hand():
    b = PIDBidder(alpha0=1.0, kp=0.5, ki=0.1, kd=0.2, lo=0.1, hi=3.0)
    b.reset(_adv(1000.0, bid_scale=10.0))
    b.observe(_feedback(0, 0.0))  # nothing spent: no update
    assert b.act(np.zeros(16)) == 1.0
    b.observe(_feedback(1, 16.0, 2.0))  # cpa 8: e = 0.2, Σe = 0.2, Δe = 0.2
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(0.5 * 0.2 + 0.1 * 0.2 + 0.2 * 0.2))
    b.observe(_feedback(2, 14.0, 0.0))  # cost 30 for 2: cpa 15, e = -0.5, Σe = -0.3, Δe = -0.7
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(0.5 * -0.5 + 0.1 * -0.3 + 0.2 * -0.7))


def test_dual_pid_rule_by_hand():
    """Budget 100 over 4 steps (25 a step), target 10, α0 1, budget kp 0.5, CPA kp 1, no integral terms."""
    b = DualPIDBidder(alpha0=1.0, cpa_kp=1.0, cpa_ki=0.0, budget_kp=0.5, budget_ki=0.0, n_steps=4)
    b.reset(_adv(100.0, bid_scale=10.0))
    assert b.act(np.zeros(16)) == 1.0
    # spent 50 for 2: pace error (25 − 50)/25 = −1 → α_b = e^−0.5; cpa 25, error 1 − 2.5 clipped to −1 → α_c = e^−1
    b.observe(_feedback(0, 50.0, 2.0))
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(-1.0))
    # nothing more spent: on pace (α_b = 1), cpa still 25: the CPA loop holds the bid down
    b.observe(_feedback(1, 0.0, 0.0))
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(-1.0))
    # 3 late conversions: cpa 10 on target (α_c = 1), behind pace by one step (α_b = e^0.5): the lower is 1
    b.observe(_feedback(2, 0.0, 3.0))
    assert b.act(np.zeros(16)) == pytest.approx(1.0)
    # a setpoint of 1.25 lets the CPA loop aim at 12.5: cpa 10 gives error 0.2
    b2 = DualPIDBidder(
        alpha0=1.0, cpa_kp=1.0, cpa_ki=0.0, budget_kp=0.5, budget_ki=0.0, setpoint=1.25, n_steps=4
    )
    b2.reset(_adv(1e9, bid_scale=10.0))
    b2.observe(_feedback(0, 20.0, 2.0))
    assert b2.act(np.zeros(16)) == pytest.approx(math.exp(0.2))


@pytest.mark.parametrize("budget, want", [(0.0, 0.0), (5.0, 0.5), (13.0, 0.75), (16.0, 1.0), (100.0, 1.0)])
def test_online_lp_rule_by_hand(budget, want):
    """Four impressions seen: value at α=1 = 10·p = [1, 2, 0.5, 4], least winning cost [1, 1, 1, 3], so the α that
    just wins each is cost/value = [1, 0.5, 2, 0.75]; in that order the cumulative cost is [1, 4, 5, 6] (for the
    impressions at 0.5, 0.75, 1, 2). With 3 of 4 steps left and 4 impressions per step, 12 impressions remain: the
    sample stands for them at ×3, so a budget B buys the first k with 3·cum ≤ B, and α is the k-th ratio."""
    b = OnlineLPBidder(window=1, sample=256, cap=1.0, n_steps=4)
    b.reset(_adv(budget))
    p = np.array([0.1, 0.2, 0.05, 0.4], np.float32)
    b.observe(_feedback(0, 0.0, p=p, lwc=[1.0, 1.0, 1.0, 3.0]))
    state = np.zeros(16, np.float32)
    state[0], state[13], state[15] = 0.75, 0.004, 0.004
    assert b.act(state) == pytest.approx(want)


def test_online_lp_window_is_the_stable_sort_of_all_its_samples():
    """Each step's sample is kept sorted and the window merged: the same ratios and cumulative costs, bit for bit,
    as sorting the window's samples from scratch (stable: ties keep step, then sample order). Prices on a coarse grid
    make many ties."""
    rng = np.random.default_rng(3)
    b = OnlineLPBidder(window=3, sample=64, cap=5.0, n_steps=8)
    b.reset(_adv(1e6))
    ratios, costs = [], []
    for step in range(6):
        p = rng.choice([0.01, 0.02, 0.04], size=50).astype(np.float32)
        lwc = rng.choice([0.5, 1.0, 2.0], size=50).astype(np.float32)
        b.observe(_feedback(step, 1.0, p=p, lwc=lwc))
        value = p.astype(np.float64) * 10.0  # bid scale 10 (_adv)
        ratios, costs = [*ratios, lwc / np.maximum(value, 1e-12)][-3:], [*costs, lwc.astype(np.float64)][-3:]
        r, c = np.concatenate(ratios), np.concatenate(costs)
        order = np.argsort(r, kind="stable")
        assert np.array_equal(b._ratio, r[order]) and np.array_equal(b._cum_cost, np.cumsum(c[order]))


@pytest.mark.parametrize("kind", HEURISTICS)
def test_every_heuristic_follows_the_protocol(kind):
    b = heuristic(kind, np.random.default_rng(0), n_steps=4)
    assert isinstance(b, Bidder)
    b.reset(_adv(50.0))
    a = b.act(np.zeros(16, np.float32))
    assert math.isfinite(a) and a >= 0
    with pytest.raises(ValueError, match="unknown heuristic"):
        heuristic("greedy", np.random.default_rng(0))
    assert FixedBidder(0.7).act(np.zeros(16)) == 0.7


def test_exploring_bidder_noise_and_passthrough():
    # σ = 0: exactly the wrapped bidder, observe included (the pacing rule by hand: e = 0.6)
    inner = PacingBidder(alpha0=1.0, eta=0.3, n_steps=48)
    b = ExploringBidder(inner, 0.0, np.random.default_rng(0))
    b.reset(_adv(480.0))
    b.observe(_feedback(0, 4.0))
    assert b.act(np.zeros(16)) == pytest.approx(math.exp(0.3 * 0.6))
    # σ = 0.2 on α = 2: log(bid / 2) is N(0, 0.2²), drawn from the given generator
    noisy = ExploringBidder(FixedBidder(2.0), 0.2, np.random.default_rng(1))
    noisy.reset(_adv(100.0))
    logs = np.log([noisy.act(np.zeros(16)) / 2.0 for _ in range(4000)])
    want = 0.2 * np.random.default_rng(1).standard_normal(4000)
    np.testing.assert_allclose(logs, want, rtol=1e-9, atol=1e-12)
    assert abs(logs.std() - 0.2) < 0.01

    # a bidder without observe: the wrapper's observe does nothing
    class _NoObserve:
        def reset(self, advertiser):
            pass

        def act(self, state):
            return 1.0

    ExploringBidder(_NoObserve(), 0.1, np.random.default_rng(0)).observe(_feedback(0, 1.0))
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        ExploringBidder(FixedBidder(1.0), float("nan"), np.random.default_rng(0))
