"""AuctionNet's column layout: simulate writes it, the trainers read it back as the same episodes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from bidding.auctionnet import RAW_COLUMNS, TRAINING_COLUMNS, from_training
from bidding.data import load_trajectories
from pipelines import simulate
from simulators.market import STATE_FEATURES


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "offline"
    cfg = replace(simulate.PRESETS["tiny"], output=str(out), progress=False, policies=("fixed", "pid", "pacing", "lp"),
                  auctionnet=True, raw_log_periods=1)  # fmt: skip
    simulate.main(cfg)
    return out, cfg


def test_the_training_layout_round_trips_to_the_same_episodes(written):
    out, cfg = written
    native = load_trajectories(out)
    table = pl.read_parquet(out / "auctionnet" / "part-*.parquet")
    assert tuple(table.columns) == TRAINING_COLUMNS
    back = load_trajectories(out / "auctionnet")
    assert back.rules == native.rules
    for name in ("period", "advertiser"):
        np.testing.assert_array_equal(getattr(back, name), getattr(native, name))
    np.testing.assert_array_equal(back.states, native.states)
    np.testing.assert_allclose(back.actions, native.actions, rtol=1e-6)
    np.testing.assert_array_equal(back.conversions, native.conversions)
    np.testing.assert_allclose(back.cost, native.cost, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(back.rewards, native.rewards, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(back.bid_scale, native.bid_scale)
    np.testing.assert_array_equal(back.budget, native.budget)
    # next_state is the following step's state; the action is Σbid / ΣpValue = α × CPA constraint
    ep = table.filter((pl.col("deliveryPeriodIndex") == 0) & (pl.col("advertiserNumber") == 1)).sort(
        "timeStepIndex"
    )
    states = np.array(ep["state"].to_list())
    np.testing.assert_array_equal(np.array(ep["next_state"].to_list())[:-1], states[1:])
    np.testing.assert_allclose(ep["action"].to_numpy(), native.actions[1] * native.bid_scale[1], rtol=1e-6)
    # expected conversions track the realised ones
    assert table["reward_continuous"].sum() == pytest.approx(table["reward"].sum(), rel=0.25)


def test_the_raw_log_adds_up_to_the_trajectories(written):
    out, cfg = written
    raw = pl.read_parquet(out / "auctionnet" / "raw" / "period-00000.parquet")
    assert tuple(raw.columns) == RAW_COLUMNS
    m = cfg.market
    assert raw.height == m.impressions * m.n_advertisers  # every (advertiser, impression) of the period
    native = pl.read_parquet(out / "part-*.parquet").filter(pl.col("period") == 0)
    by = raw.group_by("advertiserNumber", "timeStepIndex").agg(
        pl.col("cost").sum(), pl.col("conversionAction").sum(), pl.col("isExposed").sum()
    )
    joined = native.join(by, left_on=["advertiser", "step"], right_on=["advertiserNumber", "timeStepIndex"])
    np.testing.assert_allclose(
        joined["cost_right"].to_numpy(), joined["cost"].to_numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(joined["conversionAction"].to_numpy(), joined["conversions"].to_numpy())
    np.testing.assert_array_equal(joined["isExposed"].to_numpy(), joined["exposures"].to_numpy())
    assert set(raw["adSlot"].unique()) <= set(range(m.rules.n_slots + 1))
    assert (raw["xi"] == (raw["adSlot"] > 0).cast(pl.Int8)).all()
    assert (raw["isExposed"] <= raw["xi"]).all() and (raw["cost"].filter(raw["isExposed"] == 0) == 0).all()
    # isEnd marks one step per campaign (the last it bid in), on all of that step's rows
    ends = (
        raw.filter(pl.col("isEnd") == 1).group_by("advertiserNumber").agg(pl.col("timeStepIndex").n_unique())
    )
    assert ends.height == m.n_advertisers and (ends["timeStepIndex"] == 1).all()
    per_step = raw.group_by("advertiserNumber", "timeStepIndex").agg(pl.col("isEnd").n_unique())
    assert (per_step["isEnd"] == 1).all()
    # one least winning cost per impression, whoever reads it
    assert (
        raw.group_by("timeStepIndex", "pvIndex")
        .agg(pl.col("leastWinningCost").n_unique())["leastWinningCost"]
        .max()
        == 1
    )


def _training_row(**changes) -> pl.DataFrame:
    row = {
        "deliveryPeriodIndex": [0], "advertiserNumber": [0], "advertiserCategoryIndex": [0], "budget": [100.0],
        "CPAConstraint": [10.0], "realAllCost": [0.0], "realAllConversion": [0.0], "timeStepIndex": [0],
        "state": [[1.0] * 16], "action": [5.0], "reward": [0.0], "reward_continuous": [0.0], "done": [1],
        "next_state": [[0.0] * 16],
    }  # fmt: skip
    row.update(changes)
    return pl.DataFrame(row)


def test_bad_auctionnet_tables_name_the_column():
    with pytest.raises(ValueError, match="missing AuctionNet column 'action'"):
        from_training(_training_row().drop("action"))
    with pytest.raises(ValueError, match="'state' must hold 16 numbers per row; row 0 holds 15"):
        from_training(_training_row(state=[[1.0] * 15]))
    with pytest.raises(ValueError, match="'budget' must be numeric"):
        from_training(_training_row(budget=["lots"]))
    with pytest.raises(ValueError, match="'CPAConstraint' must be positive"):
        from_training(_training_row(CPAConstraint=[0.0]))
    one = from_training(_training_row())
    assert one["cost"][0] == pytest.approx(100.0) and one["action"][0] == pytest.approx(0.5)
    assert list(one.columns)[: 5 + len(STATE_FEATURES)][-1] == STATE_FEATURES[-1]
