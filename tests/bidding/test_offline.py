"""BC, IQL and CQL: the expectile loss by hand, and one contract over every learned bidder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bidding.data import featurize_state, load_trajectories
from bidding.dt import (
    DTBidder,
    DTConfig,
    DTTrainConfig,
    ValueConfig,
    constant_alphas,
    fit_plan_value,
    train_dt,
)
from bidding.history_lp import log_days
from bidding.offline import OfflineConfig, PolicyBidder, expectile_loss, mlp, train_offline
from bidding.online import (
    LOG_ALPHA_FLOOR,
    FeaturizedAuction,
    LogAlphaAction,
    OnlineConfig,
    SB3Bidder,
    ScaledReward,
    log_alpha_to_alpha,
    train_online,
)
from bidding.replay import replay_grid, replay_values
from pipelines import simulate
from simulators.bidders import default_competitors
from simulators.env import AuctionEnv
from simulators.market import Advertiser, Market
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
    if kind in ("dt", "vdt", "gas"):
        cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=ep.n_steps)
        tcfg = DTTrainConfig(steps=60, batch_size=16, warmup=5)
        if kind == "vdt":  # as bench-bidding trains it: the value-set return and the plan value
            cfg = replace(cfg, value_target=True, plan_weight=0.75, value_hidden=16)
            bidder, stats = train_dt(ep, cfg, tcfg, ValueConfig(target_steps=30, plan_steps=30))
            assert np.isfinite(stats["return_value_loss"]) and np.isfinite(stats["plan_value_loss"])
        elif kind == "gas":  # search over the asked return, its twin critic kept in the model
            cfg = replace(cfg, rtg_search=(0.5, 1.0, 1.5), value_hidden=16)
            bidder, stats = train_dt(ep, cfg, tcfg, ValueConfig(critic_steps=30))
            assert np.isfinite(stats["critic_loss"]) and "explored_share" not in stats
        else:
            bidder, _ = train_dt(ep, cfg, tcfg)
        assert bidder.name == ("vdt" if kind == "gas" else kind)
        return bidder, DTBidder.load
    cfg = OfflineConfig(algorithm=kind, hidden=32, steps=60, batch_size=64)
    return train_offline(ep, cfg)[0], PolicyBidder.load


def _play(bidder, seed=3):
    market = TINY.market
    others = default_competitors(
        market.n_advertisers - 1, np.random.default_rng(seed + 1), n_steps=market.n_steps
    )
    return run_period(market, [bidder, *others], np.random.default_rng(seed)).actions[:, 0]


@pytest.mark.parametrize("kind", ["bc", "iql", "cql", "dt", "vdt", "gas", "ppo", "sac"])
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
    assert 0.0 <= stats["explored_share"] <= 1.0
    first = _play(bidder)
    assert np.all(np.isfinite(first)) and np.all((first >= 0) & (first <= 5.0))


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


def test_constant_alphas_by_hand():
    # the geometric mean undoes multiplicative noise exp(±0.2); a bid of 0 counts as 1e-4
    actions = np.array([[0.1 * np.exp(0.2), 0.1 * np.exp(-0.2)], [0.5, 0.5], [0.0, 1e-4]])
    np.testing.assert_allclose(constant_alphas(actions), [0.1, 0.5, 1e-4], rtol=1e-9)


def test_plan_value_finds_the_constant_bid_that_pays():
    """Toy returns that peak at λ = 0.2: the fitted V(s, λ) ranks λ by them, from any state."""
    rng = np.random.default_rng(0)
    E, T, S = 400, 6, 16
    states = rng.normal(size=(E, T, S)).astype(np.float32)
    lam = np.exp(rng.uniform(np.log(0.03), np.log(1.3), size=E))
    steps_left = (T - np.arange(T)) / T
    rtg = (steps_left[None, :] * (1.0 - (np.log(lam) - np.log(0.2))[:, None] ** 2)).astype(np.float32)
    torch.manual_seed(0)
    v = mlp(S + 1, 64)
    loss, r2 = fit_plan_value(v, states, rtg, lam, steps=1500, seed=0)
    assert r2 > 0.95 and loss < 0.05
    grid = np.geomspace(0.03, 1.3, 25)
    for s in states[:5, 0]:
        x = torch.from_numpy(
            np.concatenate([np.repeat(s[None], 25, 0), np.log(grid)[:, None]], 1).astype("f4")
        )
        best = grid[int(torch.argmax(v(x).squeeze(-1)))]
        assert 0.2 / 1.4 < best < 0.2 * 1.4  # the grid steps by a factor 1.17


def test_plan_value_pulls_the_dt_bid_towards_the_best_constant_bid(episodes, tmp_path):
    """bid = α_DT^(1 − w) · λ*^w with λ* the grid's argmax of V(s, λ) (the torch module), the DT reads the bid it
    made, and the plan survives save/load."""
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    cfg = replace(cfg, plan_weight=0.75, value_hidden=16, plan_points=7)
    bidder, stats = train_dt(
        episodes, cfg, DTTrainConfig(steps=5, batch_size=8, warmup=1), ValueConfig(plan_steps=50)
    )
    assert bidder.name == "vdt" and stats["plan_episodes"] == int((episodes.policy == "fixed").sum()) > 0
    lam = constant_alphas(episodes.actions[episodes.policy == "fixed"])
    grid = bidder.model.plan_grid.numpy()
    assert grid[0] == pytest.approx(np.quantile(lam, 0.01), rel=1e-5)
    assert grid[-1] == pytest.approx(np.quantile(lam, 0.99), rel=1e-5)
    bids = _play(bidder)
    assert len(bidder.dt_actions) == len(bidder.actions) == len(bids)
    with torch.no_grad():
        for s, a_dt, bid in zip(bidder.states, bidder.dt_actions, bidder.actions, strict=True):
            x = torch.from_numpy(np.concatenate([np.repeat(s[None], 7, 0), np.log(grid)[:, None]], 1))
            best = grid[int(torch.argmax(bidder.model.plan_value(x).squeeze(-1)))]
            assert bid == pytest.approx(min(5.0, a_dt**0.25 * best**0.75), rel=1e-5)
    np.testing.assert_allclose(bids, bidder.actions, rtol=1e-6)
    np.testing.assert_allclose(_play(DTBidder.load(bidder.save(tmp_path / "vdt"))), bids, atol=1e-6)


def test_plan_value_from_replayed_logs_needs_no_constant_bids(episodes, tmp_path):
    """plan_source replay: the plan value learns V(s, λ) from replayed values on the replay grid (here every state's
    best constant is the grid's second, 0.080, which no logged episode bid), on data without a constant-bid episode."""
    T = episodes.n_steps
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=T)
    cfg = replace(cfg, plan_weight=1.0, value_hidden=16, plan_points=5, plan_source="replay")
    grid = replay_grid(5.0, 5)  # 0.02, 0.080, 0.32, 1.26, 5
    days = log_days(TINY.market, seed=1, periods=range(0, 2), sample=16)
    real = replay_values(days, grid, TINY.market.rules)
    peaked = -np.abs(np.arange(5) - 1.0)
    replayed = replace(real, value=np.broadcast_to(peaked, real.value.shape).astype(np.float32))
    no_fixed = episodes.subset(episodes.policy != "fixed")
    bidder, stats = train_dt(no_fixed, cfg, DTTrainConfig(steps=3, batch_size=8, warmup=1),
                             ValueConfig(plan_steps=1000), replayed=replayed)  # fmt: skip
    assert stats["plan_states"] == real.value.shape[0] and stats["plan_value_r2_train"] > 0.9
    np.testing.assert_allclose(bidder.model.plan_grid.numpy(), grid, rtol=1e-6)
    bids = _play(bidder)
    np.testing.assert_allclose(bids, grid[1], rtol=1e-5)  # w = 1: λ* alone, the best constant, at every step
    np.testing.assert_allclose(_play(DTBidder.load(bidder.save(tmp_path / "vdt"))), bids, atol=1e-6)
    with pytest.raises(ValueError, match="needs their values"):
        train_dt(no_fixed, cfg, DTTrainConfig(steps=1), ValueConfig())
    with pytest.raises(ValueError, match="hold 5 constants, plan_points is 9"):
        train_dt(
            no_fixed, replace(cfg, plan_points=9), DTTrainConfig(steps=1), ValueConfig(), replayed=replayed
        )
    with pytest.raises(ValueError, match="plan_source must be one of"):
        train_dt(no_fixed, replace(cfg, plan_source="oracle"), DTTrainConfig(steps=1), ValueConfig())


def test_replayed_plan_learns_its_spend_and_keeps_the_target(episodes, tmp_path):
    """The spend head learns what each constant still spends and converts (here made up: cost = λ / 2, conversions
    = 0.3 in budgets at every state); keeping the target with z = 0 then bids the best constant whose projected slack
    stays at least 0 — from the first state (nothing spent yet) conversions 0.3 cover cost λ / 2 up to λ = 0.6, so
    of the grid 0.02, 0.080, 0.32, 1.26, 5 the best kept is 0.32, though the plan value rates 5 best."""
    T = episodes.n_steps
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=T)
    cfg = replace(cfg, plan_weight=1.0, value_hidden=16, plan_points=5, plan_source="replay")
    grid = replay_grid(5.0, 5)
    days = log_days(TINY.market, seed=1, periods=range(0, 2), sample=16)
    real = replay_values(days, grid, TINY.market.rules)
    shape = real.value.shape
    replayed = replace(
        real,
        value=np.broadcast_to(np.arange(5.0), shape).astype(np.float32),  # the highest constant is best
        cost=np.broadcast_to(grid / 2, shape).astype(np.float32),
        conversions=np.full(shape, 0.3, dtype=np.float32),
    )
    no_fixed = episodes.subset(episodes.policy != "fixed")
    tcfg, vcfg = DTTrainConfig(steps=3, batch_size=8, warmup=1), ValueConfig(plan_steps=1500)
    bidder, stats = train_dt(no_fixed, replace(cfg, plan_target_z=0.0), tcfg, vcfg, replayed=replayed)
    assert stats["plan_spend_r2_train"] > 0.9
    bids = _play(bidder)
    cost, conv = bidder.player.plan_spends(bidder.states[0])
    np.testing.assert_allclose(cost, grid / 2, rtol=0.15, atol=0.02)
    np.testing.assert_allclose(conv, 0.3, atol=0.05)
    assert bids[0] == pytest.approx(grid[2], rel=1e-5)
    saved = bidder.save(tmp_path / "vdt")
    free = DTBidder.load(saved, plan_target_z=-1.0)  # not kept: the plan value's best, 5
    assert _play(free)[0] == pytest.approx(grid[4], rel=1e-5)
    with pytest.raises(ValueError, match="plan_target_z must be a finite number"):
        DTBidder.load(saved, plan_target_z=float("nan"))
    # what the bidder passes at play: slack (conversions × bid scale − cost) / budget and one conversion's share
    kept = DTBidder.load(saved)
    seen = []
    kept.player.plan_bid = lambda state, alpha, slack, unit: seen.append((slack, unit)) or alpha
    advertiser = Advertiser(index=0, category=0, budget=200.0, kind="cpa", target=4.0, value=4.0, bid_scale=4.0,
                            acquisition=False, rules=TINY.market.rules)  # fmt: skip
    kept.reset(advertiser)
    kept.cost, kept.conversions = 30.0, 10.0
    kept.act(np.zeros(16, dtype=np.float32))
    assert seen == [pytest.approx((0.05, 0.02))]  # (10 · 4 − 30) / 200, 4 / 200
    # a replayed plan value saved before the spend head loads and plays without it, and cannot keep a target
    bidder.model.plan_spend = None
    old = bidder.save(tmp_path / "old")
    assert DTBidder.load(old).player.spend is None and len(_play(DTBidder.load(old))) == T
    with pytest.raises(ValueError, match="no replayed plan spend to keep a target with"):
        DTBidder.load(old, plan_target_z=1.0)
    with pytest.raises(ValueError, match="it needs plan_weight > 0 and plan_source 'replay'"):
        train_dt(episodes, replace(cfg, plan_source="constant", plan_target_z=1.0), tcfg, vcfg)


def test_plan_value_refuses_data_without_constant_bids_and_a_bad_weight(episodes):
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    no_fixed = episodes.subset(episodes.policy != "fixed")
    with pytest.raises(ValueError, match=r"constant-bid policies \['fixed'\].*none \(their policies: \['lp'"):
        train_dt(no_fixed, replace(cfg, plan_weight=0.5), DTTrainConfig(steps=1), ValueConfig())
    with pytest.raises(ValueError, match="plan_weight must be in"):
        train_dt(episodes, replace(cfg, plan_weight=1.5), DTTrainConfig(steps=1), ValueConfig())


def test_plan_value_warns_on_a_narrow_range_and_load_can_reweigh_it(episodes, tmp_path):
    cfg = DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=episodes.n_steps)
    cfg = replace(cfg, plan_weight=0.75, value_hidden=16, plan_points=5)
    fixed = episodes.policy == "fixed"
    narrow = episodes._replace(actions=np.where(fixed[:, None], 1.0, episodes.actions).astype(np.float32))
    with pytest.warns(UserWarning, match=r"constant-bid episodes whose α span 1-1: .* narrower than 4x"):
        train_dt(narrow, cfg, DTTrainConfig(steps=2, batch_size=8, warmup=1), ValueConfig(plan_steps=5))
    bidder, _ = train_dt(
        episodes, cfg, DTTrainConfig(steps=5, batch_size=8, warmup=1), ValueConfig(plan_steps=20)
    )
    saved = bidder.save(tmp_path / "vdt")
    plain = DTBidder.load(saved, plan_weight=0.0)
    _play(plain)
    assert plain.actions == pytest.approx(plain.dt_actions, rel=1e-6)  # w = 0: the DT's own bids
    pulled = DTBidder.load(saved, plan_weight=1.0)
    _play(pulled)
    grid = pulled.model.plan_grid.numpy().astype(np.float64)
    gap = np.abs(np.array(pulled.actions)[:, None] / grid[None, :] - 1).min(axis=1)
    assert gap.max() < 1e-5  # λ* alone: every bid is a grid value
    with pytest.raises(ValueError, match="plan_weight must be in"):
        DTBidder.load(saved, plan_weight=2.0)
    plain_dt, _ = train_dt(
        episodes, replace(cfg, plan_weight=0.0), DTTrainConfig(steps=1, batch_size=8, warmup=1)
    )
    with pytest.raises(ValueError, match="no plan value to weigh"):
        DTBidder.load(plain_dt.save(tmp_path / "dt"), plan_weight=0.5)


class _WritesAFile:
    """A pickle payload: unpickling it writes the file named ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("pwned",))


def _crafted_sb3_folder(folder: Path, victim: Path) -> Path:
    """A folder shaped like an SB3 bidder saved the old way: sb3.json plus a model.zip whose ``data`` holds an
    SB3-serialised (base64 cloudpickle) object that writes ``victim`` when read."""
    import base64
    import pickle
    import zipfile

    folder.mkdir(parents=True)
    payload = base64.b64encode(pickle.dumps(_WritesAFile(str(victim)))).decode()
    data = {"policy_class": {":type:": "<class 'object'>", ":serialized:": payload}}
    with zipfile.ZipFile(folder / "model.zip", "w") as z:
        z.writestr("data", json.dumps(data))
    (folder / "sb3.json").write_text(json.dumps({"name": "ppo", "mean": [0.0] * 16, "var": [1.0] * 16,
                                                 "n_steps": 8, "clip": 10.0}))  # fmt: skip
    return folder


def test_a_crafted_model_zip_is_never_unpickled(tmp_path):
    """Issue 36, hole 2: loading an SB3 bidder (directly, or from simulate's cache) must not run the pickle in an
    old-format model.zip. The same zip, opened by SB3 itself, does write the file: the payload is live."""
    from stable_baselines3.common.save_util import load_from_zip_file

    victim = tmp_path / "pwned.txt"
    folder = _crafted_sb3_folder(tmp_path / "ppo", victim)
    with pytest.raises(ValueError, match="pickle format"):
        SB3Bidder.load(folder)
    assert not victim.exists()
    # simulate's cached behaviour policy: trained again in place of the crafted folder, never opened
    cfg = replace(simulate.PRESETS["tiny"], output=str(tmp_path / "sim"), progress=False)
    bidder = simulate.train_ppo(cfg, folder)
    assert not victim.exists()
    assert not (folder / "model.zip").exists() and (folder / "sb3.safetensors").is_file()
    np.testing.assert_allclose(_play(SB3Bidder.load(folder)), _play(bidder), atol=1e-6)
    # a crafted sb3.json cannot make the loader build a huge network: its shape is checked first
    meta = json.loads((folder / "sb3.json").read_text())
    meta["policy"]["net_arch"] = {"pi": [10**8, 10**8], "vf": [64]}
    (folder / "sb3.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="net_arch layer widths"):
        SB3Bidder.load(folder)
    # the control: SB3's own reader runs the payload
    live = _crafted_sb3_folder(tmp_path / "live", victim)
    try:
        load_from_zip_file(live / "model.zip")
    except Exception:
        pass  # the payload runs before SB3 notices the rest of the file is not a model
    assert victim.read_text() == "pwned"


def test_a_torn_or_mixed_bidder_save_is_refused_and_a_crash_keeps_the_old_save(
    episodes, tmp_path, monkeypatch
):
    """Issue 36, hole 5: weights and JSON are one folder replaced whole, the JSON holds the weights' hash."""
    cfg = OfflineConfig(algorithm="bc", hidden=16, steps=5, batch_size=32)
    a = train_offline(episodes, cfg)[0]
    b = train_offline(episodes, replace(cfg, hidden=32, steps=10))[0]
    saved = a.save(tmp_path / "bc")
    first = _play(PolicyBidder.load(saved))

    # a crash after the new weights are written and before the JSON is: the old pair is what is there
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", crash)  # save_weights writes the JSON after the weights
    with pytest.raises(OSError, match="disk full"):
        b.save(saved)
    monkeypatch.undo()
    np.testing.assert_allclose(_play(PolicyBidder.load(saved)), first, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bc"]  # no temporary folder left behind
    # weights of one save beside the JSON of another: refused by the hash
    other = b.save(tmp_path / "other")
    (saved / "policy.safetensors").write_bytes((other / "policy.safetensors").read_bytes())
    with pytest.raises(ValueError, match="torn or mixed"):
        PolicyBidder.load(saved)


def test_online_training_reports_its_learning_curve():
    """Every training episode's score, in order: 128 env steps of 8-step periods are 16 episodes."""
    _, stats = train_online(TINY.market, OnlineConfig(algorithm="ppo", timesteps=128))
    scores = stats["episode_scores"]
    assert len(scores) == 128 // TINY.market.n_steps
    assert all(np.isfinite(s) and s >= 0 for s in scores)


def test_online_training_counts_the_episodes_of_every_env_copy():
    """Two env copies stepped together: 128 steps of 8-step periods are still 16 episodes, all in the curve."""
    _, stats = train_online(TINY.market, OnlineConfig(algorithm="ppo", timesteps=128, envs=2, max_minutes=0))
    assert len(stats["episode_scores"]) == 128 // TINY.market.n_steps
    assert stats["timesteps"] == 128 and stats["stopped_by_time"] is False


def test_online_networks_have_the_widths_asked_for(tmp_path):
    bidder, _ = train_online(TINY.market, OnlineConfig(algorithm="sac", timesteps=64, net=(16, 8)))
    meta = json.loads((bidder.save(tmp_path / "sac") / "sb3.json").read_text())
    assert meta["policy"]["net_arch"] == [16, 8]
    layers = SB3Bidder.load(tmp_path / "sac").policy.actor.latent_pi
    assert [m.out_features for m in layers if isinstance(m, torch.nn.Linear)] == [16, 8]


def test_scaled_reward_is_the_score_in_units_of_what_the_budget_buys():
    """Summed over a period, the scaled rewards are the final score · bid scale / budget (the raw rewards add up to
    the score): one unit is what the budget buys at the target."""
    env = ScaledReward(FeaturizedAuction(AuctionEnv(config=TINY.market)))
    env.reset(seed=5)
    total, done, info = 0.0, False, {}
    while not done:
        _, r, term, trunc, info = env.step(np.array([0.9], dtype=np.float32))
        total += r
        done = term or trunc
    assert info["score"] > 0
    assert total == pytest.approx(info["score"] * info["bid_scale"] / info["budget"], rel=1e-9)


def _probe():
    """TINY's first advertiser and a fixed state to ask a bidder about."""
    adv = Market(TINY.market, np.random.default_rng(0)).advertisers.spec(0, TINY.market.rules)
    return adv, np.linspace(0.1, 1.0, 16)


def test_log_alpha_maps_back_by_hand():
    """u = 0 bids α = 1, u = ln 2 bids 2; past ln alpha_max it bids alpha_max, below the floor the floor."""
    got = log_alpha_to_alpha(np.array([0.0, np.log(2.0), 3.0, -50.0]), np.log(5.0))
    np.testing.assert_allclose(got, [1.0, 2.0, 5.0, LOG_ALPHA_FLOOR], rtol=1e-6)


def test_a_log_alpha_step_is_the_env_step_of_its_alpha():
    """The wrapper's action ln 0.7 plays exactly the period that α = 0.7 plays in the env itself."""
    wrapped = LogAlphaAction(FeaturizedAuction(AuctionEnv(config=TINY.market)))
    plain = FeaturizedAuction(AuctionEnv(config=TINY.market))
    assert wrapped.action_space.high[0] == pytest.approx(np.log(TINY.market.rules.alpha_max))
    assert wrapped.action_space.low[0] == pytest.approx(np.log(LOG_ALPHA_FLOOR))
    wrapped.reset(seed=3)
    plain.reset(seed=3)
    done = False
    while not done:
        a, b = wrapped.step(np.array([np.log(0.7)], np.float32)), plain.step(np.array([0.7], np.float32))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
        done = a[2] or a[3]
    assert a[4]["score"] == b[4]["score"]


def test_online_action_and_learning_rate_defaults():
    """PPO acts in ln α unless told otherwise, SAC in α; a learning rate set reaches the optimiser."""
    assert OnlineConfig(algorithm="ppo").policy_action == "log_alpha"
    assert OnlineConfig(algorithm="sac").policy_action == "alpha"
    assert OnlineConfig(algorithm="ppo", action="alpha").policy_action == "alpha"
    bidder, _ = train_online(TINY.market, OnlineConfig(algorithm="sac", timesteps=32, learning_rate=1e-3))
    assert bidder.action == "alpha"
    assert bidder.model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_a_log_alpha_bidder_bids_the_exp_of_its_policy_and_saves_what_it_acts_in(tmp_path):
    bidder, _ = train_online(TINY.market, OnlineConfig(algorithm="ppo", timesteps=64))
    adv, state = _probe()
    bidder.reset(adv)
    alpha = bidder.act(state)
    x = np.clip(
        (featurize_state(state, adv, TINY.market.n_steps) - bidder.mean) / np.sqrt(bidder.var + 1e-8),
        -bidder.clip,
        bidder.clip,
    )
    u = bidder.model.predict(x.astype(np.float32), deterministic=True)[0][0]
    assert alpha == pytest.approx(float(np.exp(np.clip(u, np.log(LOG_ALPHA_FLOOR), np.log(5.0)))), rel=1e-6)
    # the policy acts in the wrapper's box, not the env's [0, alpha_max]
    assert bidder.policy.action_space.low[0] == np.float32(np.log(LOG_ALPHA_FLOOR))
    assert bidder.policy.action_space.high[0] == np.float32(np.log(5.0))
    loaded = SB3Bidder.load(bidder.save(tmp_path / "ppo"))
    loaded.reset(adv)
    assert loaded.action == "log_alpha" and loaded.act(state) == pytest.approx(alpha, rel=1e-6)
    meta = json.loads((tmp_path / "ppo" / "sb3.json").read_text())
    for action, error in [
        ("alpha_squared", "unknown action 'alpha_squared'"),
        (None, "action 'alpha' is read in"),  # read as α, a ln α policy would bid its u itself
    ]:
        bad = dict(meta, action=action) if action else {k: v for k, v in meta.items() if k != "action"}
        (tmp_path / "ppo" / "sb3.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=error):
            SB3Bidder.load(tmp_path / "ppo")


def test_an_sb3_save_without_an_action_is_read_as_alpha(tmp_path):
    """Saves from before ``action`` existed acted on α itself: they load as ``alpha`` and bid as they did."""
    bidder, _ = train_online(TINY.market, OnlineConfig(algorithm="ppo", timesteps=64, action="alpha"))
    adv, state = _probe()
    bidder.reset(adv)
    folder = bidder.save(tmp_path / "old")
    meta = json.loads((folder / "sb3.json").read_text())
    del meta["action"]
    (folder / "sb3.json").write_text(json.dumps(meta))
    loaded = SB3Bidder.load(folder)
    loaded.reset(adv)
    assert loaded.action == "alpha" and loaded.act(state) == pytest.approx(bidder.act(state), rel=1e-6)


def test_ppo_checks_see_the_bidder_training_returns():
    """The policy handed to the checks acts in ln α as the trained one does, and bids what it bids."""
    adv, state = _probe()
    seen = []

    def check(b):
        b.reset(adv)
        seen.append((b.action, b.act(state)))
        return 0.0

    bidder, _ = train_online(TINY.market, OnlineConfig(algorithm="ppo", timesteps=128), every=64, check=check)
    bidder.reset(adv)
    # one rollout of 128 steps: the one check is at its end, on the policy training returns
    assert len(seen) == 1 and seen[0][0] == "log_alpha"
    assert seen[0][1] == pytest.approx(bidder.act(state), rel=1e-6)


@pytest.mark.parametrize(
    "kw, error",
    [
        (dict(action="alpha2"), "action must be"),
        (dict(learning_rate=float("nan")), "learning_rate must be"),
        (dict(learning_rate=-1e-3), "learning_rate must be"),
        (dict(rollout=64, envs=16), "rollout must be"),
        (dict(timesteps=0), "timesteps and envs"),
        (dict(envs=0), "timesteps and envs"),
        (dict(max_minutes=-1), "timesteps and envs"),
        (dict(net=()), "net must list"),
        (dict(net=(0, 8)), "net must list"),
        (dict(net=(8,) * 9), "net must list"),
    ],
)
def test_online_config_refuses_bad_settings(kw, error):
    with pytest.raises(ValueError, match=error):
        OnlineConfig(**kw)


def test_online_training_checks_the_policy_every_so_many_steps():
    """check gets the policy as training left it: SAC updates after every step once it starts learning (step 16
    here), so the checks at 16, 32, 48 and the one at the end (64) see it change; their values are kept, with the
    steps learned from."""
    state = np.linspace(0.1, 1.0, 16)
    market = TINY.market
    adv = Market(market, np.random.default_rng(0)).advertisers.spec(0, market.rules)
    actions = []

    def check(bidder):
        bidder.reset(adv)
        actions.append(bidder.act(state))
        return 7.0 * len(actions)

    cfg = OnlineConfig(algorithm="sac", timesteps=64, net=(8, 8))
    _, stats = train_online(TINY.market, cfg, every=16, check=check)
    assert [c[0] for c in stats["checks"]] == [16, 32, 48, 64]
    assert [c[2] for c in stats["checks"]] == [7.0, 14.0, 21.0, 28.0]
    assert len(set(actions[1:])) == 3 and actions[-1] != actions[0]  # updated between the checks
    minutes = [c[1] for c in stats["checks"]]
    assert minutes == sorted(minutes) and minutes[-1] <= stats["train_minutes"] + 1e-9
