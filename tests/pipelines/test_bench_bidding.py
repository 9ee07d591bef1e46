"""bench-bidding end to end on the tiny preset (every bidder trains for a few steps and is judged)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines import bench_bidding


def test_bench_bidding_tiny_judges_every_bidder(tmp_path):
    cfg = replace(bench_bidding.PRESETS["tiny"], output=str(tmp_path / "bidding"))
    cfg = replace(cfg, simulate=replace(cfg.simulate, progress=False))
    res = bench_bidding.main(cfg)["bidders"]
    assert set(res) == set(bench_bidding.BIDDERS)
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
