"""The evaluation harness: same markets for every bidder, figures that add up."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from bidding.evaluate import EvalConfig, compare, evaluate, hindsight_alpha
from simulators.bidders import FixedBidder
from simulators.market import MarketConfig

MARKET = MarketConfig(impressions=2_000, n_steps=6, n_advertisers=6, n_categories=2)
CFG = EvalConfig(periods=2, budget_ratios=(0.5, 1.0), slots=(0, 3))


def test_evaluate_is_deterministic_and_counts_every_play():
    a = evaluate(lambda: FixedBidder(1.0), MARKET, CFG, curves=True)
    b = evaluate(lambda: FixedBidder(1.0), MARKET, CFG, curves=True)
    assert a["plays"] == 2 * 2 * 2
    assert a["score_by_budget"] == b["score_by_budget"] and len(a["score_by_budget"]) == 2
    assert a["score_mean"] == pytest.approx(np.mean(a["score_by_budget"]))
    assert 0 <= a["cpa_violation_rate"] <= 1 and 0 <= a["budget_used"] <= 1 + 1e-9
    assert len(a["spend_curve"]) == MARKET.n_steps
    assert np.all(np.diff(a["spend_curve"]) >= -1e-12)  # cumulative spend never falls


class _SlowBidder(FixedBidder):
    def act(self, state):
        time.sleep(0.005)
        return super().act(state)


def test_act_ms_is_the_time_of_the_bidders_act_calls():
    cfg = EvalConfig(periods=1, budget_ratios=(1.0,), slots=(0,))
    slow = evaluate(lambda: _SlowBidder(1.0), MARKET, cfg)
    assert slow["act_ms"] >= 5.0  # every act sleeps 5 ms
    assert evaluate(lambda: FixedBidder(1.0), MARKET, cfg)["act_ms"] < slow["act_ms"]


def test_a_bidder_that_never_bids_scores_nothing():
    res = compare(
        {"zero": lambda: FixedBidder(0.0), "one": lambda: FixedBidder(1.0)}, MARKET, CFG, curves=True
    )
    assert res["zero"]["score_mean"] == 0.0 and res["zero"]["budget_used"] == 0.0
    assert res["one"]["score_mean"] > 0
    # cost per conversion is undefined until a conversion: NaN, never a 0 that drags the mean curve down
    assert np.all(np.isnan(res["zero"]["cpa_curve"]))
    one = np.array(res["one"]["cpa_curve"])
    assert np.all(np.isnan(one) | (one > 0)) and one[-1] > 0


def test_hindsight_alpha_is_the_best_fixed_alpha_of_each_play():
    grid = (0.2, 0.6, 1.0, 2.0)
    fixed = {a: evaluate(lambda a=a: FixedBidder(a), MARKET, CFG) for a in grid}
    ref = hindsight_alpha(MARKET, CFG, grid)
    assert ref["plays"] == 2 * 2 * 2
    # per budget ratio, the mean of per-play maxima is at least the best mean of any one α ...
    for i in range(len(CFG.budget_ratios)):
        assert ref["score_by_budget"][i] >= max(f["score_by_budget"][i] for f in fixed.values()) - 1e-9
    assert min(grid) <= ref["alpha_median"] <= max(grid) and 0 <= ref["at_grid_edge"] <= ref["plays"]
    # ... and with a single play it is exactly the best of them
    one = EvalConfig(periods=1, budget_ratios=(1.0,), slots=(3,))
    best = max(evaluate(lambda a=a: FixedBidder(a), MARKET, one)["score_mean"] for a in grid)
    assert hindsight_alpha(MARKET, one, grid)["score_mean"] == best
    # a one-value grid is that fixed bidder, play for play
    only = hindsight_alpha(MARKET, CFG, (0.6,))
    assert only["score_by_budget"] == fixed[0.6]["score_by_budget"] and only["at_grid_edge"] == 0
    assert only["budget_used"] == pytest.approx(fixed[0.6]["budget_used"])
    assert only["cpa_violation_rate"] == fixed[0.6]["cpa_violation_rate"]


def test_hindsight_alpha_median_and_grid_edge_match_the_best_alpha_of_each_play():
    grid = (0.0, 0.3, 1.0, 3.0)
    best, scored = [], []
    for p in range(CFG.first_period, CFG.first_period + CFG.periods):
        for b in CFG.budget_ratios:
            for slot in CFG.slots:
                one = EvalConfig(
                    periods=1, first_period=p, budget_ratios=(b,), slots=(slot,), test_seed=CFG.test_seed
                )
                scores = [evaluate(lambda a=a: FixedBidder(a), MARKET, one)["score_mean"] for a in grid]
                best.append(grid[int(np.argmax(scores))])  # the first, smallest α among equals
                scored.append(max(scores) > 0)
    ref = hindsight_alpha(MARKET, CFG, grid + (1.0,))  # a repeated α changes nothing
    assert ref["alpha_median"] == float(np.median(best))
    # α 0 never scores, so only α 3.0 can be an edge; a play where nothing scores is not counted
    assert ref["at_grid_edge"] == sum(a == 3.0 and s for a, s in zip(best, scored, strict=True))


def test_hindsight_alpha_refuses_a_bad_grid():
    for grid in ((), (0.5, float("nan")), (-0.1,), (9.0,)):
        with pytest.raises(ValueError, match="grid"):
            hindsight_alpha(MARKET, CFG, grid)


def test_every_slot_by_default_and_period_scores_keep_the_layout():
    cfg = EvalConfig(periods=2)
    res = evaluate(lambda: FixedBidder(1.0), MARKET, cfg)
    assert res["plays"] == 2 * MARKET.n_advertisers
    scores = np.array(res["period_scores"])
    assert scores.shape == (2, MARKET.n_advertisers)
    assert res["score_mean"] == pytest.approx(scores.mean())


def test_plays_in_processes_are_the_plays_played_here():
    """Two worker processes, a closure over a reacting bidder: every figure is the same as played in this process."""
    from simulators.bidders import OnlineLPBidder

    cfg = EvalConfig(periods=3, budget_ratios=(0.5, 1.0), slots=(0, 2, 5))
    make = lambda: OnlineLPBidder(n_steps=MARKET.n_steps)  # noqa: E731
    here = evaluate(make, MARKET, cfg, curves=True)
    there = evaluate(make, MARKET, replace(cfg, workers=2), curves=True)
    for k in ("period_scores", "score_by_budget", "cpa_violation_rate", "budget_used", "roi", "spend_curve"):
        assert there[k] == here[k], k


def test_bad_evaluation_settings_are_named():
    import threading

    for kw, match in ((dict(periods=0), "periods"), (dict(budget_ratios=(1.0, -1.0)), "budget_ratios"),
                      (dict(slots=(-1,)), "slots"), (dict(workers=0), "workers")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            EvalConfig(**kw)
    lock = threading.Lock()  # cannot be sent to another process
    with pytest.raises(ValueError, match="cloudpickle"):
        evaluate(lambda: (lock, FixedBidder(1.0))[1], MARKET, EvalConfig(periods=2, workers=2))


def test_rotation_covers_every_slot_and_seeds_take_periods_in_turn():
    from bidding.evaluate import _period_plays

    cfg = EvalConfig(periods=4, rotate=3)  # 6 advertisers: 2 slots per period
    seen = [[slot for _, slot, _, _ in _period_plays(MARKET, cfg, p)] for p in range(100_000, 100_004)]
    assert all(len(s) == 2 for s in seen) and set(seen[0] + seen[1] + seen[2]) == set(range(6))
    # two "seeds": the second plays α 0, so periods 1 and 3 score 0 and the others as α 1 alone
    both = evaluate([lambda: FixedBidder(1.0), lambda: FixedBidder(0.0)], MARKET, cfg)
    alone = np.array(evaluate(lambda: FixedBidder(1.0), MARKET, cfg)["period_scores"])
    got = np.array(both["period_scores"])
    # seeds take whole rotations: periods 0-2 (one rotation) seed 0, period 3 seed 1
    np.testing.assert_array_equal(got[:3], alone[:3])
    assert np.all(got[3] == 0) and both["seeds"] == 2
    # with rotate 2 and 2 seeds each seed still plays every slot (seed by period alone would not)
    from bidding.evaluate import _period_plays as plays

    cfg2 = EvalConfig(periods=4, rotate=2)
    res = np.array(
        evaluate([lambda: FixedBidder(1.0), lambda: FixedBidder(0.0)], MARKET, cfg2)["period_scores"]
    )
    assert np.all(res[2:] == 0) and np.all(res[:2].sum(axis=1) > 0)
    for first in (0, 2):
        slots = {s for p in (first, first + 1) for _, s, _, _ in plays(MARKET, cfg2, 100_000 + p)}
        assert slots == set(range(6))
    with pytest.raises(ValueError, match="rotate .4. must divide"):
        evaluate(lambda: FixedBidder(1.0), MARKET, EvalConfig(periods=2, rotate=4))


def test_a_reused_pool_plays_the_same():
    from bidding.evaluate import process_pool

    cfg = EvalConfig(periods=2, slots=(1, 4))
    here = evaluate(lambda: FixedBidder(0.7), MARKET, cfg)
    with process_pool(2) as pool:
        a = evaluate(lambda: FixedBidder(0.7), MARKET, cfg, executor=pool)
        b = evaluate(lambda: FixedBidder(0.7), MARKET, cfg, executor=pool)
    assert a["period_scores"] == b["period_scores"] == here["period_scores"]
