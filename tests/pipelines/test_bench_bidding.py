"""bench-bidding end to end on the tiny preset (every bidder trains for a few steps and is judged)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines import bench_bidding


def test_bench_bidding_tiny_judges_every_bidder(tmp_path):
    cfg = replace(bench_bidding.PRESETS["tiny"], output=str(tmp_path / "bidding"))
    cfg = replace(cfg, simulate=replace(cfg.simulate, progress=False))
    out = bench_bidding.main(cfg)
    res = out["bidders"]
    assert set(res) == set(bench_bidding.BIDDERS)
    ref = out["reference"]["hindsight_alpha"]
    assert ref["plays"] == 2 * 3 * 2 and 0.1 <= ref["alpha_median"] <= 1.0
    # the reference replays each market with every α of its grid, fixed α = 1 among them: never below that bidder
    assert all(
        h >= f - 1e-9 for h, f in zip(ref["score_by_budget"], res["fixed"]["score_by_budget"], strict=True)
    )
    for name, r in res.items():
        assert len(r["score_by_budget"]) == 3, name
        assert r["score_mean"] >= 0 and 0 <= r["cpa_violation_rate"] <= 1, name
        assert r["act_ms"] >= 0
    for name in ("bc", "iql", "cql", "dt", "vdt", "ppo", "sac"):
        assert res[name]["train_minutes"] > 0, name
        assert (tmp_path / "bidding" / name).is_dir()
    assert (tmp_path / "bidding" / "bidding.png").is_file()


def test_bench_bidding_refuses_unknown_bidders(tmp_path):
    with pytest.raises(ValueError, match="unknown bidders"):
        bench_bidding.main(replace(bench_bidding.PRESETS["tiny"], bidders=("gave",), output=str(tmp_path)))


def test_bench_bidding_keeps_value_guidance_to_vdt(tmp_path):
    """Guidance set on the plain dt's shape, or a plan weight out of range, fails before anything trains."""
    tiny = replace(bench_bidding.PRESETS["tiny"], output=str(tmp_path / "out"))
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
    assert not (tmp_path / "out").exists()


def test_bench_bidding_checks_vdt_data_before_training(tmp_path):
    """Trajectories without constant-bid episodes stop vdt's plan value before any bidder trains."""
    tiny = replace(bench_bidding.PRESETS["tiny"], output=str(tmp_path / "out"), bidders=("bc", "vdt"))
    tiny = replace(tiny, simulate=replace(tiny.simulate, policies=("pid", "pacing"), progress=False))
    with pytest.raises(ValueError, match=r"constant-bid policies \['fixed'\].*--vdt-plan-weight 0"):
        bench_bidding.main(tiny)
    assert not (tmp_path / "out" / "bc").exists()
