"""The maths of one step of ad auctions, as pure numpy functions (property-tested in ``tests/simulators``).

Every impression opportunity is one generalized-second-price auction among all advertisers' bids for K slots:

* an advertiser takes part when its bid is positive and at least the reserve price;
* slot k goes to the k-th highest participating bid (ties: the lower advertiser index first);
* slot k is shown (exposed) with probability ``exposure[k]``; only an exposed winner pays, and it pays the next
  bid below its own (the (k+1)-th highest), or the reserve price when that is higher or there is no next bid;
* when the exposed wins of one step would cost an advertiser more than its remaining budget, its won impressions
  are dropped, in random order, until the rest fits (a dropped slot stays empty: nobody else is moved up).

Shapes: n impressions, N advertisers, K slots.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "AuctionResult",
    "conversion_score",
    "enforce_budgets",
    "gsp_auction",
    "gsp_auction_columns",
    "sample_conversions",
    "spend_by_advertiser",
]


class AuctionResult(NamedTuple):
    """Outcome of n auctions with K slots."""

    winners: np.ndarray
    """(n, K) int32 advertiser holding each slot, best slot first; -1 = no participant for that slot."""
    prices: np.ndarray
    """(n, K) float32 price of each slot (the next bid, or the reserve); 0 where the slot is empty."""
    exposed: np.ndarray
    """(n, K) bool: the slot was shown, so its winner pays and can convert. Always False for empty slots."""
    least_winning_cost: np.ndarray
    """(n,) float32 the lowest bid that would have won a slot: the K-th highest bid, or the reserve when fewer than
    K advertisers took part."""


def gsp_auction(
    bids: np.ndarray,
    n_slots: int,
    exposure: np.ndarray,
    reserve: float,
    rng: np.random.Generator,
) -> AuctionResult:
    """Run ``n`` generalized-second-price auctions for ``n_slots`` slots at once.

    ``bids`` is an (n, N) array (one row per impression) of finite bids; a bid <= 0 or below the reserve does not
    take part. ``exposure`` gives each slot's probability of being shown.
    """
    bids = np.asarray(bids)
    if bids.ndim != 2:
        raise ValueError(f"bids must be (impressions, advertisers), got shape {bids.shape}")
    if not np.all(np.isfinite(bids)):
        i, a = np.argwhere(~np.isfinite(bids))[0]
        raise ValueError(f"bids must be finite: impression {i}, advertiser {a} bids {bids[i, a]}")
    return gsp_auction_columns(
        np.ascontiguousarray(bids.T, dtype=np.float32), n_slots, exposure, reserve, rng
    )


def gsp_auction_columns(
    bids_t: np.ndarray,
    n_slots: int,
    exposure: np.ndarray,
    reserve: float,
    rng: np.random.Generator,
) -> AuctionResult:
    """:func:`gsp_auction` on bids laid out by advertiser: ``bids_t`` is (N, n) float32, finite.

    This is the layout the simulator keeps: ranking N bids per impression is then a reduction over rows, which
    numpy vectorises across impressions (several times faster than ``argmax`` over short rows).
    """
    if bids_t.ndim != 2:
        raise ValueError(f"bids_t must be (advertisers, impressions), got shape {bids_t.shape}")
    n_adv, n = bids_t.shape
    if not 1 <= n_slots <= n_adv:
        raise ValueError(f"n_slots must be in [1, {n_adv}] (the number of advertisers), got {n_slots}")
    exposure = np.asarray(exposure, dtype=np.float32)
    if exposure.shape != (n_slots,):
        raise ValueError(f"exposure needs one probability per slot ({n_slots}), got shape {exposure.shape}")
    bids_t = np.ascontiguousarray(bids_t, dtype=np.float32)
    # Exact ranking keys: the float32 bit pattern orders non-negative floats like their values (negative ones sort
    # below them), shifted left to make room for (max index - advertiser) in the low bits, so the larger key is the
    # larger bid and, among equal bids, the lower advertiser index. A max over rows then gives bid and index at once.
    bits = max(1, (n_adv - 1).bit_length())
    low = (1 << bits) - 1
    keys = bids_t.view(np.int32).astype(np.int64)
    keys <<= bits
    keys |= (low - np.arange(n_adv, dtype=np.int64))[:, None]
    flat_keys, flat_bids = keys.reshape(-1), bids_t.reshape(-1)
    cols = np.arange(n)
    gone = np.iinfo(np.int64).min
    top_idx = np.full((n, n_slots + 1), -1, dtype=np.int32)
    top_bid = np.full((n, n_slots + 1), -np.inf, dtype=np.float32)
    for k in range(min(n_slots + 1, n_adv)):  # K == N: there is no (K+1)-th bidder
        best = keys.max(axis=0)
        who = (low - (best & low)).astype(np.int32)
        pos = who.astype(np.int64) * n + cols
        top_idx[:, k] = who
        top_bid[:, k] = flat_bids[pos]
        flat_keys[pos] = gone  # never picked again
    # Non-participants (bid <= 0 or below the reserve) rank below every participant, so checking the ranked bids
    # is enough to tell them apart.
    present = (top_bid > 0) & (top_bid >= reserve)  # (n, K+1) a real participant holds this rank
    winners = np.where(present[:, :n_slots], top_idx[:, :n_slots], -1).astype(np.int32)
    next_bid = np.where(present[:, 1:], top_bid[:, 1:], 0.0)
    prices = np.where(present[:, :n_slots], np.maximum(next_bid, reserve), 0.0).astype(np.float32)
    shown = rng.random((n, n_slots), dtype=np.float32) < exposure[None, :]
    exposed = shown & present[:, :n_slots]
    kth = top_bid[:, n_slots - 1]
    lwc = np.where(present[:, n_slots - 1], kth, reserve).astype(np.float32)
    return AuctionResult(winners, prices, exposed, lwc)


def spend_by_advertiser(result: AuctionResult, n_advertisers: int) -> np.ndarray:
    """(N,) float64 total cost of every advertiser's exposed wins."""
    w = result.winners[result.exposed]
    return np.bincount(w, weights=result.prices[result.exposed], minlength=n_advertisers)


def enforce_budgets(
    result: AuctionResult, remaining: np.ndarray, rng: np.random.Generator
) -> tuple[AuctionResult, np.ndarray, np.ndarray]:
    """Drop won impressions of every advertiser whose step cost exceeds ``remaining`` (its budget left).

    For each over-spending advertiser, its exposed wins are put in random order and the longest prefix whose cost
    fits in the remaining budget is kept; the rest become empty, unexposed slots. Returns the trimmed result and
    the (N,) cost per advertiser after trimming (never above ``remaining``) and the (N,) bool mask of advertisers
    that had wins dropped.
    """
    remaining = np.asarray(remaining, dtype=np.float64)
    n_adv = remaining.shape[0]
    cost = spend_by_advertiser(result, n_adv)
    trimmed = cost > remaining
    over = np.flatnonzero(trimmed)
    if over.size == 0:
        return result, cost, trimmed
    winners, prices, exposed = result.winners.copy(), result.prices.copy(), result.exposed.copy()
    flat_w, flat_p, flat_e = winners.reshape(-1), prices.reshape(-1), exposed.reshape(-1)
    for a in over:
        pos = np.flatnonzero(flat_e & (flat_w == a))
        pos = pos[rng.permutation(pos.size)]
        keep = np.cumsum(flat_p[pos].astype(np.float64)) <= remaining[a]
        # keep the prefix only: the first win that does not fit ends the step for this advertiser
        n_keep = int(np.argmin(keep)) if not keep.all() else pos.size
        drop = pos[n_keep:]
        flat_w[drop] = -1
        flat_p[drop] = 0.0
        flat_e[drop] = False
        cost[a] = float(flat_p[pos[:n_keep]].astype(np.float64).sum())
    return AuctionResult(winners, prices, exposed, result.least_winning_cost), cost, trimmed


def sample_conversions(
    result: AuctionResult,
    p_value: np.ndarray,
    p_sigma: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample conversions for exposed winners only.

    The true conversion probability of an (impression, advertiser) pair is drawn around its prediction,
    ``clip(p_value + p_sigma · z, 0, 1)`` with z ~ N(0, 1); the conversion is then a coin flip with that probability.
    ``p_value`` and ``p_sigma`` are (n, N). Returns (imp, adv) int arrays of the exposed wins and a bool array
    saying which converted, in the same order.
    """
    imp, slot = np.nonzero(result.exposed)
    adv = result.winners[imp, slot]
    p = p_value[imp, adv]
    s = p_sigma[imp, adv] if np.ndim(p_sigma) == 2 else np.asarray(p_sigma)[adv] * p
    p_true = np.clip(p + s * rng.standard_normal(p.shape[0], dtype=np.float32), 0.0, 1.0)
    converted = rng.random(p.shape[0], dtype=np.float32) < p_true
    return np.stack([imp, adv]), converted


def conversion_score(
    conversions: np.ndarray | float,
    cost: np.ndarray | float,
    target: np.ndarray | float,
    beta: float = 2.0,
    kind: str = "cpa",
) -> np.ndarray:
    """The period score of auto-bidding: conversions, discounted when the target is missed.

    ``kind="cpa"``: ``conversions × min(1, (target_cpa / cpa)^β)`` with cpa = cost / conversions.
    ``kind="roi"``: ``conversions × min(1, (roi / target_roi)^β)`` with roi = conversions × value / cost, where
    ``target`` must already be expressed per conversion, i.e. ``value_per_conversion / target_roi`` (the highest
    cost per conversion that meets the ROI target): both kinds then reduce to the same formula.
    No cost means no penalty; no conversions score 0.
    """
    if kind not in ("cpa", "roi"):
        raise ValueError(f"kind must be 'cpa' or 'roi', got {kind!r}")
    conv = np.asarray(conversions, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cost > 0, target * conv / np.where(cost > 0, cost, 1.0), 1.0)
    penalty = np.minimum(1.0, ratio**beta)
    return conv * penalty
