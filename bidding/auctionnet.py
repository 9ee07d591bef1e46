"""Trajectories in AuctionNet's published column layout, in and out.

AuctionNet (Su et al., NeurIPS 2024 datasets track) publishes two tables; a team with logs in that layout can train
this toolkit's offline bidders on them, and ``simulate --auctionnet`` writes them:

* the **training file**, one row per (period, advertiser, step): ``deliveryPeriodIndex, advertiserNumber,
  advertiserCategoryIndex, budget, CPAConstraint, realAllCost, realAllConversion, timeStepIndex, state`` (16
  values, in the order of :data:`simulators.market.STATE_FEATURES`, which is AuctionNet's), ``action`` (Σbid /
  ΣpValue of the step: the bid per unit of predicted conversion probability), ``reward`` (the step's
  conversions), ``reward_continuous`` (its expected conversions, Σ pValue of the exposed wins), ``done``,
  ``next_state``;
* the **raw log**, one row per (period, advertiser, step, impression): ``deliveryPeriodIndex, advertiserNumber,
  advertiserCategoryIndex, budget, CPAConstraint, timeStepIndex, remainingBudget, pvIndex, pValue, pValueSigma,
  bid, xi, adSlot, cost, isExposed, conversionAction, leastWinningCost, isEnd`` (xi: won a slot; adSlot: 1 for
  the best slot, 0 when none; isEnd: 1 on the campaign's last step bidding, when its budget or the period ran out).

Mapping to the native table: ``action = α × bid_scale`` (exact for CPA advertisers; for ROI advertisers with order
values and for acquisition advertisers Σbid / ΣpValue also weighs the impressions' factors), ``CPAConstraint =
bid_scale`` (an ROI advertiser's cost per conversion that meets its ROI target). Reading back, a step's cost is
the fall of the remaining budget (``budget × (state[1] − next_state[1])``), α = action / CPAConstraint, and the
rewards are the change of the period score (``conversion_score``) with the given β.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from simulators.auction import conversion_score
from simulators.market import STATE_FEATURES

__all__ = ["RAW_COLUMNS", "TRAINING_COLUMNS", "from_training", "is_training_layout", "to_training"]

TRAINING_COLUMNS: tuple[str, ...] = (
    "deliveryPeriodIndex",
    "advertiserNumber",
    "advertiserCategoryIndex",
    "budget",
    "CPAConstraint",
    "realAllCost",
    "realAllConversion",
    "timeStepIndex",
    "state",
    "action",
    "reward",
    "reward_continuous",
    "done",
    "next_state",
)
"""AuctionNet's training-file columns, in order."""

RAW_COLUMNS: tuple[str, ...] = (
    "deliveryPeriodIndex",
    "advertiserNumber",
    "advertiserCategoryIndex",
    "budget",
    "CPAConstraint",
    "timeStepIndex",
    "remainingBudget",
    "pvIndex",
    "pValue",
    "pValueSigma",
    "bid",
    "xi",
    "adSlot",
    "cost",
    "isExposed",
    "conversionAction",
    "leastWinningCost",
    "isEnd",
)
"""AuctionNet's raw-log columns, in order."""

_NUMERIC = ("budget", "CPAConstraint", "action", "reward")
_INTEGER = ("deliveryPeriodIndex", "advertiserNumber", "timeStepIndex")


def is_training_layout(df: pl.DataFrame) -> bool:
    """Does ``df`` look like AuctionNet's training file (rather than the native trajectory table)?"""
    return "deliveryPeriodIndex" in df.columns and "state" in df.columns


def to_training(
    native: pl.DataFrame, n_categories: int, expected: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The native trajectory table (``simulators.rollout.TRAJECTORY_COLUMNS``) in AuctionNet's training layout.

    ``expected``, when given, holds ``period, advertiser, step, expected_conversions`` (Σ pValue of the exposed wins)
    for ``reward_continuous``; without it the column repeats the step's conversions."""
    df = native.sort("period", "advertiser", "step")
    state = pl.concat_list([pl.col(c).cast(pl.Float32) for c in STATE_FEATURES]).alias("state")
    df = df.with_columns(state)
    if expected is not None:
        df = df.join(expected, on=["period", "advertiser", "step"], how="left")
        cont = pl.col("expected_conversions").fill_null(pl.col("conversions"))
    else:
        cont = pl.col("conversions")
    by = ["period", "advertiser"]
    out = df.select(
        pl.col("period").cast(pl.Int64).alias("deliveryPeriodIndex"),
        pl.col("advertiser").cast(pl.Int64).alias("advertiserNumber"),
        (pl.col("advertiser").cast(pl.Int64) % n_categories).alias("advertiserCategoryIndex"),
        pl.col("budget").cast(pl.Float64),
        pl.col("bid_scale").cast(pl.Float64).alias("CPAConstraint"),
        pl.col("cost").cast(pl.Float64).sum().over(by).alias("realAllCost"),
        pl.col("conversions").cast(pl.Float64).sum().over(by).alias("realAllConversion"),
        pl.col("step").cast(pl.Int64).alias("timeStepIndex"),
        pl.col("state"),
        (pl.col("action").cast(pl.Float64) * pl.col("bid_scale").cast(pl.Float64)).alias("action"),
        pl.col("conversions").cast(pl.Float64).alias("reward"),
        cont.cast(pl.Float64).alias("reward_continuous"),
        pl.col("done").cast(pl.Int64),
        # the state after the step: the next row's state; after the last step, the state with the step's
        # spend taken off the budget left and no time left
        pl.col("state").shift(-1).over(by).alias("next_state"),
        pl.col("cost").cast(pl.Float64).alias("_cost"),
    )
    last = _final_state(out)
    return (
        out.with_columns(
            pl.when(pl.col("next_state").is_null())
            .then(last)
            .otherwise(pl.col("next_state"))
            .alias("next_state")
        )
        .drop("_cost")
        .select(TRAINING_COLUMNS)
    )


def _final_state(out: pl.DataFrame) -> pl.Expr:
    """The state after an episode's last step: time_left 0, budget_left lowered by the step's cost, the rest as
    before the step."""
    left = (pl.col("state").list.get(1) - pl.col("_cost") / pl.col("budget").clip(lower_bound=1e-12)).clip(
        lower_bound=0.0
    )
    return pl.concat_list(
        [
            pl.lit(0.0, dtype=pl.Float32),
            left.cast(pl.Float32),
            *[pl.col("state").list.get(j) for j in range(2, 16)],
        ]
    )


def from_training(df: pl.DataFrame, where: str = "the AuctionNet table", beta: float = 2.0) -> pl.DataFrame:
    """AuctionNet's training layout as the native trajectory table (every bidder's episodes are then read alike).

    Raises ``ValueError`` naming ``where`` and the first missing or malformed column."""
    missing = [c for c in ("deliveryPeriodIndex", "advertiserNumber", "budget", "CPAConstraint", "timeStepIndex",
                           "state", "action", "reward", "done", "next_state") if c not in df.columns]  # fmt: skip
    if missing:
        raise ValueError(
            f"{where}: missing AuctionNet column {missing[0]!r} (all missing: {missing}; expected {list(TRAINING_COLUMNS)})"
        )
    for c in _INTEGER + _NUMERIC:
        if not df.schema[c].is_numeric():
            raise ValueError(f"{where}: column {c!r} must be numeric, got {df.schema[c]}")
    for c in ("state", "next_state"):
        if not isinstance(df.schema[c], (pl.List, pl.Array)):
            raise ValueError(f"{where}: column {c!r} must hold 16 numbers per row, got {df.schema[c]}")
        lengths = df[c].list.len() if isinstance(df.schema[c], pl.List) else None
        if lengths is not None and (lengths != 16).any():
            row = int((lengths != 16).arg_max())
            raise ValueError(
                f"{where}: column {c!r} must hold 16 numbers per row; row {row} holds {lengths[row]}"
            )
    bad = ~(df["CPAConstraint"].cast(pl.Float64) > 0)
    if bad.any():
        r = df.filter(bad).row(0, named=True)
        raise ValueError(
            f"{where}: column 'CPAConstraint' must be positive, got {r['CPAConstraint']} at period "
            f"{r['deliveryPeriodIndex']}, advertiser {r['advertiserNumber']}, step {r['timeStepIndex']}"
        )
    df = df.sort("deliveryPeriodIndex", "advertiserNumber", "timeStepIndex")
    state = np.asarray(df["state"].to_list(), dtype=np.float64)
    nxt = np.asarray(df["next_state"].to_list(), dtype=np.float64)
    budget = df["budget"].cast(pl.Float64).to_numpy()
    scale = df["CPAConstraint"].cast(pl.Float64).to_numpy()
    cost = np.maximum(budget * (state[:, 1] - nxt[:, 1]), 0.0)
    conv = df["reward"].cast(pl.Float64).to_numpy()
    period = df["deliveryPeriodIndex"].cast(pl.Int64).to_numpy()
    adv = df["advertiserNumber"].cast(pl.Int64).to_numpy()
    # the running score, episode by episode: rewards are its change
    key = period * (adv.max(initial=0) + 1) + adv
    start = np.r_[True, key[1:] != key[:-1]]
    group = np.cumsum(start) - 1
    cum_cost = _cumsum_by(cost, group)
    cum_conv = _cumsum_by(conv, group)
    score = conversion_score(cum_conv, cum_cost, scale, beta)
    prev = np.where(start, 0.0, np.r_[0.0, score[:-1]])
    cols = {
        "period": period.astype(np.int32),
        "advertiser": adv.astype(np.int16),
        "step": df["timeStepIndex"].cast(pl.Int16).to_numpy(),
        "policy": ["auctionnet"] * df.height,
        "kind": ["cpa"] * df.height,
    }
    for j, name in enumerate(STATE_FEATURES):
        cols[name] = state[:, j].astype(np.float32)
    cols.update(
        action=(df["action"].cast(pl.Float64).to_numpy() / scale).astype(np.float32),
        reward=(score - prev).astype(np.float32),
        cost=cost.astype(np.float32),
        conversions=conv.astype(np.float32),
        exposures=np.zeros(df.height, dtype=np.int32),
        budget=budget.astype(np.float32),
        target=scale.astype(np.float32),
        bid_scale=scale.astype(np.float32),
        done=df["done"].cast(pl.Boolean).to_numpy(),
    )
    return pl.DataFrame(cols)


def _cumsum_by(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``x`` restarting at every new value of the sorted ``group``."""
    total = np.cumsum(x)
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    offset = np.repeat(np.r_[0.0, total[first[1:] - 1]], np.diff(np.r_[first, x.size]))
    return total - offset


class RawLog:
    """Collects AuctionNet's raw log of one period, impression by impression: pass it to
    :func:`simulators.rollout.run_period` as ``after_step``, then take :meth:`frame`."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.parts: list[pl.DataFrame] = []
        self._was_active: np.ndarray | None = None

    def __call__(self, market) -> None:
        d = market.detail
        adv, cfg = market.advertisers, market.cfg
        N, n = d.bids.shape
        if n == 0:
            return
        K = d.result.winners.shape[1]
        slot = np.zeros((N, n), dtype=np.int8)
        cost = np.zeros((N, n), dtype=np.float32)
        exposed = np.zeros((N, n), dtype=bool)
        for k in range(K):
            w = d.result.winners[:, k]
            won = np.flatnonzero(w >= 0)
            slot[w[won], won] = k + 1
            shown = won[d.result.exposed[won, k]]
            exposed[w[shown], shown] = True
            cost[w[shown], shown] = d.result.prices[shown, k]
        conv = np.zeros((N, n), dtype=bool)
        conv[d.who[d.converted], d.imp[d.converted]] = True
        t = market.t - 1  # the step just run
        was = self._was_active if self._was_active is not None else adv.budget > 0
        # its last step bidding: the budget, or the period, ran out
        last = was & (~d.active | (t == cfg.n_steps - 1))
        self._was_active = d.active
        p = d.p
        a = np.repeat(np.arange(N), n)
        self.parts.append(
            pl.DataFrame(
                {
                    "deliveryPeriodIndex": np.full(N * n, self.period, dtype=np.int64),
                    "advertiserNumber": a,
                    "advertiserCategoryIndex": adv.category[a].astype(np.int64),
                    "budget": adv.budget[a],
                    "CPAConstraint": adv.bid_scale[a],
                    "timeStepIndex": np.full(N * n, t, dtype=np.int64),
                    "remainingBudget": d.remaining[a],
                    "pvIndex": np.tile(np.arange(n, dtype=np.int64), N),
                    "pValue": p.reshape(-1),
                    "pValueSigma": (p * adv.sigma.astype(np.float32)[:, None]).reshape(-1),
                    "bid": d.bids.reshape(-1),
                    "xi": (slot > 0).reshape(-1).astype(np.int8),
                    "adSlot": slot.reshape(-1),
                    "cost": cost.reshape(-1),
                    "isExposed": exposed.reshape(-1).astype(np.int8),
                    "conversionAction": conv.reshape(-1).astype(np.int8),
                    "leastWinningCost": np.tile(d.result.least_winning_cost.astype(np.float32), N),
                    "isEnd": np.repeat(last, n).astype(np.int8),
                }
            )
        )

    def frame(self) -> pl.DataFrame:
        """The period's raw log, ordered by (step, advertiser, impression)."""
        return (
            pl.concat(self.parts).select(RAW_COLUMNS)
            if self.parts
            else pl.DataFrame(schema=list(RAW_COLUMNS))
        )
