"""Online LP from previous days' data: the marginal cost per value by hand, and the logged history's shape."""

from __future__ import annotations

import numpy as np
import pytest

from bidding.history_lp import History, HistoryLPBidder, log_history
from simulators.market import Advertiser, MarketConfig, traffic_curve


def _state(time_left: float, budget_left: float) -> np.ndarray:
    s = np.zeros(16, dtype=np.float32)
    s[0], s[1] = time_left, budget_left
    return s


def test_marginal_cost_per_value_by_hand():
    """Logged costs 2, 4 (step 0) and 6, 8 (step 1), value 1 each per unit of bid scale, each standing for 10
    impressions: bought cheapest first they cost 20, 60, 120, 200 in total. With 100 left at step 0 the third
    (cost per value 6) is the first that does not fit: α 6; with 50, α 4; at step 1 (6, 8: 60, 140), α 8."""
    h = History(value=np.ones((1, 2, 2), np.float32), cost=np.array([[2.0, 4.0], [6.0, 8.0]], np.float32),
                weight=np.array([10.0, 10.0]))  # fmt: skip
    b = HistoryLPBidder(h, cap=10.0, n_steps=2)
    b.reset(Advertiser(0, 0, 100.0, "cpa", 1.0, 1.0, 1.0, False))
    assert b.act(_state(1.0, 1.0)) == 6.0
    assert b.act(_state(1.0, 0.5)) == 4.0
    assert b.act(_state(0.5, 1.0)) == 8.0
    assert b.act(_state(1.0, 0.0)) == 0.0
    assert b.act(_state(0.5, 3.0)) == 10.0  # everything logged fits: the cap
    capped = HistoryLPBidder(h, cap=5.0, n_steps=2)
    capped.reset(Advertiser(0, 0, 100.0, "cpa", 1.0, 1.0, 1.0, False))
    assert capped.act(_state(1.0, 1.0)) == 5.0
    # a bid scale of 2 halves the cost per value
    b.reset(Advertiser(0, 0, 100.0, "cpa", 2.0, 2.0, 2.0, False))
    assert b.act(_state(1.0, 1.0)) == pytest.approx(3.0)


def test_logged_history_stands_for_each_steps_traffic():
    market = MarketConfig(impressions=2_000, n_steps=6, n_advertisers=6, n_categories=2)
    h = log_history(market, seed=1, periods=range(0, 3), sample=50)
    assert h.value.shape == (6, 6, 150) and h.cost.shape == (6, 150)
    np.testing.assert_allclose(
        h.weight * 50, traffic_curve(market)
    )  # samples × weight = the step's impressions
    assert np.all(h.value >= 0) and np.all(h.cost >= market.rules.reserve_price - 1e-6)
