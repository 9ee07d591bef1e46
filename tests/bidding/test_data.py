"""Trajectory loading, score rewards and return-to-go."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bidding.data import load_trajectories, return_to_go, score_rewards
from simulators.market import STATE_FEATURES
from simulators.rollout import TRAJECTORY_COLUMNS


def test_return_to_go_on_a_three_step_episode_by_hand():
    """CPA target 10. Step 1: cost 10, 2 conversions -> score 2. Step 2: cost 30, 1 conversion -> cost 40 for 3,
    cpa 13.33, penalty (10/13.33)^2 = 0.5625, score 1.6875 (reward -0.3125). Step 3: cost 5, 2 conversions -> cost 45
    for 5, cpa 9, score 5 (reward 3.3125). Return-to-go: [5, 3, 3.3125]."""
    r = score_rewards(np.array([[10.0, 30.0, 5.0]]), np.array([[2.0, 1.0, 2.0]]), np.array([10.0]))
    np.testing.assert_allclose(r, [[2.0, -0.3125, 3.3125]])
    np.testing.assert_allclose(return_to_go(r), [[5.0, 3.0, 3.3125]])


def _table(E=2, T=3) -> pl.DataFrame:
    n = E * T
    rng = np.random.default_rng(0)
    cols = {
        "period": np.repeat(np.arange(E), T).astype(np.int32),
        "advertiser": np.zeros(n, np.int16),
        "step": np.tile(np.arange(T), E).astype(np.int16),
        "policy": ["pid"] * n,
        "kind": ["cpa"] * n,
    }
    for f in STATE_FEATURES:
        cols[f] = rng.random(n).astype(np.float32)
    cols.update(
        action=rng.random(n).astype(np.float32),
        reward=rng.random(n).astype(np.float32),
        cost=rng.random(n).astype(np.float32),
        conversions=rng.integers(0, 3, n).astype(np.float32),
        exposures=rng.integers(0, 9, n).astype(np.int32),
        budget=np.full(n, 100.0, np.float32),
        target=np.full(n, 10.0, np.float32),
        bid_scale=np.full(n, 10.0, np.float32),
        done=np.tile(np.arange(T) == T - 1, E),
    )
    return pl.DataFrame(cols).select(TRAJECTORY_COLUMNS)


def test_load_groups_episodes_in_order():
    df = _table()
    ep = load_trajectories(df.sample(fraction=1.0, shuffle=True, seed=1))
    assert ep.states.shape == (2, 3, 16) and ep.actions.shape == (2, 3)
    np.testing.assert_allclose(ep.actions.reshape(-1), df["action"].to_numpy())
    np.testing.assert_allclose(
        ep.returns(), df.group_by("period").agg(pl.col("reward").sum()).sort("period")["reward"]
    )


def test_bad_trajectories_get_clear_errors(tmp_path):
    df = _table()
    with pytest.raises(ValueError, match=r"missing trajectory columns \['reward'\]"):
        load_trajectories(df.drop("reward"))
    bad = df.with_columns(
        pl.when(pl.col("step") == 1).then(float("nan")).otherwise(pl.col("cost")).alias("cost")
    )
    with pytest.raises(ValueError, match="column 'cost' has 2 NaN.*period 0, advertiser 0, step 1"):
        load_trajectories(bad)
    with pytest.raises(ValueError, match="steps 0..2 exactly once"):
        load_trajectories(df.filter(~((pl.col("period") == 1) & (pl.col("step") == 1))).vstack(df.head(1)))
    with pytest.raises(FileNotFoundError, match="no part-"):
        load_trajectories(tmp_path)
    with pytest.raises(ValueError, match="no trajectory rows"):
        load_trajectories(df.head(0))
