"""Plan values replayed from the impression log: what bidding a constant α from a logged state on would still earn.

The value-guided DT's plan value V(s, λ) is the score still to be earned from state s when bidding the constant
α = λ from there on. Fitted on logged episodes of constant-bid advertisers (``plan_source="constant"``), it only
knows the constants those advertisers happened to bid, which a platform's logs need not hold near the one that pays.
A platform does log every impression of its auctions (AuctionNet publishes them: pValue, least winning cost), and
on them any constant can be replayed after the fact. :func:`replay_values` does that for every logged day, every
advertiser and every step t of :func:`bidding.history_lp.log_days` and every λ of a grid:

* from step t on, the advertiser wins each sampled impression j of step k whose bid at λ beats its least winning
  cost, ``λ · bid_scale · v_j > c_j`` (v_j its predicted conversions, times the order value or new-user flag where
  the advertiser has one), pays ``c_j`` and gains ``v_j``, each sample standing for ``weight[k]`` impressions;
* in time order, until the budget left at t (the logged state's) runs out; the step where it runs out is bought in
  part, in proportion;
* the target is the change of the period score ``rules.score`` from what the logging bidder had earned and spent
  before t to that plus the replayed conversions and cost, in units of budget / bid scale (as the DT's returns).

Like AuctionNet's OnlineLP it ignores that other advertisers would react and that a slot's exposure is drawn: one
slot, the lowest winning price. The replayed targets sample V(s_t, λ) at every λ, with nothing about later bids
confounded, so the plan value learns the whole range of constants from ordinary logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bidding.history_lp import LoggedDays
from simulators.auction import AuctionRules

__all__ = ["REPLAY_LOW", "Replayed", "replay_grid", "replay_values"]

REPLAY_LOW = 0.02
"""Lowest constant α the replayed plan value compares (the highest is the market's ``alpha_max``)."""


def replay_grid(alpha_max: float, points: int) -> np.ndarray:
    """``points`` constant α values log-spaced from :data:`REPLAY_LOW` to ``alpha_max``."""
    if points < 2:
        raise ValueError(f"a replay grid needs at least 2 points, got {points}")
    if not alpha_max > REPLAY_LOW:
        raise ValueError(f"alpha_max must exceed {REPLAY_LOW}, got {alpha_max}")
    return np.geomspace(REPLAY_LOW, alpha_max, points)


@dataclass(frozen=True)
class Replayed:
    """Replayed plan values of R logged states: ``states`` (R, 16) raw states, ``budget`` and ``bid_scale`` (R,) their
    advertisers', ``grid`` (G,) the constant α replayed, ``value`` (R, G) the normalised score still to be earned
    bidding ``grid[g]`` from that state on; ``cost`` and ``conversions`` (R, G) what that bidding still spends and
    still converts, both in budgets (cost / budget, counted conversions × bid scale / budget), so that the period's
    cost per conversion, and so whether it meets the target, follows from them and the logged state's."""

    states: np.ndarray
    budget: np.ndarray
    bid_scale: np.ndarray
    grid: np.ndarray
    value: np.ndarray
    cost: np.ndarray
    conversions: np.ndarray


def step_outcomes(
    value: np.ndarray, cost: np.ndarray, weight: np.ndarray, bid_scale: float, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per step and λ the cost and conversions won by bidding λ: ``value`` (T, M) and ``cost`` (T, M) of the sampled
    impressions, ``weight`` (T,) impressions per sample. Returns (cost, conversions), each (T, G)."""
    v = np.asarray(value, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    win = v[:, :, None] * (np.asarray(grid, dtype=np.float64) * bid_scale)[None, None, :] > c[:, :, None]
    w = np.asarray(weight, dtype=np.float64)[:, None]
    return w * np.einsum("tmg,tm->tg", win, c), w * np.einsum("tmg,tm->tg", win, v)


def slot_outcomes(
    value: np.ndarray,
    top_bids: np.ndarray,
    top_who: np.ndarray,
    me: int,
    weight: np.ndarray,
    bid_scale: float,
    grid: np.ndarray,
    rules: AuctionRules,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`step_outcomes` with every slot priced: ``value`` (T, M) of advertiser ``me``'s sampled impressions,
    ``top_bids`` / ``top_who`` (T, M, K+1) their highest bids and bidders. Without its own logged bid, the
    advertiser's bid ``b = λ · bid_scale · v`` takes slot k when k competitors bid more (k < K, ``b`` at least the
    reserve), pays the next competitor's bid below it (or the reserve, if higher) and converts only when the slot
    is shown: expected cost ``exposure[k] · price``, expected conversions ``exposure[k] · v``. Returns (cost,
    conversions), each (T, G)."""
    K = rules.n_slots
    others = np.where(np.asarray(top_who) == me, 0.0, np.asarray(top_bids, dtype=np.float64))
    others = -np.sort(-others, axis=-1)[..., :K]  # (T, M, K) competitors' highest bids, highest first
    if others.shape[-1] < K:
        others = np.pad(others, [(0, 0), (0, 0), (0, K - others.shape[-1])])
    v = np.asarray(value, dtype=np.float64)
    b = v[:, :, None] * (np.asarray(grid, dtype=np.float64) * bid_scale)[None, None, :]  # (T, M, G)
    k = (others[:, :, None, :] > b[..., None]).sum(-1)  # (T, M, G) slot taken (K = none)
    won = (k < K) & (b >= rules.reserve_price) & (b > 0)
    below = np.take_along_axis(others, np.minimum(k, K - 1), axis=2)  # (T, M, G) the next competitor bid
    price = np.maximum(below, rules.reserve_price)
    expo = np.asarray(rules.exposure, dtype=np.float64)[np.minimum(k, K - 1)] * won
    w = np.asarray(weight, dtype=np.float64)[:, None]
    return w * (expo * price).sum(1), w * (expo * v[:, :, None]).sum(1)


def spend_in_order(
    step_cost: np.ndarray, step_value: np.ndarray, budget: float
) -> tuple[np.ndarray, np.ndarray]:
    """Buy the steps (S, G) in order until ``budget`` runs out, the last one in part: (cost, conversions) per λ (G,)."""
    before = np.cumsum(step_cost, axis=0) - step_cost  # spent before each step
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.where(
            step_cost > 0, np.clip((budget - before) / step_cost, 0.0, 1.0), (before <= budget).astype(float)
        )
    return (part * step_cost).sum(0), (part * step_value).sum(0)


def replay_values(days: LoggedDays, grid: np.ndarray, rules: AuctionRules) -> Replayed:
    """The replayed plan value of every (day, advertiser, step) of ``days`` at every λ of ``grid`` (module doc)."""
    D, N, T, _ = days.value.shape
    G = len(grid)
    out = np.zeros((D, N, T, G))
    spend = np.zeros((D, N, T, G))
    gain = np.zeros((D, N, T, G))
    for d in range(D):
        for i in range(N):
            b0, bs = float(days.budget[d, i]), float(days.bid_scale[d, i])
            if days.top_bids is None:
                sc, sv = step_outcomes(days.value[d, i], days.cost[d], days.weight[d], bs, grid)
            else:
                sc, sv = slot_outcomes(
                    days.value[d, i], days.top_bids[d], days.top_who[d], i, days.weight[d], bs, grid, rules
                )
            conv = np.concatenate([[0.0], np.cumsum(days.conversions[d, :, i], dtype=np.float64)])
            for t in range(T):
                left = max(float(days.states[d, t, i, 1]) * b0, 0.0)
                spent = b0 - left
                c, v = spend_in_order(sc[t:], sv[t:], left)
                now = float(rules.score(conv[t], spent, bs))
                out[d, i, t] = (rules.score(conv[t] + v, spent + c, bs) - now) * bs / max(b0, 1e-9)
                spend[d, i, t] = c / max(b0, 1e-9)
                gain[d, i, t] = v * bs / max(b0, 1e-9)
    return Replayed(
        states=days.states.transpose(0, 2, 1, 3).reshape(D * N * T, -1),
        budget=np.repeat(days.budget.reshape(-1), T),
        bid_scale=np.repeat(days.bid_scale.reshape(-1), T),
        grid=np.asarray(grid, dtype=np.float64),
        value=out.reshape(D * N * T, G).astype(np.float32),
        cost=spend.reshape(D * N * T, G).astype(np.float32),
        conversions=gain.reshape(D * N * T, G).astype(np.float32),
    )
