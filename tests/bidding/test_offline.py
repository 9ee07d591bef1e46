"""BC, IQL and CQL: the expectile loss by hand, and one contract over every learned bidder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bidding.data import load_trajectories
from bidding.dt import DTBidder, DTConfig, DTTrainConfig, ValueConfig, train_dt
from bidding.offline import OfflineConfig, PolicyBidder, expectile_loss, train_offline
from bidding.online import OnlineConfig, SB3Bidder, train_online
from pipelines import simulate
from simulators.bidders import default_competitors
from simulators.rollout import run_period

TINY = simulate.PRESETS["tiny"]


def test_expectile_loss_by_hand():
    # diffs -2 and 1 at τ = 0.7: (0.3 · 4 + 0.7 · 1) / 2
    assert float(expectile_loss(torch.tensor([-2.0, 1.0]), 0.7)) == pytest.approx(0.95)
    # τ = 0.5 is half the mean squared error
    assert float(expectile_loss(torch.tensor([-2.0, 1.0]), 0.5)) == pytest.approx(0.5 * 2.5)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("traj")
    cfg = replace(TINY, output=str(out), periods=6, policies=("fixed", "pid", "pacing", "lp"), progress=False)
    simulate.main(cfg)
    return load_trajectories(out)


def _train(kind: str, ep):
    if kind in ("ppo", "sac"):
        cfg = OnlineConfig(algorithm=kind, timesteps=128, impressions=2_000)
        return train_online(TINY.market, cfg)[0], SB3Bidder.load
    if kind in ("dt", "vdt"):
        cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=ep.n_steps)
        tcfg = DTTrainConfig(steps=60, batch_size=16, warmup=5)
        if kind == "vdt":
            cfg = replace(cfg, explore_epsilon=0.3)
            bidder, stats = train_dt(ep, cfg, tcfg, ValueConfig(critic_steps=50, critic_hidden=32))
            assert 0.0 <= stats["explored_share"] <= 1.0 and np.isfinite(stats["critic_loss"])
        else:
            bidder, _ = train_dt(ep, cfg, tcfg)
        assert bidder.name == kind
        return bidder, DTBidder.load
    cfg = OfflineConfig(algorithm=kind, hidden=32, steps=60, batch_size=64)
    return train_offline(ep, cfg)[0], PolicyBidder.load


def _play(bidder, seed=3):
    market = TINY.market
    others = default_competitors(
        market.n_advertisers - 1, np.random.default_rng(seed + 1), n_steps=market.n_steps
    )
    return run_period(market, [bidder, *others], np.random.default_rng(seed)).actions[:, 0]


@pytest.mark.parametrize("kind", ["bc", "iql", "cql", "dt", "vdt", "ppo", "sac"])
def test_bidder_contract(kind, episodes, tmp_path):
    """Every learned bidder: acts in range, saves, loads, and bids the same after loading."""
    bidder, load = _train(kind, episodes)
    first = _play(bidder)
    assert np.all(np.isfinite(first)) and np.all((first >= 0) & (first <= 5.0))
    loaded = load(bidder.save(tmp_path / kind))
    np.testing.assert_allclose(_play(loaded), first, atol=1e-6)


def test_bc_learns_the_logged_actions(episodes):
    _, stats = train_offline(episodes, OfflineConfig(algorithm="bc", hidden=32, steps=300, batch_size=64))
    assert stats["final_policy_loss"] < 0.5 * stats["first_policy_loss"]


def test_unknown_algorithm_and_missing_save(tmp_path, episodes):
    with pytest.raises(ValueError, match="unknown offline algorithm"):
        train_offline(episodes, OfflineConfig(algorithm="td3"))
    with pytest.raises(FileNotFoundError, match="not a saved policy"):
        PolicyBidder.load(tmp_path)


def test_value_guidance_needs_both_settings(episodes):
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    with pytest.raises(ValueError, match="value-guided DT needs both"):
        train_dt(episodes, cfg, DTTrainConfig(steps=1), ValueConfig())
    with pytest.raises(ValueError, match="value-guided DT needs both"):
        train_dt(episodes, replace(cfg, explore_epsilon=0.2), DTTrainConfig(steps=1))


@pytest.mark.parametrize("critic", ["td", "mc"])
def test_value_guided_dt_with_each_critic(episodes, critic):
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    cfg = replace(cfg, explore_epsilon=0.2)
    value = ValueConfig(critic=critic, critic_steps=30, critic_hidden=16)
    bidder, stats = train_dt(episodes, cfg, DTTrainConfig(steps=5, batch_size=8, warmup=1), value)
    assert bidder.name == "vdt" and np.isfinite(stats["critic_loss"])


def test_unknown_critic(episodes):
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    with pytest.raises(ValueError, match="unknown critic 'gae'"):
        train_dt(
            episodes, replace(cfg, explore_epsilon=0.2), DTTrainConfig(steps=1), ValueConfig(critic="gae")
        )


def test_value_target_asks_for_the_value_of_the_state(episodes, tmp_path):
    """With value_target, the return fed to the DT at every step is V(current state), and it survives save/load."""
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    cfg = replace(cfg, value_target=True, value_hidden=16)
    value = ValueConfig(target_steps=50)
    bidder, stats = train_dt(episodes, cfg, DTTrainConfig(steps=5, batch_size=8, warmup=1), value)
    assert bidder.name == "vdt" and np.isfinite(stats["return_value_loss"]) and "critic_loss" not in stats
    first = _play(bidder)
    v = bidder.model.return_value
    asked = [float(v(torch.from_numpy(s)[None])[0, 0]) for s in bidder.states]
    np.testing.assert_allclose(bidder.rtgs, asked, rtol=1e-6)
    np.testing.assert_allclose(_play(DTBidder.load(bidder.save(tmp_path / "vdt"))), first, atol=1e-6)
