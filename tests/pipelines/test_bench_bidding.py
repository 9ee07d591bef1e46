"""bench-bidding end to end on the tiny preset: regimes, tuned baselines, seeds, CIs, the bound, kept bidders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bidding.dt import DTBidder
from bidding.evaluate import evaluate
from pipelines import bench_bidding
from tests.netns import needs_netns, run_job


def _tiny(tmp_path, **kw):
    cfg = replace(bench_bidding.PRESETS["tiny"], output=str(tmp_path / "bidding"), **kw)
    return replace(cfg, simulate=replace(cfg.simulate, progress=False))


def test_bench_bidding_tiny_judges_every_bidder_in_every_regime_asked(tmp_path):
    cfg = _tiny(tmp_path, regimes=("budget-bound", "roi"))
    out = bench_bidding.main(cfg)
    assert set(out["regimes"]) == {"budget-bound", "roi"} and out["wall_minutes"] > 0
    json.dumps(out)  # the last stdout line is this object
    for name, reg in out["regimes"].items():
        assert reg["test_periods"] == 3 and reg["plays"] == 3 * 2  # 8 slots, rotate 4: 2 a period
        res = reg["bidders"]
        assert set(res) == set(bench_bidding.BIDDERS)
        bound = reg["bound"]
        assert bound["score_ci"][0] <= bound["score_mean"] <= bound["score_ci"][1]
        for bidder, r in res.items():
            assert r["score_ci"][0] <= r["score_mean"] <= r["score_ci"][1], (name, bidder)
            assert 0 <= r["violation_rate"] <= 1 and r["act_ms"] > 0  # every play timed its act calls
            assert r["seeds"] == (2 if bidder in bench_bidding.LEARNED else 1)
            if r["score_mean"] > 0:
                assert r["share_of_bound"] == pytest.approx(r["score_mean"] / bound["score_mean"])
        assert res["dt"]["ratio_to_dt"] == pytest.approx(1.0) or res["dt"]["score_mean"] == 0
        for bidder in (b for b in bench_bidding.LEARNED if b in bench_bidding.BIDDERS):  # the default run's
            assert res[bidder]["train_minutes"] > 0, bidder
            for seed in (0, 1):
                assert (tmp_path / "bidding" / name / bidder / f"seed-{seed}" / "train.json").is_file()
        # constant is the best α of the grid on the tuning periods: it took time to find
        assert res["constant"]["train_minutes"] > 0
    # a second run keeps the trained bidders, the tuned choices and the bound: same figures, nothing redone
    roi = tmp_path / "bidding" / "roi"
    kept = [roi / "constant" / "tuned.json", roi / "bound.json"]
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert json.loads(kept[0].read_text())["setting"] in bench_bidding.CONSTANT_GRID
    again = bench_bidding.main(replace(cfg, regimes=("roi",), bidders=("dt", "bc", "constant")))
    assert [p.stat().st_mtime_ns for p in kept] == stamps
    assert again["regimes"]["roi"]["bound"] == out["regimes"]["roi"]["bound"]
    for bidder in ("dt", "bc", "constant"):
        assert (
            again["regimes"]["roi"]["bidders"][bidder]["score_mean"]
            == out["regimes"]["roi"]["bidders"][bidder]["score_mean"]
        )
        assert (
            again["regimes"]["roi"]["bidders"][bidder]["train_minutes"]
            == out["regimes"]["roi"]["bidders"][bidder]["train_minutes"]
        )
    # --retrain tunes and bounds again
    bench_bidding.main(replace(cfg, regimes=("roi",), bidders=("constant",), retrain=True))
    assert all(p.stat().st_mtime_ns != t for p, t in zip(kept, stamps, strict=True))
    # other tuning periods: tuned again; the bound of the test plays does not depend on them and is kept
    stamps = [p.stat().st_mtime_ns for p in kept]
    bench_bidding.main(replace(cfg, regimes=("roi",), bidders=("constant",), tuning_seed=7))
    assert kept[0].stat().st_mtime_ns != stamps[0] and kept[1].stat().st_mtime_ns == stamps[1]


def test_bench_bidding_refuses_bad_settings_before_anything_runs(tmp_path):
    for kw, match in (
        (dict(bidders=("gave",)), "unknown bidders"),
        (dict(regimes=("cheap",)), "unknown regimes"),
        (dict(seeds=0), "seeds, tuning_periods and tuning_rotate must be positive"),
        (dict(sac=bench_bidding.OnlineConfig(algorithm="ppo")), "the sac section trains sac only"),
    ):
        with pytest.raises(ValueError, match=match):
            bench_bidding.main(_tiny(tmp_path, **kw))
    tiny = _tiny(tmp_path)
    with pytest.raises(
        ValueError, match=r"--evaluation.rotate: rotate \(3\) must divide the number of slots played \(8\)"
    ):
        bench_bidding.main(replace(tiny, evaluation=replace(tiny.evaluation, rotate=3)))
    with pytest.raises(ValueError, match=r"--tuning-rotate: rotate \(5\) must divide"):
        bench_bidding.main(replace(tiny, tuning_rotate=5))
    with pytest.raises(ValueError, match="tuning periods must not use the test seed"):
        bench_bidding.main(replace(tiny, tuning_seed=tiny.evaluation.test_seed))
    assert not (tmp_path / "bidding").exists()


def test_bench_bidding_keeps_value_guidance_to_vdt(tmp_path):
    """Guidance set on the plain dt's shape, or a plan weight out of range, fails before anything trains."""
    tiny = _tiny(tmp_path)
    dt = tiny.dt
    for guided in (
        replace(dt, plan_weight=0.5),
        replace(dt, value_target=True),
        replace(dt, explore_epsilon=0.1),
    ):
        with pytest.raises(ValueError, match="would make the plain dt value-guided"):
            bench_bidding.main(replace(tiny, dt=guided))
    with pytest.raises(ValueError, match=r"--vdt-plan-weight must be in \[0, 1\], got -0.1"):
        bench_bidding.main(replace(tiny, vdt_plan_weight=-0.1))
    assert not (tmp_path / "bidding").exists()


def test_bench_bidding_checks_vdt_data_before_training(tmp_path):
    """Trajectories without constant-bid episodes stop vdt's plan value before any bidder trains."""
    tiny = _tiny(tmp_path, bidders=("bc", "vdt"), regimes=("budget-bound",))
    tiny = replace(tiny, simulate=replace(tiny.simulate, policies=("pid", "pacing")))
    with pytest.raises(ValueError, match=r"constant-bid policies \['fixed'\].*--vdt-plan-weight 0"):
        bench_bidding.main(tiny)
    assert not (tmp_path / "bidding" / "budget-bound" / "bc").exists()


def test_vdt_replay_and_gas_learn_from_logs_without_constant_bids(tmp_path):
    """vdt_replay's plan value learns from the replayed impression log of training days, so logs of pacing bidders
    only (which stop vdt) train it, and a kept one is reused; gas (the DT searching its asked return) trains beside."""
    tiny = _tiny(
        tmp_path, bidders=("dt", "vdt_replay", "gas"), regimes=("budget-bound",), replay_days=2,
        replay_calibration_periods=2,
    )  # fmt: skip
    tiny = replace(tiny, simulate=replace(tiny.simulate, policies=("pid", "pacing")))
    out = bench_bidding.main(tiny)["regimes"]["budget-bound"]["bidders"]
    assert set(out) == {"dt", "vdt_replay", "gas"} and out["vdt_replay"]["seeds"] == tiny.seeds
    gas = json.loads((tmp_path / "bidding" / "budget-bound" / "gas" / "seed-0" / "train.json").read_text())
    assert "critic_loss" in gas["stats"]  # the search's action value trained beside the DT
    stats = json.loads(
        (tmp_path / "bidding" / "budget-bound" / "vdt_replay" / "seed-0" / "train.json").read_text()
    )
    assert stats["stats"]["plan_alpha_low"] == pytest.approx(0.02) and stats["stats"]["plan_states"] > 0
    assert stats["stats"]["plan_spend_r2_train"] > 0  # the spend head that keeps the target
    # its margin z, calibrated on training periods: the smallest z tried whose plays miss at most 5%, else the last
    calibrated = tmp_path / "bidding" / "budget-bound" / "vdt_replay" / "calibrated.json"
    cal = json.loads(calibrated.read_text())
    rates = {float(z): r for z, r in cal["miss_rates"].items()}
    assert list(rates) == list(bench_bidding.REPLAY_Z_GRID[: len(rates)])
    meets = [z for z, r in rates.items() if r <= tiny.replay_miss_rate]
    assert cal["z"] == (meets[0] if meets else bench_bidding.REPLAY_Z_GRID[-1]) and len(meets) <= 1
    stamp = calibrated.stat().st_mtime_ns
    # the bench plays the seeds with that margin
    seeds = [tmp_path / "bidding" / "budget-bound" / "vdt_replay" / f"seed-{s}" for s in range(tiny.seeds)]
    makers = [bench_bidding._Factory(DTBidder.load(p, plan_target_z=cal["z"])) for p in seeds]
    market = bench_bidding.market_of(tiny, "budget-bound")
    assert evaluate(makers, market, tiny.evaluation)["score_mean"] == out["vdt_replay"]["score_mean"]
    again = bench_bidding.main(replace(tiny, bidders=("vdt_replay",)))["regimes"]["budget-bound"]["bidders"]
    assert again["vdt_replay"]["score_mean"] == out["vdt_replay"]["score_mean"]
    assert again["vdt_replay"]["train_minutes"] == out["vdt_replay"]["train_minutes"]  # kept, not retrained
    assert calibrated.stat().st_mtime_ns == stamp  # nor calibrated again
    with pytest.raises(ValueError, match=r"--replay-miss-rate must be in \[0, 1\)"):
        bench_bidding.main(replace(tiny, replay_miss_rate=1.5))
    with pytest.raises(ValueError, match="--replay-target-z must be a finite number"):
        bench_bidding.main(replace(tiny, replay_target_z=float("nan")))
    with pytest.raises(ValueError, match="--dt.plan-target-z would make the plain dt keep a target"):
        bench_bidding.main(replace(tiny, dt=replace(tiny.dt, plan_target_z=1.0)))
    with pytest.raises(ValueError, match="--replay-days must be at least 1"):
        bench_bidding.main(replace(tiny, replay_days=0))
    with pytest.raises(ValueError, match="--gas-factors must be positive"):
        bench_bidding.main(replace(tiny, gas_factors=(1.0, -0.5)))


@needs_netns
def test_the_ray_engine_gives_the_figures_of_local_processes(tmp_path):
    """Training, plays and the bound as Ray tasks on a local cluster (in a network namespace with only
    loopback, as docs/scoring.md describes) give the figures two local worker processes give."""
    args = ["--preset", "tiny", "--regimes", "budget-bound", "--bidders", "dt",
            "--evaluation.workers", "2", "--simulate.no-progress"]  # fmt: skip

    def run(engine: str, out: str) -> dict:
        return run_job("bench-bidding", *args, "--engine", engine, "--output", out, cwd=tmp_path)["regimes"][
            "budget-bound"
        ]

    local, ray = run("local", str(tmp_path / "local")), run("ray", str(tmp_path / "ray"))
    assert local["bound"] == ray["bound"]
    for bidder in ("dt",):  # trained as a Ray task, played as Ray tasks
        for key in ("score_mean", "score_ci", "ratio_to_dt", "ratio_ci", "violation_rate", "budget_used"):
            assert ray["bidders"][bidder][key] == pytest.approx(local["bidders"][bidder][key], rel=1e-9), (
                bidder,
                key,
            )


def test_an_online_bidders_key_is_what_it_trains():
    """A kept PPO / SAC seed is keyed by the action its policy really outputs: PPO's default and an explicit ln α are
    one training (one key), α itself another; SAC's default is α. The digest needs no data and no run."""
    cfg = bench_bidding.PRESETS["tiny"]
    market = bench_bidding.market_of(cfg, "budget-bound")

    def key(bidder, **kw):  # the config's field is named after the bidder
        c = replace(cfg, **{bidder: replace(getattr(cfg, bidder), **kw)})
        return bench_bidding._settings(c, bidder, market, 0)

    assert key("ppo") == key("ppo", action="log_alpha") != key("ppo", action="alpha")
    assert key("sac") == key("sac", action="alpha") != key("sac", action="log_alpha")
    assert key("ppo") != key("ppo", learning_rate=1e-3)
