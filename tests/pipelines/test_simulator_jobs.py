"""simulate and bench-simulator, in-process on tiny markets."""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb
import numpy as np
import polars as pl
import pytest

from pipelines import bench_simulator, simulate
from simulators.auction import conversion_score
from tests.netns import needs_netns, run_job


def _cfg(tmp_path, **kw):
    return replace(simulate.PRESETS["tiny"], output=str(tmp_path / "offline"), progress=False, **kw)


def test_simulate_writes_the_documented_schema_and_resumes_exactly(tmp_path):
    cfg = _cfg(tmp_path, policies=("fixed", "pid", "pacing", "lp"))
    res = simulate.main(cfg)
    m = cfg.market
    assert res["rows"] == cfg.periods * m.n_advertisers * m.n_steps
    assert res["parts_written"] == 2 and res["parts_resumed"] == 0
    out = tmp_path / "offline"
    df = pl.read_parquet(out / "part-*.parquet").sort("period", "step", "advertiser")
    assert tuple(df.columns) == simulate.COLUMNS
    assert set(df["policy"].unique()) <= {"fixed", "pid", "pacing", "lp"}
    # every trajectory's rewards add up to the score of its totals
    ep = df.group_by("period", "advertiser").agg(
        pl.col("reward").sum(), pl.col("cost").sum(), pl.col("conversions").sum(), pl.col("bid_scale").first()
    )
    want = conversion_score(ep["conversions"].to_numpy(), ep["cost"].to_numpy(), ep["bid_scale"].to_numpy())
    np.testing.assert_allclose(ep["reward"].to_numpy(), want, rtol=1e-4, atol=1e-4)
    assert (
        ep["cost"] <= df.group_by("period", "advertiser").agg(pl.col("budget").first())["budget"].max()
    ).all()
    assert df.filter(pl.col("done"))["step"].unique().to_list() == [m.n_steps - 1]
    # queryable with DuckDB
    q = f"select count(*) from read_parquet('{out}/part-*.parquet') where policy = 'pid'"
    n = duckdb.connect().execute(q).fetchone()[0]
    assert n == df.filter(pl.col("policy") == "pid").height
    # a crash that lost the second part: the rerun writes only that part, and writes the same rows
    (out / "part-00001.parquet").unlink()
    again = simulate.main(cfg)
    assert again["parts_written"] == 1 and again["parts_resumed"] == 1
    df2 = pl.read_parquet(out / "part-*.parquet").sort("period", "step", "advertiser")
    assert df2.equals(df)
    assert not list(out.glob(".*"))  # no temporary file left behind
    # parts are never mixed across settings
    with pytest.raises(ValueError, match=r"other settings \(seed differ: seed: 0 there, 1 now\)"):
        simulate.main(replace(cfg, seed=1))


def test_simulate_with_a_ppo_behaviour_policy(tmp_path):
    res = simulate.main(_cfg(tmp_path, policies=("ppo", "pid"), periods=2))
    assert (tmp_path / "offline" / "ppo" / "sb3.json").is_file()
    assert res.get("ppo_trajectories", 0) + res.get("pid_trajectories", 0) == 2 * 6
    df = pl.read_parquet(tmp_path / "offline" / "part-*.parquet")
    assert df["action"].min() >= 0 and df["action"].max() <= 5.0


def test_simulate_refuses_unknown_policies(tmp_path):
    with pytest.raises(ValueError, match="unknown policies"):
        simulate.main(_cfg(tmp_path, policies=("pid", "greedy")))


def test_simulate_fixed_alpha_range_reaches_the_logged_bids(tmp_path):
    """A low log-uniform range for the fixed behaviour bidders shows in their logged α (no exploration noise here),
    a bad range is refused before anything is written, and a folder whose simulate.json lacks a setting is refused."""
    cfg = _cfg(
        tmp_path, policies=("fixed",), explore_sigma=0.0, fixed_alpha=(0.02, 0.08), fixed_alpha_log=True
    )
    simulate.main(cfg)
    df = pl.read_parquet(tmp_path / "offline" / "part-*.parquet")
    per_bidder = df.group_by("period", "advertiser").agg(
        pl.col("action").min().alias("lo"), pl.col("action").max()
    )
    assert per_bidder.height == cfg.periods * cfg.market.n_advertisers
    assert (per_bidder["lo"] == per_bidder["action"]).all()  # a fixed bidder bids one α all day
    assert per_bidder["action"].min() >= 0.02 and per_bidder["action"].max() <= 0.08
    with pytest.raises(ValueError, match="fixed_alpha must be"):
        simulate.main(_cfg(tmp_path / "bad", fixed_alpha=(0.5, 0.1)))
    assert not (tmp_path / "bad").exists()
    # a simulate.json that lacks a setting (written by another version) is not resumed: the setting is named
    old = _cfg(tmp_path / "old", policies=("pid",), periods=2)
    simulate.main(old)
    settings = tmp_path / "old" / "offline" / "simulate.json"
    recorded = json.loads(settings.read_text())
    settings.write_text(json.dumps({k: v for k, v in recorded.items() if k != "fixed_alpha_log"}))
    (tmp_path / "old" / "offline" / "part-00000.parquet").unlink()
    with pytest.raises(
        ValueError, match=r"other settings \(fixed_alpha_log differ: fixed_alpha_log: None there"
    ):
        simulate.main(old)


def test_bench_simulator_tiny():
    res = bench_simulator.main(bench_simulator.PRESETS["tiny"])
    assert res["impressions"] == 5_000 and len(res["episode_seconds_all"]) == 2
    assert res["auctions_per_second"] == pytest.approx(5_000 / res["episode_seconds"])
    assert res["engine_auctions_per_second"] > 0


def test_simulate_records_the_auction_rules_and_the_episodes_read_them(tmp_path):
    from bidding.data import load_trajectories
    from simulators.auction import AuctionRules

    rules = AuctionRules(beta=1.0, reserve_price=0.2)
    cfg = _cfg(tmp_path, policies=("fixed", "pid"), periods=2)
    cfg = replace(cfg, market=replace(cfg.market, rules=rules))
    simulate.main(cfg)
    out = tmp_path / "offline"
    assert json.loads((out / "simulate.json").read_text())["market"]["rules"]["beta"] == 1.0
    ep = load_trajectories(out)
    assert ep.rules == rules and ep.subset(ep.period == 0).rules == rules
    # the rewards are the score under the recorded β
    want = rules.score(ep.conversions.sum(1), ep.cost.sum(1), ep.bid_scale)
    np.testing.assert_allclose(ep.returns(), want, rtol=1e-4, atol=1e-4)
    meta = json.loads((out / "simulate.json").read_text())
    meta["market"]["rules"]["beta"] = -1
    (out / "simulate.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="simulate.json: cannot read the auction rules.*beta must be"):
        load_trajectories(out)


def test_parts_simulated_in_parallel_are_the_parts_simulated_in_turn(tmp_path):
    kw = dict(policies=("fixed", "pid", "pacing", "lp"), periods=4, part_periods=1, auctionnet=True)
    one = simulate.main(_cfg(tmp_path / "one", **kw))
    two = simulate.main(_cfg(tmp_path / "two", workers=2, **kw))
    assert one["parts_written"] == two["parts_written"] == 4
    for name in ("part-00000.parquet", "part-00003.parquet", "auctionnet/part-00002.parquet"):
        a, b = (pl.read_parquet(tmp_path / w / "offline" / name) for w in ("one", "two"))
        assert a.equals(b), name
    # the number of workers is not a setting of the data: a resume with another count is allowed
    simulate.main(_cfg(tmp_path / "one", workers=3, **kw))


@needs_netns
def test_simulate_on_ray_writes_the_parts_of_the_local_engine(tmp_path):
    # heuristic policies only: a PPO behaviour policy is trained in each run, with this process's torch threads
    # here and one thread there, so its weights (and so the data) would differ for that reason alone
    policies = ("fixed", "pid", "pacing", "lp")
    local = simulate.main(_cfg(tmp_path / "local", periods=4, part_periods=2, policies=policies))
    ray = run_job("simulate", "--preset", "tiny", "--periods", "4", "--part-periods", "2", "--no-progress",
                  "--policies", *policies, "--engine", "ray", "--workers", "2", "--output", str(tmp_path / "ray"),
                  cwd=tmp_path)  # fmt: skip
    assert ray["rows"] == local["rows"]
    for name in ("part-00000.parquet", "part-00001.parquet"):
        assert pl.read_parquet(tmp_path / "ray" / name).equals(
            pl.read_parquet(tmp_path / "local" / "offline" / name)
        )
