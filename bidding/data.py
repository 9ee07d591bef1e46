"""Offline trajectories as episodes: loading with validation, score-based rewards and return-to-go.

An episode is one advertiser over one delivery period (T steps), as written by ``python -m pipelines simulate``
(columns: ``simulators.rollout.TRAJECTORY_COLUMNS``, meanings in docs/simulator.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from bidding.auctionnet import from_training, is_training_layout
from simulators.auction import AuctionRules, conversion_score
from simulators.market import STATE_FEATURES, Advertiser
from simulators.rollout import TRAJECTORY_COLUMNS

__all__ = [
    "Episodes",
    "featurize",
    "load_trajectories",
    "normalised_returns",
    "return_to_go",
    "score_rewards",
]

_NUMERIC = tuple(
    c for c in TRAJECTORY_COLUMNS if c not in ("policy", "kind", "done", "period", "advertiser", "step")
)


class Episodes(NamedTuple):
    """E episodes of T steps each."""

    states: np.ndarray
    """(E, T, 16) float32 state before each step."""
    actions: np.ndarray
    """(E, T) float32 bid coefficient α."""
    rewards: np.ndarray
    """(E, T) float32 change of the running score."""
    cost: np.ndarray
    """(E, T) float32."""
    conversions: np.ndarray
    """(E, T) float32."""
    budget: np.ndarray
    """(E,) float32."""
    target: np.ndarray
    """(E,) float32 CPA target, or ROI target."""
    bid_scale: np.ndarray
    """(E,) float32 highest cost per conversion that meets the target."""
    kind: np.ndarray
    """(E,) str 'cpa' or 'roi'."""
    policy: np.ndarray
    """(E,) str behaviour policy."""
    period: np.ndarray
    """(E,) int."""
    advertiser: np.ndarray
    """(E,) int."""
    rules: AuctionRules | None = None
    """The auction rules the episodes were played under (from the folder's ``simulate.json``; None if unknown)."""

    @property
    def size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.actions.shape[1])

    def returns(self) -> np.ndarray:
        """(E,) the episodes' scores (sums of rewards)."""
        return self.rewards.sum(axis=1)

    def subset(self, mask: np.ndarray) -> Episodes:
        """The episodes where ``mask`` (E,) is true."""
        return Episodes(*(a[mask] for a in self[:-1]), rules=self.rules)


def _read(source: str | Path | pl.DataFrame) -> tuple[pl.DataFrame, str]:
    if isinstance(source, pl.DataFrame):
        return source, "the trajectory table"
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"{path}: no part-*.parquet trajectory files (write them with `simulate`)"
            )
        return pl.read_parquet(files), str(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trajectory file or folder")
    return pl.read_parquet(path), str(path)


def load_trajectories(source: str | Path | pl.DataFrame) -> Episodes:
    """Read a trajectory folder (its ``part-*.parquet``), file or table into episodes, checking it first.

    Reads the native table (``simulators.rollout.TRAJECTORY_COLUMNS``) or AuctionNet's training layout
    (:mod:`bidding.auctionnet`). Raises ``ValueError`` naming the source and the problem: missing columns, NaN or
    infinite values (with the first bad row), negative actions, or an episode whose steps are not 0 … T − 1
    exactly once.
    """
    df, where = _read(source)
    rules = _recorded_rules(source)
    if is_training_layout(df):  # AuctionNet's training file: read as the native table
        df = from_training(df, where, beta=rules.beta if rules is not None else AuctionRules.beta)
    missing = [c for c in TRAJECTORY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing trajectory columns {missing} (expected {list(TRAJECTORY_COLUMNS)})"
        )
    if df.height == 0:
        raise ValueError(f"{where}: no trajectory rows")
    for c in _NUMERIC:
        col = df[c].cast(pl.Float64)
        bad = col.is_null() | ~col.is_finite()
        if bad.any():
            row = df.filter(bad).row(0, named=True)
            raise ValueError(
                f"{where}: column {c!r} has {int(bad.sum())} NaN/missing/infinite values, first at period "
                f"{row['period']}, advertiser {row['advertiser']}, step {row['step']}"
            )
    if (df["action"] < 0).any():
        row = df.filter(pl.col("action") < 0).row(0, named=True)
        raise ValueError(
            f"{where}: negative action {row['action']} at period {row['period']}, advertiser {row['advertiser']}, "
            f"step {row['step']}"
        )
    df = df.sort("period", "advertiser", "step")
    counts = df.group_by("period", "advertiser").agg(
        pl.len().alias("n"),
        pl.col("step").min().alias("lo"),
        pl.col("step").max().alias("hi"),
        pl.col("step").n_unique().alias("u"),
    )
    T = int(df["step"].max()) + 1
    broken = counts.filter(
        (pl.col("n") != T) | (pl.col("lo") != 0) | (pl.col("hi") != T - 1) | (pl.col("u") != T)
    )
    if broken.height:
        r = broken.sort("period", "advertiser").row(0, named=True)
        raise ValueError(
            f"{where}: {broken.height} episodes do not have steps 0..{T - 1} exactly once, e.g. period {r['period']}, "
            f"advertiser {r['advertiser']} ({r['n']} rows, steps {r['lo']}..{r['hi']})"
        )
    E = counts.height

    def grid(c: str, dtype=np.float32) -> np.ndarray:
        return df[c].to_numpy().astype(dtype).reshape(E, T)

    states = df.select(STATE_FEATURES).to_numpy().astype(np.float32).reshape(E, T, len(STATE_FEATURES))
    first = df.filter(pl.col("step") == 0)
    return Episodes(
        states=states,
        actions=grid("action"),
        rewards=grid("reward"),
        cost=grid("cost"),
        conversions=grid("conversions"),
        budget=first["budget"].to_numpy().astype(np.float32),
        target=first["target"].to_numpy().astype(np.float32),
        bid_scale=first["bid_scale"].to_numpy().astype(np.float32),
        kind=first["kind"].to_numpy().astype(str),
        policy=first["policy"].to_numpy().astype(str),
        period=first["period"].to_numpy().astype(np.int64),
        advertiser=first["advertiser"].to_numpy().astype(np.int64),
        rules=rules,
    )


def _recorded_rules(source: str | Path | pl.DataFrame) -> AuctionRules | None:
    """The auction rules written by ``simulate`` next to a trajectory folder's parts, or None if there are none."""
    if isinstance(source, pl.DataFrame) or not Path(source).is_dir():
        return None
    meta = Path(source) / "simulate.json"
    if not meta.exists():
        return None
    try:
        rules = json.loads(meta.read_text())["market"]["rules"]
        return AuctionRules(**{k: tuple(v) if isinstance(v, list) else v for k, v in rules.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{meta}: cannot read the auction rules (market.rules): {e}") from e


def score_rewards(
    cost: np.ndarray, conversions: np.ndarray, bid_scale: np.ndarray, beta: float = 2.0
) -> np.ndarray:
    """(E, T) step rewards = change of the running score ``conv × min(1, (bid_scale / cpa)^β)``, from per-step
    ``cost`` and ``conversions`` (E, T) and each episode's ``bid_scale`` (E,)."""
    cum_cost = np.cumsum(cost, axis=1, dtype=np.float64)
    cum_conv = np.cumsum(conversions, axis=1, dtype=np.float64)
    score = conversion_score(cum_conv, cum_cost, np.asarray(bid_scale, dtype=np.float64)[:, None], beta)
    return np.diff(score, axis=1, prepend=0.0)


def return_to_go(rewards: np.ndarray) -> np.ndarray:
    """(E, T) ``rtg[:, t] = Σ_{u ≥ t} rewards[:, u]``: what is still to be earned from step t on."""
    r = np.asarray(rewards, dtype=np.float64)
    return np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1)


MONEY_FEATURES: tuple[int, ...] = tuple(
    STATE_FEATURES.index(f) for f in ("hist_bid_mean", "last3_bid_mean", "hist_lwc_mean", "last3_lwc_mean")
)
"""State features in money units: divided by the advertiser's bid scale, so that 1 means 'the target cost'."""
CONVERSION_FEATURES: tuple[int, ...] = tuple(
    STATE_FEATURES.index(f) for f in ("hist_conversions_mean", "last3_conversions_mean")
)
"""State features counting conversions per step: divided by the conversions the budget buys at target per step."""


def featurize(states: np.ndarray, budget: np.ndarray, bid_scale: np.ndarray, n_steps: int) -> np.ndarray:
    """Make states comparable across advertisers: money features / bid scale, conversions per step / (budget /
    bid scale / T). ``states`` is (..., 16); ``budget`` and ``bid_scale`` broadcast against its leading dims."""
    x = np.array(states, dtype=np.float32, copy=True)
    scale = np.asarray(bid_scale, dtype=np.float32)[..., None]
    per_step = (np.asarray(budget, dtype=np.float32) / np.asarray(bid_scale, dtype=np.float32) / n_steps)[
        ..., None
    ]
    x[..., list(MONEY_FEATURES)] /= np.maximum(scale, 1e-9)
    x[..., list(CONVERSION_FEATURES)] /= np.maximum(per_step, 1e-9)
    return x


def featurize_state(state: np.ndarray, advertiser: Advertiser, n_steps: int) -> np.ndarray:
    """:func:`featurize` for one (16,) state of ``advertiser`` (what a bidder does at every ``act``)."""
    budget, scale = np.array([advertiser.budget]), np.array([advertiser.bid_scale])
    return featurize(np.asarray(state)[None], budget, scale, n_steps)[0]


def standardised_states(ep: Episodes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The episodes' featurized states standardised per feature: ((E, T, 16) float32, mean, std)."""
    x = featurize(ep.states, ep.budget[:, None], ep.bid_scale[:, None], ep.n_steps)
    flat = x.reshape(-1, x.shape[-1])
    mean, std = flat.mean(0), np.maximum(flat.std(0), 1e-6)
    return ((x - mean) / std).astype(np.float32), mean, std


def normalised_returns(rewards: np.ndarray, budget: np.ndarray, bid_scale: np.ndarray) -> np.ndarray:
    """Rewards in units of 'conversions the budget buys at the target cost' (budget / bid scale): a period that
    spends its budget exactly at the target CPA scores 1, whatever the advertiser's size."""
    return (
        np.asarray(rewards, dtype=np.float64) * (np.asarray(bid_scale) / np.maximum(budget, 1e-9))[..., None]
    )
