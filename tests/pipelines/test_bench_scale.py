"""bench-scale: every stage at every size in its own process, its figures kept and reused, bad settings refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import bench_scale


def test_scaled_world_grows_users_categories_and_brands_with_the_items():
    w = bench_scale.scaled_world(1_000_000)
    assert (w.n_items, w.n_users, w.n_categories, w.n_brands) == (1_000_000, 100_000, 2_000, 1_200)
    w = bench_scale.scaled_world(10_000, seed=3)
    assert (w.n_items, w.n_users, w.n_categories, w.n_brands, w.seed) == (10_000, 2_000, 60, 200, 3)
    w = bench_scale.scaled_world(100_000)
    assert (w.n_users, w.n_categories, w.n_brands) == (10_000, 200, 1_200)


def test_tiny_run_reports_every_stage_and_a_rerun_keeps_them(tmp_path, capfd):
    cfg = replace(bench_scale.PRESETS["tiny"], sizes=(1_000,), output=str(tmp_path / "out"),
                  figure=str(tmp_path / "fig.png"))  # fmt: skip
    res = bench_scale.main(cfg)
    row = res["sizes"]["1000"]
    assert list(row) == list(bench_scale.STAGES)
    for stage, figures in row.items():
        assert set(figures) == set(bench_scale.RESULT_KEYS), stage
        assert figures["seconds"] >= 0 and figures["artifact_mb"] >= 0
        assert 50 < figures["peak_rss_mb"] < 4096, stage  # a process's own peak, not its parent's
    details = res["details"]["1000"]
    assert details["prepare"]["items"] == 1_000
    assert details["train"]["steps"] == cfg.train_steps
    assert details["decode"]["requests"] == cfg.decode_requests
    assert res["valid_rate"]["1000"] == 1.0 and res["decode_qps"]["1000"] > 0
    assert details["score"]["rows_scored"] == cfg.score_requests and details["score"]["rows_failed"] == 0
    assert details["cascade_recall"]["requests"] == cfg.recall_requests
    assert Path(cfg.figure).is_file() and (tmp_path / "out" / "bench_scale.png").is_file()
    kept = json.loads((tmp_path / "out" / "1000" / "train.json").read_text())
    assert kept["seconds"] == row["train"]["seconds"]

    capfd.readouterr()
    again = bench_scale.main(cfg)  # everything kept: no stage runs again, the same figures come back
    assert again["sizes"] == res["sizes"]
    assert capfd.readouterr().err.count("kept from an earlier run") == len(bench_scale.STAGES)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(sizes=()), "at least one"),
        (dict(sizes=(500,)), "at least 1,000"),
        (dict(beam=0), "--beam"),
        (dict(train_steps=0), "--train-steps"),
    ],
)
def test_bad_settings_are_refused(change, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        bench_scale.main(replace(bench_scale.PRESETS["tiny"], output=str(tmp_path), **change))
