"""The maths of one step of ad auctions, as pure numpy functions (property-tested in ``tests/simulators``).

Every impression opportunity is one generalized-second-price auction among all advertisers' bids for K slots:

* an advertiser takes part when its bid is positive and at least the reserve price;
* slot k goes to the k-th highest participating bid (ties: the lower advertiser index first);
* slot k is shown (exposed) with probability ``exposure[k]``; only an exposed winner pays, and it pays the next
  bid below its own (the (k+1)-th highest), or the reserve price when that is higher or there is no next bid;
* when the exposed wins of one step would cost an advertiser more than its remaining budget, its won impressions
  are dropped, in random order, until the rest fits (a dropped slot stays empty: nobody else is moved up).

The rules a market runs by (slots, exposure, reserve, the score's β, the highest bid coefficient) are one frozen
:class:`AuctionRules`: the market, every bidder (told them at reset) and the evaluator score with the same object.

Randomness that decides *outcomes* (exposure, conversions, which wins a budget drops) can come from a plain
generator or from :class:`PairNoise`, counter-based draws keyed by (step, impression, advertiser): with the latter an
outcome does not depend on how many other draws were made before it, so two bidders playing one period see the same
coin for the same won impression (common random numbers).

Shapes: n impressions, N advertisers, K slots.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "AuctionResult",
    "AuctionRules",
    "PairNoise",
    "conversion_score",
    "enforce_budgets",
    "gsp_auction",
    "gsp_auction_columns",
    "sample_conversions",
    "spend_by_advertiser",
]


@dataclass(frozen=True)
class AuctionRules:
    """The rules of a market, in one place: how an auction is run and how a period is scored."""

    n_slots: int = 3
    """Ad slots per impression (K)."""
    exposure: tuple[float, ...] = (1.0, 0.8, 0.6)
    """Probability that each slot is shown, best slot first (one per slot)."""
    reserve_price: float = 0.3
    """Lowest bid that takes part; a winner pays at least this. About a quarter of the typical clearing price of a
    shown slot: without it, once the day's budgets run out, auctions with fewer than K + 1 bidders cost nothing and a
    bidder that waits for them buys conversions for free (the market flaw found by the first bench-bidding run)."""
    beta: float = 2.0
    """Exponent of the score penalty for a missed target: conversions × min(1, (target / cpa)^β)."""
    alpha_max: float = 5.0
    """Highest bid coefficient: every α is clipped to [0, alpha_max] before it bids."""

    def __post_init__(self) -> None:
        errors = []
        if self.n_slots < 1:
            errors.append(f"n_slots must be positive, got {self.n_slots}")
        if len(self.exposure) != self.n_slots:
            errors.append(
                f"exposure needs one probability per slot ({self.n_slots}), got {len(self.exposure)}"
            )
        if not all(0 <= e <= 1 for e in self.exposure):
            errors.append(f"exposure probabilities must be in [0, 1], got {self.exposure}")
        if not (math.isfinite(self.reserve_price) and self.reserve_price >= 0):
            errors.append(f"reserve_price must be a finite number >= 0, got {self.reserve_price}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            errors.append(f"beta must be a positive number, got {self.beta}")
        if not (math.isfinite(self.alpha_max) and self.alpha_max > 0):
            errors.append(f"alpha_max must be a positive number, got {self.alpha_max}")
        if errors:
            raise ValueError("bad auction rules: " + "; ".join(errors))

    def score(self, conversions, cost, target) -> np.ndarray:
        """:func:`conversion_score` with these rules' β."""
        return conversion_score(conversions, cost, target, self.beta)

    def clip(self, alpha: float) -> float:
        """``alpha`` clipped to [0, alpha_max]."""
        return min(max(float(alpha), 0.0), self.alpha_max)


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a bijection that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class PairNoise:
    """Counter-based random draws keyed by (stream, step, impression, advertiser).

    Every draw is a pure function of its key and the seed: the same key gives the same number whatever else was
    drawn, in whatever order. That is what common random numbers need: when two bidders play one period, the same
    advertiser winning the same impression converts (or not) on the same coin. A draw is splitmix64's output for the
    counter ``(impression << 24) | advertiser`` under a key made of the seed, the stream and the step.
    """

    def __init__(self, seed: int) -> None:
        self.key = _mix(np.array([int(seed) % 2**64], dtype=np.uint64) + _GOLDEN)[0]

    def bits(self, stream: int, step: int, imp: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """uint64 random bits, one per (imp, adv) pair (same shapes; imp < 2^40, adv < 2^24)."""
        with np.errstate(over="ignore"):
            head = _mix(
                np.array([self.key ^ (np.uint64(stream) * _GOLDEN)], dtype=np.uint64) + np.uint64(step)
            )
            counter = (np.asarray(imp, dtype=np.uint64) << np.uint64(24)) | np.asarray(adv, dtype=np.uint64)
            return _mix(head[0] + counter * _GOLDEN)

    def uniform(self, stream: int, step: int, imp: np.ndarray, adv: np.ndarray) -> np.ndarray:
        """float64 in [0, 1), one per (imp, adv) pair."""
        return (self.bits(stream, step, imp, adv) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def uniform_and_normal(
        self, stream: int, step: int, imp: np.ndarray, adv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 uniform in [0, 1) and standard normal draws, one of each per pair, from one 64-bit draw: the
        top 24 bits give the uniform (exact in float32), the low 16 bits pick one of 65,536 normal quantiles (tails cut at 4.3σ)."""
        x = self.bits(stream, step, imp, adv)
        u = (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
        z = _normal_quantiles()[(x & np.uint64(0xFFFF)).astype(np.intp)]
        return u, z


@functools.lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """(65536,) float32 standard normal quantiles at probabilities (k + 0.5) / 65536."""
    from statistics import NormalDist

    nd = NormalDist()
    return np.array([nd.inv_cdf((k + 0.5) / 65536) for k in range(65536)], dtype=np.float32)


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
    rng: np.random.Generator | np.ndarray,
) -> AuctionResult:
    """:func:`gsp_auction` on bids laid out by advertiser: ``bids_t`` is (N, n) float32, finite.

    This is the layout the simulator keeps: ranking N bids per impression is then a reduction over rows, which
    numpy vectorises across impressions (several times faster than ``argmax`` over short rows). ``rng`` is a
    generator, or the (n, K) uniform draws themselves (slot k of impression i is shown when its draw is below
    ``exposure[k]``): a market draws them with the traffic, so they do not depend on the bids.
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
    draws = rng.random((n, n_slots), dtype=np.float32) if isinstance(rng, np.random.Generator) else rng
    if draws.shape != (n, n_slots):
        raise ValueError(f"need ({n}, {n_slots}) exposure draws, got shape {draws.shape}")
    shown = draws < exposure[None, :]
    exposed = shown & present[:, :n_slots]
    kth = top_bid[:, n_slots - 1]
    lwc = np.where(present[:, n_slots - 1], kth, reserve).astype(np.float32)
    return AuctionResult(winners, prices, exposed, lwc)


_TRIM, _CONVERT = 1, 2
"""PairNoise streams: the order in which a budget drops wins, and conversions."""


def spend_by_advertiser(result: AuctionResult, n_advertisers: int) -> np.ndarray:
    """(N,) float64 total cost of every advertiser's exposed wins."""
    w = result.winners[result.exposed]
    return np.bincount(w, weights=result.prices[result.exposed], minlength=n_advertisers)


def enforce_budgets(
    result: AuctionResult,
    remaining: np.ndarray,
    rng: np.random.Generator | PairNoise,
    step: int = 0,
) -> tuple[AuctionResult, np.ndarray, np.ndarray]:
    """Drop won impressions of every advertiser whose step cost exceeds ``remaining`` (its budget left).

    For each over-spending advertiser, its exposed wins are put in random order (a permutation from ``rng``, or with
    :class:`PairNoise` the order of their keys' uniform draws at ``step``, so the order of two wins never depends on
    anyone's bids) and the longest prefix whose cost fits in the remaining budget is kept; the rest become empty,
    unexposed slots. Returns the trimmed result and
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
        if isinstance(rng, PairNoise):
            imp = pos // result.winners.shape[1]
            pos = pos[np.argsort(rng.uniform(_TRIM, step, imp, np.full(pos.size, a)), kind="stable")]
        else:
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
    rng: np.random.Generator | PairNoise,
    step: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample conversions for exposed winners only.

    The true conversion probability of an (impression, advertiser) pair is drawn around its prediction,
    ``clip(p_value + p_sigma · z, 0, 1)`` with z ~ N(0, 1); the conversion is then a coin flip with that probability.
    With :class:`PairNoise`, z and the coin are keyed by (``step``, impression, advertiser): the pair converts or
    not whatever else happened in the market.
    ``p_value`` and ``p_sigma`` are (n, N). Returns (imp, adv) int arrays of the exposed wins and a bool array
    saying which converted, in the same order.
    """
    imp, slot = np.nonzero(result.exposed)
    adv = result.winners[imp, slot]
    p = p_value[imp, adv]
    s = p_sigma[imp, adv] if np.ndim(p_sigma) == 2 else np.asarray(p_sigma)[adv] * p
    if isinstance(rng, PairNoise):
        u, z = rng.uniform_and_normal(_CONVERT, step, imp, adv)
    else:
        z = rng.standard_normal(p.shape[0], dtype=np.float32)
        u = rng.random(p.shape[0], dtype=np.float32)
    p_true = np.clip(p + s * z, 0.0, 1.0)
    converted = u < p_true
    return np.stack([imp, adv]), converted


def conversion_score(
    conversions: np.ndarray | float,
    cost: np.ndarray | float,
    target: np.ndarray | float,
    beta: float = 2.0,
) -> np.ndarray:
    """The period score of auto-bidding: conversions, discounted when the target is missed:
    ``conversions × min(1, (target / cpa)^β)`` with cpa = cost / conversions.

    An ROI target is the same formula with ``target`` the highest cost per conversion that meets it
    (``value_per_conversion / target_roi``): ``(roi / target_roi)^β`` with roi = conversions × value / cost.
    No cost means no penalty; no conversions score 0.
    """
    conv = np.asarray(conversions, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cost > 0, target * conv / np.where(cost > 0, cost, 1.0), 1.0)
    penalty = np.minimum(1.0, ratio**beta)
    return conv * penalty
