"""The Decision Transformer: loss on toy values, causality and padding, training and save/load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bidding.data import load_trajectories
from bidding.dt import (
    DecisionTransformer,
    DTBidder,
    DTConfig,
    DTTrainConfig,
    ValueConfig,
    action_loss,
    train_dt,
)
from pipelines import simulate
from simulators.bidders import default_competitors
from simulators.rollout import run_period

CFG = DTConfig(context=4, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, max_steps=8)


def test_action_loss_on_toy_values():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[1.0, 1.0, 1.0]])
    valid = torch.tensor([[True, True, False]])
    assert float(action_loss(pred, target, valid)) == pytest.approx((0.0 + 1.0) / 2)


def _inputs(B=2, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, K, generator=g),
        torch.randn(B, K, 16, generator=g),
        torch.rand(B, K, generator=g) * 2,
        torch.arange(K).repeat(B, 1),
        torch.ones(B, K, dtype=torch.bool),
    )


def test_prediction_at_step_k_ignores_its_own_action_and_the_future():
    torch.manual_seed(0)
    model = DecisionTransformer(CFG).eval()
    rtg, s, a, ts, valid = _inputs()
    base = model(rtg, s, a, ts, valid)
    a2 = a.clone()
    a2[:, 2] += 1.0  # the action at step 2 and everything after it must not move predictions 0..2
    rtg2 = rtg.clone()
    rtg2[:, 3] += 1.0
    out = model(rtg2, s, a2, ts, valid)
    torch.testing.assert_close(out[:, :3], base[:, :3])
    assert not torch.allclose(out[:, 3], base[:, 3])
    assert torch.all((base > 0) & (base < CFG.alpha_max))


def test_left_padding_does_not_change_valid_predictions():
    torch.manual_seed(0)
    model = DecisionTransformer(CFG).eval()
    rtg, s, a, ts, valid = _inputs(B=1, K=2)
    short = model(rtg, s, a, ts, valid)
    pad = lambda t, v=0: torch.cat([torch.full_like(t[:, :2], v), t], dim=1)  # noqa: E731
    padded = model(
        pad(rtg, 9.0), torch.cat([torch.randn(1, 2, 16), s], 1), pad(a, 3.0), pad(ts), pad(valid, False)
    )
    torch.testing.assert_close(padded[:, 2:], short)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    out = tmp_path_factory.mktemp("traj")
    cfg = replace(
        simulate.PRESETS["tiny"], output=str(out), policies=("fixed", "pid", "pacing", "lp"), progress=False
    )
    simulate.main(replace(cfg, periods=6))
    return load_trajectories(out)


def test_training_lowers_the_loss_and_save_load_bids_the_same(episodes, tmp_path):
    T = episodes.n_steps
    bidder, stats = train_dt(
        episodes, replace(CFG, max_steps=T), DTTrainConfig(steps=150, batch_size=16, warmup=10)
    )
    assert stats["final_loss"] < stats["first_loss"]
    loaded = DTBidder.load(bidder.save(tmp_path / "dt"))
    market = simulate.PRESETS["tiny"].market

    def play(b):
        rng = np.random.default_rng(5)
        others = default_competitors(market.n_advertisers - 1, np.random.default_rng(6), n_steps=T)
        return run_period(market, [b, *others], rng)

    seen: list[int] = []
    inner = loaded._act
    loaded._act = lambda s: seen.append(torch.get_num_threads()) or inner(s)  # threads while acting
    threads = torch.get_num_threads()
    first = play(bidder)
    assert torch.get_num_threads() == threads  # act gives the caller's setting back
    other = 2 if threads == 1 else 1
    torch.set_num_threads(other)
    try:
        again = play(loaded)  # whatever the caller's thread count, the same bids, computed on one thread
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(threads)
    assert seen and set(seen) == {1}
    np.testing.assert_allclose(first.actions[:, 0], again.actions[:, 0], atol=1e-6)
    assert np.all((first.actions[:, 0] > 0) & (first.actions[:, 0] < CFG.alpha_max))
    assert bidder.rtg != bidder.target_return or first.rewards[:, 0].sum() == 0  # observe lowers the target
    with pytest.raises(FileNotFoundError, match="not a saved Decision Transformer"):
        DTBidder.load(tmp_path)


@pytest.mark.parametrize("value_target, plan_weight", [(False, 0.0), (True, 0.0), (True, 0.75)])
def test_play_path_bids_what_forward_predicts_on_every_window(value_target, plan_weight):
    """The bidder's numpy play (kept keys and values while the window grows, the whole window once it slides)
    must give forward()'s α on the same window at every step of an episode longer than the context. With a plan
    value, the window holds the bids made (pulled towards λ*), and each bid is α_DT^(1 − w) · λ*^w."""
    torch.manual_seed(1)
    cfg = replace(CFG, value_target=value_target, value_hidden=8, plan_weight=plan_weight, plan_points=5)
    model = DecisionTransformer(cfg).eval()
    if plan_weight:
        model.plan_grid.copy_(torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8]))
    bidder = DTBidder(model, mean=np.zeros(16), std=np.ones(16), target_return=0.7, n_steps=cfg.max_steps)

    class Adv:
        budget, bid_scale, index = 100.0, 2.0, 0

    rng = np.random.default_rng(0)
    K = cfg.context
    for episode in range(2):  # the second episode must not see the first one's tokens or keys and values
        bidder.reset(Adv())
        # past max_steps too: the time embedding is clamped as forward's callers clamp it
        for t in range(cfg.max_steps + 2):
            alpha = bidder.act(rng.random(16).astype(np.float32) * 3)
            bidder.rtg -= 0.05  # what observe() does with rewards
            n = min(t + 1, K)
            t0 = t + 1 - n
            with torch.no_grad():
                expected = model(
                    torch.tensor(bidder.rtgs[t0:])[None],
                    torch.from_numpy(np.stack(bidder.states[t0:]))[None],
                    torch.tensor(bidder.actions[t0:t] + [0.0])[None],
                    torch.arange(t0, t + 1).clamp_max(cfg.max_steps - 1)[None],
                    torch.ones(1, n, dtype=torch.bool),
                )[0, -1]
            assert bidder.dt_actions[t] == pytest.approx(float(expected), abs=1e-5), (
                f"episode {episode}, step {t}"
            )
            if plan_weight:
                with torch.no_grad():
                    grid = model.plan_grid
                    x = torch.cat([torch.from_numpy(bidder.states[t]).expand(5, 16), grid.log()[:, None]], 1)
                    best = float(grid[int(torch.argmax(model.plan_value(x)[:, 0]))])
                expected = min(cfg.alpha_max, float(expected) ** (1 - plan_weight) * best**plan_weight)
            assert alpha == bidder.actions[t] == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    if value_target:  # the return asked for at every step is V(s) of that step's state
        with torch.no_grad():
            v = model.return_value(torch.from_numpy(np.stack(bidder.states)))[:, 0].numpy()
        np.testing.assert_allclose(bidder.rtgs, v, atol=1e-5)


def test_rtg_search_bids_the_action_its_critic_rates_best_on_every_window():
    """GAS-style search: at every step the DT's action is computed for the asked return times each factor (forward on
    the same window, the earlier steps holding the returns picked), and the bid is the one whose Q(s, α) — the twin
    critic's minimum, the torch module — is highest; the return picked is what the window keeps."""
    torch.manual_seed(2)
    factors = (0.5, 1.0, 2.0)
    cfg = replace(CFG, value_hidden=8, rtg_search=factors)
    model = DecisionTransformer(cfg).eval()
    assert model.cfg.guided and model.search_value is not None
    bidder = DTBidder(model, mean=np.zeros(16), std=np.ones(16), target_return=0.7, n_steps=cfg.max_steps)

    class Adv:
        budget, bid_scale, index = 100.0, 2.0, 0

    rng = np.random.default_rng(0)
    K = cfg.context
    bidder.reset(Adv())
    picked = set()
    for t in range(cfg.max_steps + 2):
        base = bidder.rtg
        alpha = bidder.act(rng.random(16).astype(np.float32) * 3)
        bidder.rtg -= 0.05
        n = min(t + 1, K)
        t0 = t + 1 - n
        cands = []
        with torch.no_grad():
            for f in factors:
                rtgs = bidder.rtgs[t0:t] + [base * f]
                cands.append(float(model(
                    torch.tensor(rtgs)[None],
                    torch.from_numpy(np.stack(bidder.states[t0:]))[None],
                    torch.tensor(bidder.actions[t0:t] + [0.0])[None],
                    torch.arange(t0, t + 1).clamp_max(cfg.max_steps - 1)[None],
                    torch.ones(1, n, dtype=torch.bool),
                )[0, -1]))  # fmt: skip
            q = model.search_value(torch.from_numpy(bidder.states[t]).expand(3, 16), torch.tensor(cands))
        best = int(torch.argmax(q))
        picked.add(best)
        assert alpha == pytest.approx(cands[best], abs=1e-5), f"step {t}"
        assert bidder.rtgs[t] == pytest.approx(base * factors[best])
    assert len(picked) > 1  # the critic's choice changes with the state: a real search, not one fixed factor
    with pytest.raises(ValueError, match="rtg_search factors must be positive"):
        train_dt(
            None, replace(cfg, rtg_search=(1.0, 0.0), max_steps=8), DTTrainConfig(steps=1), ValueConfig()
        )


def test_dt_bidder_scores_with_the_markets_beta():
    """The return-to-go falls by the score gained, scored with the market's β (it used the default β = 2 always).

    Cost 20 for 1 conversion against a target of 10: β = 1 scores 1 × (10/20)^1 = 0.5 (β = 2 would give 0.25);
    the rtg falls by 0.5 × bid_scale / budget = 0.5 × 10 / 100 = 0.05."""
    from simulators.auction import AuctionRules
    from simulators.market import Advertiser, Feedback, StepOutcome

    torch.manual_seed(0)
    bidder = DTBidder(DecisionTransformer(CFG), np.zeros(16), np.ones(16), target_return=1.0, n_steps=8)
    adv = Advertiser(0, 0, 100.0, "cpa", 10.0, 10.0, 10.0, False, AuctionRules(beta=1.0))
    bidder.reset(adv)
    one = np.ones(1)
    outcome = StepOutcome(0, np.array([20.0]), one, one, one, one, one, 0.0, 1)
    bidder.observe(Feedback(outcome, np.ones((1, 1)), np.ones(1)))
    assert bidder.score == pytest.approx(0.5)
    assert bidder.rtg == pytest.approx(1.0 - 0.05)


def test_keeping_the_target_picks_the_best_constant_with_slack_to_spare():
    """Grid λ 0.5, 1, 2 with plan values 0.1, 0.3, 0.5, and what each still spends (0.1, 0.3, 0.6) and converts
    (0.12, 0.33, 0.5), in budgets; one conversion is 0.01 of the budget. With slack 0.05 so far the projected
    slacks are 0.07, 0.08, -0.05, and z sqrt(conversions · 0.01) is 0.035, 0.057, 0.071 at z = 1: λ 0.5 and 1
    keep the target, λ* = 1, and no bid exceeds 1. At z = 2 (0.069, 0.115, 0.141) only λ 0.5 keeps it; at z = 3
    (0.104, 0.172, 0.212) none does, and not bidding (0) keeps the slack so far. With slack -0.2 none does: λ* is the
    most projected slack, λ 1 (-0.17), since it is more than now; with slack -0.2 and spends 0.1 higher (projected
    -0.28, -0.27, -0.4) the bid is 0."""
    cfg = replace(
        CFG, plan_weight=1.0, plan_points=3, plan_source="replay", plan_target_z=1.0, value_hidden=8
    )
    model = DecisionTransformer(cfg).eval()
    with torch.no_grad():
        model.plan_grid.copy_(torch.tensor([0.5, 1.0, 2.0]))
    player = DTBidder(model, np.zeros(cfg.state_dim), np.ones(cfg.state_dim), 1.0).player
    player.plan_values = lambda s: np.array([0.1, 0.3, 0.5])
    player.plan_spends = lambda s: (np.array([0.1, 0.3, 0.6]), np.array([0.12, 0.33, 0.5]))
    s = np.zeros(cfg.state_dim, dtype=np.float32)
    assert player.plan_bid(s, 1.7, 0.05, 0.01) == pytest.approx(1.0)
    player.plan_weight = 0.5
    assert player.plan_bid(s, 4.0, 0.05, 0.01) == pytest.approx(
        1.0
    )  # sqrt(4 · 1) = 2, held to the highest kept, 1
    assert player.plan_bid(s, 0.25, 0.05, 0.01) == pytest.approx(0.5)  # sqrt(0.25 · 1) = 0.5, under the cap
    player.plan_weight = 1.0
    player.target_z = 2.0
    assert player.plan_bid(s, 1.7, 0.05, 0.01) == pytest.approx(0.5)
    assert player.plan_bid(s, 1.7, -0.2, 0.01) == pytest.approx(1.0)
    player.target_z = 3.0
    assert player.plan_bid(s, 1.7, 0.05, 0.01) == 0.0
    player.plan_spends = lambda s: (np.array([0.2, 0.4, 0.7]), np.array([0.12, 0.33, 0.5]))
    assert player.plan_bid(s, 1.7, -0.2, 0.01) == 0.0
    player.target_z = -1.0  # not kept: the plan value's best
    assert player.plan_bid(s, 1.7, 0.05, 0.01) == pytest.approx(2.0)
