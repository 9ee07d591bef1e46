"""The gymnasium auction env: checkers, determinism, a hand-worked PID market, bad configurations."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import simulators
from simulators.auction import AuctionRules
from simulators.bidders import FixedBidder, OnlineLPBidder, PacingBidder, PIDBidder
from simulators.env import AuctionEnv
from simulators.market import Advertisers, Market, MarketConfig

SMALL = dict(impressions=3000, n_steps=12, n_advertisers=8, n_categories=2)


def test_registered_and_passes_both_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(simulators.ENV_ID, **SMALL)
    check_env(env.unwrapped)
    sb3_check_env(AuctionEnv(**SMALL), warn=False)


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards = []
    for a in actions:
        obs, r, term, trunc, info = env.step(np.array([a], np.float32))
        out.append(obs)
        rewards.append(r)
    return np.stack(out), np.array(rewards), info, term


def test_deterministic_under_seed_and_rewards_add_up_to_the_score():
    actions = np.linspace(0.3, 2.0, 12)
    a = _rollout(AuctionEnv(**SMALL), 7, actions)
    b = _rollout(AuctionEnv(**SMALL), 7, actions)
    c = _rollout(AuctionEnv(**SMALL), 8, actions)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    obs, rewards, info, term = a
    assert term
    assert rewards.sum() == pytest.approx(info["score"])
    want = info["total_conversions"] * min(1.0, (info["bid_scale"] / max(info["cpa"], 1e-12)) ** 2)
    assert info["score"] == pytest.approx(want)
    assert info["total_cost"] <= info["budget"] + 1e-9
    assert obs[-1, 0] == 0.0 and obs[0, 0] == 1.0  # time left
    assert np.all(obs >= 0)


def test_vector_env():
    envs = gym.vector.SyncVectorEnv([lambda: AuctionEnv(**SMALL) for _ in range(3)])
    obs, _ = envs.reset(seed=[1, 2, 3])
    assert obs.shape == (3, 16)
    obs, rew, term, trunc, info = envs.step(np.ones((3, 1), np.float32))
    assert obs.shape == (3, 16) and rew.shape == (3,)
    envs.close()


def test_out_of_range_action_is_clipped_and_nan_refused():
    env = AuctionEnv(**SMALL, alpha_max=3.0)
    high = _rollout(env, 1, [100.0] * 12)
    at_max = _rollout(AuctionEnv(**SMALL, alpha_max=3.0), 1, [3.0] * 12)
    np.testing.assert_array_equal(high[0], at_max[0])
    neg = _rollout(AuctionEnv(**SMALL), 1, [-5.0] * 12)
    assert neg[2]["total_cost"] == 0.0  # clipped to α = 0: never bids
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan], np.float32))
    for bad in (None, [None]):  # np.asarray(None, float) is nan: the message must say None
        with pytest.raises(ValueError, match="action is None"):
            env.step(bad)
    with pytest.raises(ValueError, match="one number"):
        env.step("high")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget_range=(-10.0, 5.0)), "budget_range"),
        (dict(n_slots=9, exposure=(1.0,) * 9), "n_slots"),
        (dict(exposure=(1.0, 0.5)), "exposure"),
        (dict(reserve_price=float("nan")), "reserve_price"),
        (dict(bogus=1), "unknown market settings"),
    ],
)
def test_bad_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AuctionEnv(**{**SMALL, **kwargs})


def test_negative_budget_given_directly_is_refused():
    cfg = MarketConfig(**{**SMALL, "n_advertisers": 2, "rules": AuctionRules(n_slots=1, exposure=(1.0,))})
    adv = _two_advertisers(budgets=(-1.0, 10.0), scales=(1.0, 1.0))
    with pytest.raises(ValueError, match="advertiser 0 has a negative"):
        Market(cfg, np.random.default_rng(0), advertisers=adv)


def _two_advertisers(budgets, scales):
    n = 2
    return Advertisers(
        category=np.zeros(n, dtype=np.int64),
        budget=np.array(budgets, dtype=float),
        kind=np.array(["cpa"] * n),
        target=np.array(scales, dtype=float),
        value=np.array(scales, dtype=float),
        bid_scale=np.array(scales, dtype=float),
        acquisition=np.zeros(n, dtype=bool),
        p_level=np.ones(n),
        sigma=np.zeros(n),
    )


def _hand_market(n_steps: int, **rules) -> MarketConfig:
    """Two advertisers, one impression per step, one slot always shown, p = 1 and no noise: every shown ad converts."""
    return MarketConfig(
        impressions=n_steps, n_steps=n_steps, n_advertisers=2, n_categories=1,
        rules=AuctionRules(n_slots=1, exposure=(1.0,), **rules),
        traffic_amplitude=0.0, p_mean=1.0, category_spread=0.0, advertiser_spread=0.0, interest_spread=0.0,
        pair_noise=0.0, sigma_range=(0.0, 0.0),
    )  # fmt: skip


def test_pid_competitor_on_a_hand_built_market():
    """One impression per step, one slot always shown, p = 1 (every shown ad converts).

    The agent bids a fixed 13 (α 1 × CPA target 13). The PID competitor has CPA target 12, α0 = 1.2, kp 0.5,
    ki 0.1, kd 0: it bids 14.4 at step 0, wins and pays 13, so its CPA is 13 and its error e = 1 − 13/12 = −1/12 at
    every update. After t updates α_t = 1.2·exp(−(0.5 + 0.1·t)/12), its bid is 12·α_t, and it keeps winning while
    12·α_t > 13, i.e. while (0.5 + 0.1·t)/12 < ln(1.2·12/13), i.e. t ≤ 7: it pays 13 at steps 0..7. From step 8 on
    the agent wins and pays the PID's bid 14.4·exp(−(0.5 + 0.1·t)/12) (the PID keeps updating: its CPA stays 13).
    """
    cfg = _hand_market(48)
    pid = PIDBidder(alpha0=1.2, kp=0.5, ki=0.1, kd=0.0, lo=0.1, hi=3.0)
    env = AuctionEnv(config=cfg, competitors=[pid])
    env.reset(seed=0, options={"advertisers": _two_advertisers(budgets=(1e6, 1e6), scales=(13.0, 12.0))})
    agent_cost, pid_cost = [], []
    for _ in range(48):
        _, _, term, _, info = env.step(np.array([1.0], np.float32))
        agent_cost.append(info["cost"])
        pid_cost.append(float(env.unwrapped.market.spent[1]) - sum(pid_cost))
    want_pid = [13.0] * 8 + [0.0] * 40
    want_agent = [0.0] * 8 + [14.4 * math.exp(-(0.5 + 0.1 * t) / 12) for t in range(8, 48)]
    np.testing.assert_allclose(pid_cost, want_pid, rtol=1e-5)
    np.testing.assert_allclose(agent_cost, want_agent, rtol=1e-5)
    assert term
    assert info["total_conversions"] == 40.0
    assert pid.conversions == 8.0 and pid.cost == pytest.approx(104.0)


def test_budget_exhaustion_pauses_the_campaign():
    cfg = _hand_market(10, reserve_price=2.0)
    # the competitor (scale 12) outbids the agent (scale 10), pays 10 a step, and has 45: 4 wins, then its 5th
    # win is dropped and it pauses; the agent then wins alone at the reserve price 2
    env = AuctionEnv(config=cfg, competitors=[FixedBidder(1.0)])
    env.reset(seed=0, options={"advertisers": _two_advertisers(budgets=(100.0, 45.0), scales=(10.0, 12.0))})
    costs = [env.step(np.array([1.0], np.float32))[4]["cost"] for _ in range(10)]
    assert costs == [0.0] * 5 + [2.0] * 5
    assert env.unwrapped.market.spent[1] == pytest.approx(40.0)


def test_protocol_bidders_compete_and_all_heuristics_run():
    comps = [FixedBidder(0.8), PIDBidder(), PacingBidder(n_steps=12), OnlineLPBidder(n_steps=12)] * 2
    env = AuctionEnv(**SMALL, competitors=comps[:7])
    _, rewards, info, term = _rollout(env, 3, [1.0] * 12)
    assert term and info["total_cost"] > 0
    spent = env.market.spent
    assert np.all(spent <= env.market.advertisers.budget + 1e-9)
    assert env.market.spent[1:].sum() > 0  # the competitors bought something
