"""The hindsight bound: the knapsack curve by hand, the recorded prices on a hand-built market, and the bound above
what constant bids reach."""

from __future__ import annotations

import numpy as np
import pytest

from bidding.bound import _Recorder, best_score, hindsight_bound
from bidding.evaluate import EvalConfig, hindsight_alpha
from simulators.auction import AuctionRules
from simulators.bidders import FixedBidder
from simulators.market import Advertisers, MarketConfig
from simulators.rollout import run_period

RULES = AuctionRules()


def test_best_score_on_a_three_item_curve_by_hand():
    """Items (cost, conversions) (1, 1), (2, 1), (4, 1), target 2, β 2: the curve runs through (1, 1), (3, 2),
    (7, 3). The cost per conversion reaches the target inside the last segment, at C = 2V: V = 2 + (C − 3)/4 gives
    C = 5, V = 2.5, score 2.5; past it the penalty wins ((7, 3) scores 3 · (6/7)² = 2.204). So the bound is 2.5 for
    any budget from 5 up, and it never falls as the budget grows; with budget 4, V = 2.25 at cpa 1.78: 2.25."""
    cost, conv = np.array([4.0, 1.0, 2.0]), np.ones(3)
    for budget in (5.0, 7.0, 10.0, 100.0):
        assert best_score(cost, conv, budget, 2.0, RULES) == pytest.approx((2.5, 5.0, 2.5))
    assert best_score(cost, conv, 4.0, 2.0, RULES) == pytest.approx((2.25, 4.0, 2.25))
    assert best_score(cost, conv, 0.0, 2.0, RULES) == (0.0, 0.0, 0.0)
    # β = 1 penalises less: (7, 3) scores 3 · 6/7 = 2.571, above the 2.5 at the target
    assert best_score(cost, conv, 10.0, 2.0, AuctionRules(beta=1.0))[0] == pytest.approx(18 / 7)
    assert best_score(np.zeros(0), np.zeros(0), 5.0, 2.0, RULES) == (0.0, 0.0, 0.0)
    # one cheap and one dear conversion, target 2: the target is reached at C = 2.25 (V = 1.125), not at a breakpoint
    assert best_score(np.array([1.0, 10.0]), np.ones(2), 100.0, 2.0, RULES)[0] == pytest.approx(1.125)
    # keeping the target: β = 1 would go on to (7, 3); kept, the bound stops at the target point (5, 2.5)
    kept = best_score(cost, conv, 10.0, 2.0, AuctionRules(beta=1.0), keep_target=True)
    assert kept == pytest.approx((2.5, 5.0, 2.5))
    assert best_score(cost, conv, 4.0, 2.0, RULES, keep_target=True) == pytest.approx((2.25, 4.0, 2.25))


def test_best_score_is_the_maximum_of_a_dense_scan():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost, conv = rng.uniform(0.5, 5.0, 30), rng.uniform(0.0, 1.0, 30)
        budget, target = float(rng.uniform(5, 80)), float(rng.uniform(0.5, 4))
        s = best_score(cost, conv, budget, target, RULES)[0]
        order = np.argsort(-conv / cost)
        cc = np.concatenate([[0], np.cumsum(cost[order])])
        cv = np.concatenate([[0], np.cumsum(conv[order])])
        grid = np.linspace(0, min(budget, cc[-1]), 20_001)
        scan = RULES.score(np.interp(grid, cc, cv), grid, target).max()
        assert scan <= s + 1e-9 and s <= scan + 1e-3 * max(scan, 1)


def test_recorded_prices_on_a_hand_built_market():
    """One impression per step for 10 steps, one slot always shown, p = 1, no noise. The competitor bids 12 on
    every impression; the tested advertiser (target 10, budget 100) must pay 12 for each: the curve is V = C/12,
    the score V · (10V/C)² = C/12 · (10/12)² grows with C, so the bound is at the budget: 100/12 · (5/6)² = 5.787.
    A constant α 1.3 (bid 13) wins 8 impressions for 96 (the 9th does not fit): 8 · (80/96)² = 5.556, below."""
    cfg = MarketConfig(
        impressions=10, n_steps=10, n_advertisers=2, n_categories=1,
        rules=AuctionRules(n_slots=1, exposure=(1.0,), reserve_price=1.0),
        traffic_amplitude=0.0, p_mean=1.0, category_spread=0.0, advertiser_spread=0.0, interest_spread=0.0,
        pair_noise=0.0, sigma_range=(0.0, 0.0),
    )  # fmt: skip
    adv = Advertisers(
        category=np.zeros(2, dtype=np.int64), budget=np.array([100.0, 1e6]), kind=np.array(["cpa", "cpa"]),
        target=np.array([10.0, 12.0]), value=np.array([10.0, 12.0]), bid_scale=np.array([10.0, 12.0]),
        acquisition=np.zeros(2, dtype=bool), p_level=np.ones(2), sigma=np.zeros(2),
    )  # fmt: skip
    rec = _Recorder(0, cfg.rules)
    run_period(
        cfg, [FixedBidder(0.0), FixedBidder(1.0)], np.random.default_rng(0), advertisers=adv, before_step=rec
    )
    np.testing.assert_allclose(np.concatenate(rec.costs), 12.0)
    np.testing.assert_allclose(np.concatenate(rec.values), 1.0)
    bound = best_score(np.concatenate(rec.costs), np.concatenate(rec.values), 100.0, 10.0, cfg.rules)[0]
    assert bound == pytest.approx(100 / 12 * (5 / 6) ** 2)
    # every conversion costs 12 against the target 10: a bidder that keeps the target can buy none
    kept = best_score(np.concatenate(rec.costs), np.concatenate(rec.values), 100.0, 10.0, cfg.rules, True)
    assert kept == (0.0, 0.0, 0.0)
    traj = run_period(cfg, [FixedBidder(1.3), FixedBidder(1.0)], np.random.default_rng(0), advertisers=adv)
    assert traj.scores[0] == pytest.approx(8 * (80 / 96) ** 2) and traj.scores[0] < bound


def test_bound_is_above_the_best_constant_alpha_of_every_play():
    market = MarketConfig(impressions=6_000, n_steps=6, n_advertisers=6, n_categories=2)
    cfg = EvalConfig(periods=3, budget_ratios=(0.5, 1.0), slots=(0, 3))
    bound = hindsight_bound(market, cfg)
    assert np.array(bound["period_scores"]).shape == (3, 4) and bound["plays"] == 12
    best = hindsight_alpha(market, cfg, (0.1, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0))
    assert bound["score_mean"] > best["score_mean"]
    for got, ref in zip(bound["score_by_budget"], best["score_by_budget"], strict=True):
        assert got > ref
    assert 0 < bound["budget_used"] <= 1 + 1e-9
    kept = np.array(bound["kept_period_scores"])  # keeping the target can only cost score
    assert kept.shape == (3, 4) and (kept <= np.array(bound["period_scores"]) + 1e-9).all()
    assert 0 < bound["kept_score_mean"] <= bound["score_mean"] and bound["kept_budget_used"] <= 1 + 1e-9
