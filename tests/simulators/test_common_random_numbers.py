"""The auction's rules in one place, and common random numbers: two bidders who play one period face one market."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simulators.auction import AuctionRules, PairNoise
from simulators.bidders import FixedBidder, default_competitors
from simulators.env import AuctionEnv
from simulators.market import STATE_FEATURES, Advertisers, Market, MarketConfig
from simulators.rollout import run_period

MARKET = MarketConfig(impressions=4000, n_steps=8, n_advertisers=6, n_categories=2, budget_range=(20.0, 60.0))


class _Recorder:
    """Wraps a bidder; records the state it is shown, the α it returns and, as an observer, each step's p values."""

    def __init__(self, inner):
        self.inner, self.states, self.alphas, self.p_values = inner, [], [], []

    def reset(self, advertiser):
        self.advertiser = advertiser
        self.inner.reset(advertiser)

    def act(self, state):
        self.states.append(np.array(state))
        a = self.inner.act(state)
        self.alphas.append(a)
        return a

    def observe(self, feedback):
        self.p_values.append(feedback.p_value.copy())
        if hasattr(self.inner, "observe"):
            self.inner.observe(feedback)


def _play(agent_alpha: float, competitors: list, seed: int = 3):
    rec = [_Recorder(b) for b in [FixedBidder(agent_alpha), *competitors]]
    traj = run_period(MARKET, rec, np.random.default_rng(seed))
    return rec, traj


def test_pair_noise_is_a_pure_function_of_its_key():
    noise = PairNoise(7)
    imp, adv = np.array([0, 5, 9, 5]), np.array([1, 1, 2, 3])
    u = noise.uniform(2, 4, imp, adv)
    # the same keys in another order, among other keys, and after other draws: the same numbers
    noise.uniform(1, 4, np.arange(100), np.zeros(100, int))
    again = PairNoise(7).uniform(2, 4, np.array([9, 0, 7, 5, 5]), np.array([2, 1, 0, 3, 1]))
    np.testing.assert_array_equal(again[[1, 4, 0, 3]], u)
    assert np.all((u >= 0) & (u < 1))
    # any part of the key moves the draw
    for other in (
        PairNoise(8).uniform(2, 4, imp, adv),
        noise.uniform(1, 4, imp, adv),
        noise.uniform(2, 5, imp, adv),
    ):
        assert not np.any(other == u)
    big = noise.uniform(2, 0, np.arange(200_000), np.zeros(200_000, int))
    assert abs(big.mean() - 0.5) < 0.005 and abs(big.var() - 1 / 12) < 0.002
    u32, z = noise.uniform_and_normal(2, 0, np.arange(200_000), np.arange(200_000) % 7)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and abs(np.corrcoef(u32, z)[0, 1]) < 0.01
    assert abs(u32.mean() - 0.5) < 0.005 and u32.dtype == np.float32


def test_two_bidders_face_the_same_traffic_and_the_same_competitors():
    """A timid and a greedy bidder in slot 0 of one period: the impressions (p values), and the bids of competitors
    whose α does not react to the market, are identical; only what depends on the agent's own bids differs."""
    comps = [FixedBidder(a) for a in (0.3, 0.6, 0.9, 1.2, 1.5)]
    timid, t_traj = _play(0.05, [dataclasses.replace(c) for c in comps])
    greedy, g_traj = _play(2.0, [dataclasses.replace(c) for c in comps])
    assert g_traj.cost[0, 0] > 10 * t_traj.cost[0, 0] and not np.array_equal(
        g_traj.cost[:, 0], t_traj.cost[:, 0]
    )
    for a, b in zip(timid[0].p_values, greedy[0].p_values, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(t_traj.actions[:, 1:], g_traj.actions[:, 1:])
    # the market's step-mean p value of every advertiser (state feature) is the same in both plays
    col = STATE_FEATURES.index("cur_pvalue_mean")
    np.testing.assert_array_equal(t_traj.states[:, :, col], g_traj.states[:, :, col])


def test_reacting_competitors_see_the_same_first_step():
    """Default competitors (PID, pacing, online LP) react to what happened, so they may differ after step 0, but
    at step 0 (before anything happened) they are shown the same state and bid the same α in both plays."""
    comps = lambda: default_competitors(5, np.random.default_rng(11), MARKET.n_steps)  # noqa: E731
    timid, _ = _play(0.05, comps())
    greedy, _ = _play(2.0, comps())
    for i in range(1, 6):
        np.testing.assert_array_equal(timid[i].states[0], greedy[i].states[0])
        assert timid[i].alphas[0] == greedy[i].alphas[0]
    for a, b in zip(timid[0].p_values, greedy[0].p_values, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_tiny_change_of_alpha_moves_the_outcome_a_tiny_amount():
    """Before common random numbers, α 0.12 and 0.1201 drew different traffic once one budget trim or one
    exposure differed; now the same impressions and the same coins decide both plays."""
    comps = [FixedBidder(a) for a in (0.3, 0.6, 0.9, 1.2, 1.5)]
    _, a = _play(0.9, [dataclasses.replace(c) for c in comps])
    _, b = _play(0.9001, [dataclasses.replace(c) for c in comps])
    assert abs(a.conversions[:, 0].sum() - b.conversions[:, 0].sum()) <= 2
    np.testing.assert_allclose(a.cost[:, 0].sum(), b.cost[:, 0].sum(), rtol=0.02)


def test_new_customer_flags_and_exposure_draws_do_not_depend_on_bids():
    cfg = dataclasses.replace(MARKET, acquisition_share=0.5)
    m1, m2 = Market(cfg, np.random.default_rng(5)), Market(cfg, np.random.default_rng(5))
    for _ in range(cfg.n_steps):
        np.testing.assert_array_equal(m1.new_customer, m2.new_customer)
        np.testing.assert_array_equal(m1._shown_draws, m2._shown_draws)
        m1.step(np.full(cfg.n_advertisers, 0.2))
        m2.step(np.full(cfg.n_advertisers, 3.0))


def test_auction_rules_are_validated_and_reach_every_bidder():
    with pytest.raises(ValueError, match="bad auction rules: exposure needs one probability per slot"):
        AuctionRules(n_slots=2)
    with pytest.raises(ValueError, match="beta must be a positive number"):
        AuctionRules(beta=float("nan"))
    with pytest.raises(ValueError, match="alpha_max"):
        AuctionRules(alpha_max=0.0)
    with pytest.raises(ValueError, match="rules must be an AuctionRules"):
        MarketConfig(rules={"n_slots": 3})
    rules = AuctionRules(beta=1.0, alpha_max=2.5, reserve_price=0.1)
    cfg = dataclasses.replace(MARKET, rules=rules)
    rec = [_Recorder(FixedBidder(9.0)), *(_Recorder(FixedBidder(1.0)) for _ in range(5))]
    traj = run_period(cfg, rec, np.random.default_rng(0))
    assert all(r.advertiser.rules is rules for r in rec)
    assert np.all(traj.actions[:, 0] == 2.5)  # clipped to the rules' alpha_max
    # the env routes rule names given as market settings into the rules
    env = AuctionEnv(**{k: getattr(MARKET, k) for k in ("impressions", "n_steps", "n_advertisers")}, beta=1.0)
    assert env.cfg.rules == AuctionRules(beta=1.0) and env.action_space.high[0] == AuctionRules.alpha_max
    assert AuctionEnv(n_advertisers=6, alpha_max=3.0).action_space.high[0] == 3.0


def _hand_market(**kw) -> MarketConfig:
    """Two advertisers, one impression per step, one slot always shown, p = 1 and no noise: every shown ad converts."""
    return MarketConfig(
        impressions=40, n_steps=40, n_advertisers=2, n_categories=1,
        rules=AuctionRules(n_slots=1, exposure=(1.0,), reserve_price=1.0),
        traffic_amplitude=0.0, p_mean=1.0, category_spread=0.0, advertiser_spread=0.0, interest_spread=0.0,
        pair_noise=0.0, sigma_range=(0.0, 0.0), **kw,
    )  # fmt: skip


def _advertisers(kind0: str, acquisition0: bool) -> Advertisers:
    return Advertisers(
        category=np.zeros(2, dtype=np.int64),
        budget=np.array([1e6, 1e6]),
        kind=np.array([kind0, "cpa"]),
        target=np.array([20.0, 10.0]),
        value=np.array([20.0, 10.0]),
        bid_scale=np.array([20.0, 10.0]),
        acquisition=np.array([acquisition0, False]),
        p_level=np.ones(2),
        sigma=np.zeros(2),
    )


def test_acquisition_advertiser_buys_and_counts_only_users_new_to_it():
    """Advertiser 0 (acquisition, bids 20 at α 1) against advertiser 1 (bids 10): on a user new to advertiser 0 it
    wins, pays 10 and converts; on any other user it does not bid, and advertiser 1 wins alone at the reserve 1."""
    market = Market(_hand_market(acquisition_share=1.0, new_customer_rate=0.5), np.random.default_rng(0),
                    advertisers=_advertisers("cpa", True))  # fmt: skip
    new = []
    while not market.done:
        assert market.new_customer.shape == (1, 1)
        new.append(bool(market.new_customer[0, 0]))
        market.step(np.ones(2))
    k = sum(new)
    assert 8 < k < 32  # about half the users are new to it
    np.testing.assert_allclose(market.conversions, [k, 40 - k])
    np.testing.assert_allclose(market.spent, [10.0 * k, 1.0 * (40 - k)])


def test_flags_are_drawn_per_user_and_advertiser():
    cfg = dataclasses.replace(MARKET, acquisition_share=1.0, roi_share=0.0)
    market = Market(cfg, np.random.default_rng(1))
    flags = market.new_customer
    assert flags.shape == (cfg.n_advertisers, int(market.traffic[0]))
    assert abs(flags.mean() - cfg.new_customer_rate) < 0.02
    assert 0.3 < (flags[0] != flags[1]).mean() < 0.7  # one user is new to one advertiser and not to another


def test_roi_advertiser_bids_and_counts_the_order_value():
    """Advertiser 0 (ROI, bid scale 20) bids 20·m on an impression of order value m, against 10: it wins when
    m > 0.5, pays 10, and its conversion counts m; its score is Σm × min(1, (20 Σm / cost)²)."""
    market = Market(
        _hand_market(value_spread=0.8), np.random.default_rng(2), advertisers=_advertisers("roi", False)
    )
    values = []
    while not market.done:
        values.append(float(market.factor[0, 0]))
        market.step(np.ones(2))
    m = np.array(values)
    assert m.std() > 0.3  # order values differ
    won = m > 0.5
    np.testing.assert_allclose(market.conversions[0], m[won].sum(), rtol=1e-6)
    np.testing.assert_allclose(market.spent[0], 10.0 * won.sum(), rtol=1e-6)
    np.testing.assert_allclose(market.conversions[1], (~won).sum())
    want = m[won].sum() * min(1.0, (20 * m[won].sum() / (10.0 * won.sum())) ** 2)
    np.testing.assert_allclose(market.scores()[0], want, rtol=1e-6)


def test_regimes_are_named_markets():
    from simulators.regimes import REGIMES, regime

    assert set(REGIMES) == {"budget-bound", "cpa-bound", "roi", "acquisition"}
    assert regime("budget-bound") == MarketConfig()
    assert regime("roi", impressions=1000).impressions == 1000 and regime("roi").value_spread > 0
    with pytest.raises(ValueError, match="unknown regime 'cpa'"):
        regime("cpa")
    small = regime("cpa-bound", scale=0.2, n_steps=24)
    assert small.impressions == 100_000 and small.n_steps == 24
    assert (
        small.budget_range == pytest.approx((30_000.0, 90_000.0))
        and small.cpa_range == REGIMES["cpa-bound"].cpa_range
    )
    with pytest.raises(ValueError, match="scale"):
        regime("roi", scale=0.0)
