"""Properties of the auction maths on random auctions (hypothesis), and the score on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.auction import (
    conversion_score,
    enforce_budgets,
    gsp_auction,
    sample_conversions,
    spend_by_advertiser,
)


@st.composite
def auctions(draw):
    n = draw(st.integers(1, 12))
    n_adv = draw(st.integers(2, 7))
    k = draw(st.integers(1, n_adv))
    # a few distinct price levels make ties and zero bids common
    levels = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 7.0]) | st.floats(0.0, 50.0, width=32)
    bids = np.array(draw(st.lists(levels, min_size=n * n_adv, max_size=n * n_adv)), dtype=np.float32)
    reserve = draw(st.sampled_from([0.0, 0.0, 1.0, 3.0]))
    exposure = np.array(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=k, max_size=k)), np.float32)
    seed = draw(st.integers(0, 2**16))
    return bids.reshape(n, n_adv), k, exposure, reserve, seed


def reference(bids: np.ndarray, k: int, reserve: float):
    """Slot winners and prices by sorting each row (stable: ties go to the lower index)."""
    n, n_adv = bids.shape
    winners = np.full((n, k), -1)
    prices = np.zeros((n, k))
    for i in range(n):
        part = [a for a in range(n_adv) if bids[i, a] > 0 and bids[i, a] >= reserve]
        order = sorted(part, key=lambda a: (-bids[i, a], a))
        for s in range(min(k, len(order))):
            winners[i, s] = order[s]
            nxt = bids[i, order[s + 1]] if s + 1 < len(order) else 0.0
            prices[i, s] = max(nxt, reserve)
    return winners, prices


@settings(max_examples=200, deadline=None)
@given(auctions())
def test_gsp_matches_sorting_and_never_overcharges(case):
    bids, k, exposure, reserve, seed = case
    res = gsp_auction(bids, k, exposure, reserve, np.random.default_rng(seed))
    want_w, want_p = reference(bids, k, reserve)
    np.testing.assert_array_equal(res.winners, want_w)
    np.testing.assert_allclose(res.prices, want_p, rtol=0, atol=0)
    filled = res.winners >= 0
    own = np.where(filled, bids[np.arange(len(bids))[:, None], np.maximum(res.winners, 0)], 0.0)
    # a winner never pays more than its bid, and never less than the reserve
    assert np.all(res.prices[filled] <= own[filled])
    assert np.all(res.prices[filled] >= reserve)
    # slot order follows bid order, and empty slots come last
    assert np.all(np.diff(np.where(filled, own, -1.0), axis=1) <= 0)
    # only filled slots are exposed; a slot with exposure 0 is never shown, exposure 1 always
    assert not np.any(res.exposed & ~filled)
    assert not np.any(res.exposed[:, exposure == 0.0])
    assert np.all(res.exposed[:, exposure == 1.0] == filled[:, exposure == 1.0])
    # the least winning cost is the K-th highest participating bid (or the reserve)
    for i in range(len(bids)):
        part = np.sort(bids[i][(bids[i] > 0) & (bids[i] >= reserve)])[::-1]
        want = max(part[k - 1], reserve) if part.size >= k else reserve
        assert res.least_winning_cost[i] == pytest.approx(want)


@settings(max_examples=200, deadline=None)
@given(auctions(), st.lists(st.floats(0.0, 30.0), min_size=7, max_size=7))
def test_budgets_are_never_exceeded(case, budgets):
    bids, k, exposure, reserve, seed = case
    rng = np.random.default_rng(seed)
    res = gsp_auction(bids, k, exposure, reserve, rng)
    remaining = np.array(budgets[: bids.shape[1]])
    before = spend_by_advertiser(res, bids.shape[1])
    trimmed, cost, dropped = enforce_budgets(res, remaining, rng)
    assert np.all(cost <= remaining + 1e-9)
    np.testing.assert_allclose(cost, spend_by_advertiser(trimmed, bids.shape[1]))
    np.testing.assert_array_equal(dropped, before > remaining)
    # advertisers within budget keep every win; nobody gains a slot
    keep = ~dropped
    for a in np.flatnonzero(keep):
        np.testing.assert_array_equal(
            trimmed.exposed & (trimmed.winners == a), res.exposed & (res.winners == a)
        )
    assert np.all((trimmed.winners == res.winners) | (trimmed.winners == -1))


def test_budget_trim_keeps_a_prefix_that_fits():
    # one advertiser wins 5 exposed slots at price 2 with 7 left: exactly 3 fit
    bids = np.array([[5.0, 2.0]] * 5, dtype=np.float32)
    res = gsp_auction(bids, 1, np.array([1.0], np.float32), 0.0, np.random.default_rng(0))
    trimmed, cost, dropped = enforce_budgets(res, np.array([7.0, 10.0]), np.random.default_rng(1))
    assert cost.tolist() == [6.0, 0.0]
    assert dropped.tolist() == [True, False]
    assert int((trimmed.winners[:, 0] == 0).sum()) == 3
    assert int((trimmed.winners[:, 0] == -1).sum()) == 2  # dropped slots stay empty


def test_conversions_are_sampled_for_exposed_wins_only():
    bids = np.array([[3.0, 2.0, 1.0]] * 1000, dtype=np.float32)
    res = gsp_auction(bids, 2, np.array([1.0, 0.0], np.float32), 0.0, np.random.default_rng(0))
    p = np.full((1000, 3), 0.3, np.float32)
    (imp, adv), conv = sample_conversions(res, p, np.zeros(3, np.float32), np.random.default_rng(1))
    assert set(adv.tolist()) == {0}  # slot 2 is never shown
    assert len(imp) == 1000
    assert 0.25 < conv.mean() < 0.35


def test_score_hand_cases():
    # 10 conversions for 1200 against a CPA target of 100: cpa 120, penalty (100/120)^2
    assert conversion_score(10, 1200.0, 100.0) == pytest.approx(10 * (100 / 120) ** 2)
    assert conversion_score(10, 800.0, 100.0) == pytest.approx(10.0)  # under target: no penalty
    assert conversion_score(10, 1200.0, 100.0, beta=1.0) == pytest.approx(10 * 100 / 120)
    assert conversion_score(0, 50.0, 100.0) == 0.0
    assert conversion_score(3, 0.0, 100.0) == 3.0
    # ROI: value 200 per conversion, ROI target 2 -> at most 100 per conversion; roi = 2000/1250 = 1.6
    assert conversion_score(10, 1250.0, 200 / 2) == pytest.approx(10 * (1.6 / 2) ** 2)


def test_bad_auction_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_slots"):
        gsp_auction(np.ones((2, 3)), 4, np.ones(4), 0.0, rng)
    with pytest.raises(ValueError, match="one probability per slot"):
        gsp_auction(np.ones((2, 3)), 2, np.ones(3), 0.0, rng)
    with pytest.raises(ValueError, match="impressions, advertisers"):
        gsp_auction(np.ones(3), 1, np.ones(1), 0.0, rng)
