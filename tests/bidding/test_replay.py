"""Plan values replayed from the impression log: a day worked by hand, the log day by day, the DT that learns them."""

from __future__ import annotations

import numpy as np
import pytest

from bidding.history_lp import LoggedDays, log_days, log_history
from bidding.replay import replay_grid, replay_values, slot_outcomes, spend_in_order, step_outcomes
from simulators.auction import AuctionRules
from simulators.market import MarketConfig


def _day(budget_left_at_1: float, conversions_at_0: float) -> LoggedDays:
    """One advertiser (bid scale 4, budget 50), two steps of two sampled impressions, each standing for 10."""
    states = np.zeros((1, 2, 1, 16), np.float32)
    states[0, 0, 0, :2] = 1.0, 1.0
    states[0, 1, 0, :2] = 0.5, budget_left_at_1
    return LoggedDays(
        value=np.array([[[[1.0, 0.5], [1.0, 0.0]]]], np.float32),  # (D, N, T, M)
        cost=np.array([[[2.0, 3.0], [4.0, 1.0]]], np.float32),  # (D, T, M)
        weight=np.array([[10.0, 10.0]]),
        states=states,
        conversions=np.array([[[conversions_at_0], [0.0]]], np.float32),
        cost_paid=np.array([[[50 * (1 - budget_left_at_1)], [0.0]]], np.float32),
        budget=np.array([[50.0]], np.float32),
        bid_scale=np.array([[4.0]], np.float32),
    )


def test_step_outcomes_by_hand():
    """At λ the bid on an impression is λ · 4 · v against its cost: step 0 (v 1, 0.5; cost 2, 3) wins nothing at 0.5
    (2 is not above 2), the first at 1 (cost 20, value 10 for 10 impressions), both at 2 (50, 15); step 1 (v 1, 0;
    cost 4, 1) only the first at 2 (40, 10): an impression of value 0 is never won."""
    d = _day(0.6, 5.0)
    cost, conv = step_outcomes(d.value[0, 0], d.cost[0], d.weight[0], 4.0, np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(cost, [[0, 20, 50], [0, 0, 40]])
    np.testing.assert_allclose(conv, [[0, 10, 15], [0, 0, 10]])


def test_spend_in_order_buys_the_last_step_in_part():
    cost = np.array([[20.0, 50.0], [10.0, 40.0]])
    value = np.array([[10.0, 15.0], [4.0, 10.0]])
    c, v = spend_in_order(cost, value, 60.0)
    np.testing.assert_allclose(c, [30.0, 60.0])  # λ 1 spends all it wins; λ 2 runs out a quarter into step 1
    np.testing.assert_allclose(v, [14.0, 15.0 + 10.0 * 10 / 40])
    c, v = spend_in_order(np.array([[0.0], [5.0]]), np.array([[3.0], [2.0]]), 0.0)  # free wins need no budget
    np.testing.assert_allclose([c[0], v[0]], [0.0, 3.0])


def test_replayed_values_by_hand():
    """From step 0 (budget 50 left, nothing earned yet): λ 1 earns 10 conversions for 20 (cost per conversion 2, under
    the target 4), λ 2 spends all 50 on 15 (3.3): scores 10 and 15, ×4/50 in budget units: 0.8 and 1.2.
    From step 1, after the logging bidder spent 20 on 2 conversions (score 2 · (4·2/20)² = 0.32): λ 2 buys 30 of
    the 40 on offer, 7.5 conversions, ending at 9.5 for 50: score 9.5 · (4·9.5/50)² = 5.4872."""
    rules = AuctionRules()
    r = replay_values(_day(0.6, 2.0), np.array([0.5, 1.0, 2.0]), rules)
    assert r.value.shape == (2, 3) and r.states.shape == (2, 16)
    np.testing.assert_allclose(r.value[0], [0.0, 0.8, 1.2], atol=1e-6)
    np.testing.assert_allclose(r.value[1], [0.0, 0.0, (9.5 * 0.76**2 - 2 * 0.4**2) * 0.08], atol=1e-6)
    np.testing.assert_allclose(r.budget, [50.0, 50.0])
    np.testing.assert_allclose(r.bid_scale, [4.0, 4.0])
    # what is still spent and converted, in budgets: λ 1 from step 0 spends 20 of 50 for 10 · 4 / 50; λ 2 from
    # step 1 buys 30 for 7.5 conversions
    np.testing.assert_allclose(r.cost, [[0.0, 0.4, 1.0], [0.0, 0.0, 0.6]], atol=1e-6)
    np.testing.assert_allclose(r.conversions, [[0.0, 0.8, 1.2], [0.0, 0.0, 0.6]], atol=1e-6)


def test_replay_grid_spans_the_range():
    g = replay_grid(5.0, 25)
    assert g[0] == pytest.approx(0.02) and g[-1] == pytest.approx(5.0) and np.all(np.diff(g) > 0)
    with pytest.raises(ValueError, match="at least 2"):
        replay_grid(5.0, 1)


def test_logged_days_pool_into_the_history_onlinelp_reads():
    market = MarketConfig(impressions=2_000, n_steps=6, n_advertisers=6, n_categories=2)
    days = log_days(market, seed=1, periods=range(0, 3), sample=50)
    assert days.value.shape == (3, 6, 6, 50) and days.states.shape == (3, 6, 6, 16)
    h = days.history()
    pooled = log_history(market, seed=1, periods=range(0, 3), sample=50)
    for f in ("value", "cost", "weight"):
        np.testing.assert_array_equal(getattr(h, f), getattr(pooled, f))
    np.testing.assert_array_equal(h.value[:, :, 50:100], days.value[1])  # day 1's samples, side by side
    # what the logging bidders saw: budget left falls as they spend
    spent = np.cumsum(days.cost_paid, axis=1)[:, :-1]
    np.testing.assert_allclose(days.states[:, 1:, :, 1] * days.budget[:, None, :], days.budget[:, None, :] - spent,
                               rtol=1e-4, atol=1e-3)  # fmt: skip


def test_slot_outcomes_price_each_slot_and_its_exposure_by_hand():
    """Three slots shown with 1, 0.8, 0.6, reserve 0.3. One impression (standing for 10), value 1 at bid scale 1,
    its highest bids 5 (advertiser 2), 3 (advertiser 0: ours, left out), 2 (advertiser 1), 1 (advertiser 3): our
    competitors bid 5, 2, 1. At λ 0.5 we bid 0.5: below the three, no slot. At λ 1.5: slot 3 (two bid more), pay 1,
    shown 0.6: cost 6, conversions 6. At λ 2.5: slot 2, pay 2, shown 0.8: 16 and 8. At λ 6: slot 1, pay 5: 50, 10."""
    rules = AuctionRules()
    top = np.array([[[5.0, 3.0, 2.0, 1.0]]])  # (T, M, K+1)
    who = np.array([[[2, 0, 1, 3]]])
    cost, conv = slot_outcomes(np.array([[1.0]]), top, who, 0, np.array([10.0]), 1.0, np.array([0.5, 1.5, 2.5, 6.0]),
                               rules)  # fmt: skip
    np.testing.assert_allclose(cost, [[0.0, 6.0, 16.0, 50.0]])
    np.testing.assert_allclose(conv, [[0.0, 6.0, 8.0, 10.0]])
    # advertiser 3, whose own bid is the fourth: competitors 5, 3, 2; a bid of 0.35 is under all three, and with
    # only one competitor (the others out) it takes slot 2 at the reserve
    cost, conv = slot_outcomes(np.array([[1.0]]), top, who, 3, np.array([10.0]), 1.0, np.array([0.35]), rules)
    np.testing.assert_allclose([cost[0, 0], conv[0, 0]], [0.0, 0.0])
    lone = (np.array([[[5.0, 0.0, 0.0, 0.0]]]), np.array([[[2, -1, -1, -1]]]))
    cost, conv = slot_outcomes(np.array([[1.0]]), *lone, 0, np.array([10.0]), 1.0, np.array([0.35]), rules)
    np.testing.assert_allclose([cost[0, 0], conv[0, 0]], [0.8 * 0.3 * 10, 0.8 * 10])


def test_logged_days_keep_the_highest_bids_of_each_impression():
    market = MarketConfig(impressions=2_000, n_steps=4, n_advertisers=6, n_categories=2)
    days = log_days(market, seed=1, periods=range(0, 2), sample=20)
    K1 = market.rules.n_slots + 1
    assert days.top_bids.shape == (2, 4, 20, K1) and days.top_who.shape == (2, 4, 20, K1)
    assert (np.diff(days.top_bids, axis=-1) <= 0).all()  # highest first
    took_part = days.top_who >= 0
    assert (days.top_bids[~took_part] == 0).all() and (days.top_bids[took_part] > 0).all()
    # the K-th highest bid is the least winning cost wherever it is above the reserve
    kth = days.top_bids[..., K1 - 2]
    above = kth >= market.rules.reserve_price
    np.testing.assert_allclose(days.cost[above], kth[above], rtol=1e-6)
