"""One delivery period of an ad market: advertisers, traffic, predicted conversion probabilities, and the auctions.

:class:`Market` is the engine under the gymnasium env and the offline data generator. It knows nothing about who
chooses the bid coefficients: every step it takes one α per advertiser, bids ``α × predicted value`` on each pending
impression, runs the auctions (:mod:`simulators.auction`), charges and converts, and draws the next step's traffic.

Money is in arbitrary currency units. An advertiser's *predicted value* of an impression is its predicted conversion
probability times its *bid scale*: the CPA target for CPA advertisers, value per conversion / ROI target for ROI
advertisers (the most it may pay per conversion and still meet its target). So α = 1 bids the target-neutral price,
for every advertiser alike.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from simulators.auction import (
    AuctionRules,
    PairNoise,
    enforce_budgets,
    gsp_auction_columns,
    sample_conversions,
)

STATE_FEATURES: tuple[str, ...] = (
    "time_left",
    "budget_left",
    "hist_bid_mean",
    "last3_bid_mean",
    "hist_lwc_mean",
    "hist_pvalue_mean",
    "hist_conversions_mean",
    "hist_win_rate",
    "last3_lwc_mean",
    "last3_pvalue_mean",
    "last3_conversions_mean",
    "last3_win_rate",
    "cur_pvalue_mean",
    "cur_impressions_k",
    "last3_impressions_k",
    "hist_impressions_k",
)
"""The 16 features of the auto-bidding state, in order (see :class:`simulators.env.AuctionEnv`)."""


@dataclass(frozen=True)
class MarketConfig:
    """Shape and distributions of one delivery period."""

    impressions: int = 500_000
    """Impression opportunities per period (spread over the steps by the traffic curve)."""
    n_steps: int = 48
    """Decision steps per period (T)."""
    n_advertisers: int = 48
    """Advertisers bidding on every impression (N)."""
    n_categories: int = 8
    """Product categories; advertiser i is in category i mod n_categories."""
    traffic_amplitude: float = 0.5
    """Day curve of traffic: impressions at step t ∝ 1 − amplitude·cos(2πt/T) (0 = flat)."""
    p_mean: float = 0.01
    """Typical predicted conversion probability."""
    category_spread: float = 0.4
    """Log-normal σ of the category level of conversion probability."""
    advertiser_spread: float = 0.3
    """Log-normal σ of each advertiser's level around its category."""
    interest_spread: float = 0.8
    """Log-normal σ of an impression's interest in a category (shared by that category's advertisers)."""
    pair_noise: float = 0.5
    """Half-width of the uniform factor 1 ± pair_noise that makes each (impression, advertiser) pair its own."""
    sigma_range: tuple[float, float] = (0.1, 0.5)
    """Uncertainty of the prediction, as a fraction of it (drawn per advertiser): the true probability is
    clip(p + σ·z)."""
    budget_range: tuple[float, float] = (4000.0, 12000.0)
    """Budgets per period, drawn uniformly. With the default heuristic competitors about half of them are still
    bidding in the last hours, and an advertiser that bids α = 0.2 all day leaves part of its budget unspent."""
    cpa_range: tuple[float, float] = (60.0, 130.0)
    """CPA targets (cost per acquisition), drawn uniformly."""
    roi_share: float = 0.25
    """Fraction of advertisers with an ROI target instead of a CPA target."""
    value_range: tuple[float, float] = (100.0, 300.0)
    """Value of one conversion for ROI advertisers."""
    roi_range: tuple[float, float] = (1.5, 3.0)
    """ROI targets (value / cost)."""
    value_spread: float = 0.0
    """Log-normal σ of an impression's order value (per impression and category, mean 1), for ROI advertisers:
    they bid α × p × m × bid_scale and count a conversion as m (its value in units of their mean order value), so
    their cost per counted conversion is value / ROI. 0 = every conversion is worth the same (ROI is then only a
    CPA target)."""
    new_customer_rate: float = 0.4
    """Probability that the user of an impression is new to a given acquisition advertiser (drawn per user and
    advertiser)."""
    acquisition_share: float = 0.0
    """Fraction of CPA advertisers that pay only for new customers: they bid only on users new to them and count
    only those conversions, so their CPA is a customer-acquisition cost (CAC)."""
    rules: AuctionRules = field(default_factory=AuctionRules)
    """How each auction is run and a period scored (slots, exposure, reserve price, the score's β, the highest α)."""

    def __post_init__(self) -> None:
        errors = []
        if self.impressions < self.n_steps:
            errors.append(f"impressions ({self.impressions}) must be at least n_steps ({self.n_steps})")
        if self.n_steps < 1:
            errors.append(f"n_steps must be positive, got {self.n_steps}")
        if self.n_advertisers < 2:
            errors.append(f"n_advertisers must be at least 2, got {self.n_advertisers}")
        if self.n_categories < 1:
            errors.append(f"n_categories must be positive, got {self.n_categories}")
        if not isinstance(self.rules, AuctionRules):
            errors.append(f"rules must be an AuctionRules, got {type(self.rules).__name__}")
        elif self.rules.n_slots > self.n_advertisers:
            errors.append(
                f"n_slots (K={self.rules.n_slots}) must be at most n_advertisers (N={self.n_advertisers})"
            )
        for name in ("category_spread", "advertiser_spread", "interest_spread", "value_spread"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                errors.append(f"{name} must be a finite number >= 0, got {v}")
        if not 0 <= self.traffic_amplitude < 1:
            errors.append(f"traffic_amplitude must be in [0, 1), got {self.traffic_amplitude}")
        if not 0 < self.p_mean <= 1:
            errors.append(f"p_mean must be in (0, 1], got {self.p_mean}")
        if not 0 <= self.pair_noise < 1:
            errors.append(f"pair_noise must be in [0, 1), got {self.pair_noise}")
        for name in ("new_customer_rate", "acquisition_share", "roi_share"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                errors.append(f"{name} must be in [0, 1], got {v}")
        for name, lo_min in (
            ("sigma_range", 0.0),
            ("budget_range", 1e-9),
            ("cpa_range", 1e-9),
            ("value_range", 1e-9),
            ("roi_range", 1e-9),
        ):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo_min <= lo <= hi):
                what = "non-negative" if lo_min == 0 else "positive"
                errors.append(f"{name} must be ({what} low, high >= low), got {(lo, hi)}")
        if errors:
            raise ValueError("bad market configuration: " + "; ".join(errors))


class Advertisers(NamedTuple):
    """The advertisers of one period, as (N,) arrays."""

    category: np.ndarray
    """int: product category."""
    budget: np.ndarray
    """float: budget of the period."""
    kind: np.ndarray
    """str 'cpa' or 'roi'."""
    target: np.ndarray
    """float: CPA target, or ROI target for ROI advertisers."""
    value: np.ndarray
    """float: value of one conversion (ROI advertisers; for CPA advertisers, their CPA target)."""
    bid_scale: np.ndarray
    """float: highest cost per conversion that meets the target (CPA target, or value / ROI target)."""
    acquisition: np.ndarray
    """bool: counts (and bids for) new customers only."""
    p_level: np.ndarray
    """float: the advertiser's level of conversion probability."""
    sigma: np.ndarray
    """float: prediction uncertainty as a fraction of the prediction."""

    def spec(self, i: int, rules: AuctionRules) -> Advertiser:
        """Advertiser ``i`` as a small record (what a bidder is told at reset), with the market's ``rules``."""
        return Advertiser(
            index=i,
            category=int(self.category[i]),
            budget=float(self.budget[i]),
            kind=str(self.kind[i]),
            target=float(self.target[i]),
            value=float(self.value[i]),
            bid_scale=float(self.bid_scale[i]),
            acquisition=bool(self.acquisition[i]),
            rules=rules,
        )


class Advertiser(NamedTuple):
    """What a bidder knows about the advertiser it bids for."""

    index: int
    category: int
    budget: float
    kind: str
    """'cpa' or 'roi'."""
    target: float
    """CPA target, or ROI target."""
    value: float
    """Value per conversion (the CPA target for CPA advertisers)."""
    bid_scale: float
    """Highest cost per conversion that meets the target: bid = α × p × bid_scale."""
    acquisition: bool
    rules: AuctionRules = AuctionRules()
    """The market's rules: the score every play is judged by (its β) and the highest bid coefficient."""


class StepOutcome(NamedTuple):
    """What one step did, per advertiser ((N,) arrays)."""

    step: int
    cost: np.ndarray
    conversions: np.ndarray
    exposures: np.ndarray
    wins: np.ndarray
    """Slots won before budget trimming (shown or not)."""
    bid_mean: np.ndarray
    pvalue_mean: np.ndarray
    lwc_mean: float
    impressions: int
    expected: np.ndarray | None = None
    """Expected conversions of the exposed wins: Σ p (× the order value or new-user flag where they count)."""


class StepDetail(NamedTuple):
    """Everything about the step just run, impression by impression (for impression-level logs)."""

    p: np.ndarray
    """(N, n) float32 predicted conversion probabilities."""
    bids: np.ndarray
    """(N, n) float32 bids."""
    result: object
    """The auction's :class:`~simulators.auction.AuctionResult` after budget trimming."""
    imp: np.ndarray
    """Impression of every exposed win."""
    who: np.ndarray
    """Advertiser of every exposed win."""
    converted: np.ndarray
    """Did each exposed win convert (counted)."""
    remaining: np.ndarray
    """(N,) budget left before the step."""
    active: np.ndarray
    """(N,) still bidding after the step."""
    factor: np.ndarray | None = None
    """(N, n) float32 per-impression bid factor of every advertiser (1 where none), or None when all are 1."""


class Feedback(NamedTuple):
    """Per-impression market data of the step just run, as a bidder may observe it."""

    outcome: StepOutcome
    p_value: np.ndarray
    """(n, N) predicted conversion probabilities of the step's impressions."""
    least_winning_cost: np.ndarray
    """(n,) the lowest bid that would have won a slot, per impression."""
    factor: np.ndarray | None = None
    """(n, N) float32 per-impression bid factor (order value m of ROI advertisers, new-user flag of acquisition
    advertisers), or None when every factor is 1: an impression is worth p × factor × bid_scale at α = 1."""


@functools.lru_cache(maxsize=8)
def _lognormal_quantiles(sigma: float, levels: int = 256) -> np.ndarray:
    """(levels,) float32 quantiles of a log-normal with mean 1 at probabilities (k + 0.5) / levels."""
    from statistics import NormalDist

    z = np.array([NormalDist().inv_cdf((k + 0.5) / levels) for k in range(levels)])
    q = np.exp(sigma * z)
    return (q / q.mean()).astype(np.float32)


def traffic_curve(cfg: MarketConfig) -> np.ndarray:
    """(T,) impressions per step, summing exactly to ``cfg.impressions`` (largest-remainder rounding)."""
    t = np.arange(cfg.n_steps)
    w = 1.0 - cfg.traffic_amplitude * np.cos(2 * np.pi * t / cfg.n_steps)
    share = w / w.sum() * cfg.impressions
    counts = np.floor(share).astype(np.int64)
    short = cfg.impressions - int(counts.sum())
    counts[np.argsort(-(share - counts), kind="stable")[:short]] += 1
    return counts


def sample_advertisers(cfg: MarketConfig, rng: np.random.Generator) -> Advertisers:
    """Draw the N advertisers of a period."""
    n = cfg.n_advertisers
    category = np.arange(n) % cfg.n_categories
    cat_level = np.exp(cfg.category_spread * rng.standard_normal(cfg.n_categories))
    p_level = cfg.p_mean * cat_level[category] * np.exp(cfg.advertiser_spread * rng.standard_normal(n))
    budget = rng.uniform(*cfg.budget_range, size=n)
    is_roi = rng.random(n) < cfg.roi_share
    cpa = rng.uniform(*cfg.cpa_range, size=n)
    value = rng.uniform(*cfg.value_range, size=n)
    roi = rng.uniform(*cfg.roi_range, size=n)
    target = np.where(is_roi, roi, cpa)
    value = np.where(is_roi, value, cpa)
    bid_scale = np.where(is_roi, value / roi, cpa)
    acquisition = ~is_roi & (rng.random(n) < cfg.acquisition_share)
    sigma = rng.uniform(*cfg.sigma_range, size=n)
    kind = np.where(is_roi, "roi", "cpa")
    return Advertisers(category, budget, kind, target, value, bid_scale, acquisition, p_level, sigma)


class Market:
    """One delivery period: call :meth:`step` with one α per advertiser, ``n_steps`` times.

    Common random numbers: the constructor takes what it needs from ``rng`` once (the advertisers when not given,
    and two seeds) and never touches it again. The traffic (predicted probabilities, new-customer flags, each slot's
    exposure draw) comes from its own generator, drawn step by step in a fixed order, so it is the same whatever
    anyone bids. Outcomes (conversions, which wins a budget drops) come from :class:`~simulators.auction.PairNoise`
    keyed by (step, impression, advertiser). Two bidders who play one period therefore face the same impressions, and
    a competitor whose bids do not react to the market bids the same in both plays.
    """

    def __init__(
        self, cfg: MarketConfig, rng: np.random.Generator, advertisers: Advertisers | None = None
    ) -> None:
        self.cfg = cfg
        self.rules = cfg.rules
        self.advertisers = advertisers if advertisers is not None else sample_advertisers(cfg, rng)
        traffic_seed, outcome_seed = (int(x) for x in rng.integers(0, 2**63, size=2))
        self._traffic_rng = np.random.default_rng(traffic_seed)
        self._noise = PairNoise(outcome_seed)
        if len(self.advertisers.budget) != cfg.n_advertisers:
            raise ValueError(
                f"{len(self.advertisers.budget)} advertisers given, config says {cfg.n_advertisers}"
            )
        if np.any(~(self.advertisers.budget >= 0)):
            bad = int(np.flatnonzero(~(self.advertisers.budget >= 0))[0])
            raise ValueError(f"advertiser {bad} has a negative or NaN budget {self.advertisers.budget[bad]}")
        self.traffic = traffic_curve(cfg)
        self._exposure = np.asarray(cfg.rules.exposure, dtype=np.float32)
        self._cat_cols = self.advertisers.category.astype(np.intp)
        cat = self.advertisers.category
        if np.any((cat < 0) | (cat >= cfg.n_categories)):
            raise ValueError(
                f"advertiser categories must be in [0, {cfg.n_categories}), got {sorted(set(cat.tolist()))}"
            )
        n_adv = cfg.n_advertisers
        self._cat_broadcast = n_adv % cfg.n_categories == 0 and np.array_equal(
            cat, np.arange(n_adv) % cfg.n_categories
        )
        level = self.advertisers.p_level.astype(np.float32)
        w = np.float32(cfg.pair_noise)
        self._pair_low = (level * (1 - w))[:, None]
        self._pair_step = (level * (2 * w / 255))[:, None]
        self._interest_lut = _lognormal_quantiles(cfg.interest_spread)
        # advertisers whose bids carry a per-impression factor: acquisition advertisers (is the user new to them:
        # 0 or 1) and, with value_spread > 0, ROI advertisers (the impression's order value m); disjoint sets
        self._acq = np.flatnonzero(self.advertisers.acquisition)
        is_roi = self.advertisers.kind == "roi"
        self._valued = np.flatnonzero(is_roi) if cfg.value_spread > 0 else np.zeros(0, dtype=np.intp)
        self._factor_rows = np.concatenate([self._acq, self._valued]).astype(np.intp)
        self._row_of = np.full(n_adv, -1, dtype=np.intp)
        self._row_of[self._factor_rows] = np.arange(self._factor_rows.size)
        self._value_lut = _lognormal_quantiles(cfg.value_spread) if self._valued.size else None
        n, T = cfg.n_advertisers, cfg.n_steps
        self.t = 0
        self.detail: StepDetail | None = None
        """The last step, impression by impression (None before the first step)."""
        self._states_at = -1
        self.spent = np.zeros(n)
        self.conversions = np.zeros(n)
        self.exposures = np.zeros(n, dtype=np.int64)
        self.active = self.advertisers.budget > 0
        """(N,) bool: still bidding. A campaign pauses for the rest of the period once its budget ran out during
        a step (some of its wins had to be dropped) or nothing is left."""
        # per-step history for the state features
        self._hist = {
            k: np.zeros((T, n)) for k in ("bid", "pvalue", "conversions", "win_rate", "lwc", "impressions")
        }
        self._draw_step()

    # ---- traffic -------------------------------------------------------------------------------------------
    def _draw_step(self) -> None:
        """Draw the pending step's impressions: predicted probabilities (kept as (N, n)), new-customer flags.

        Randomness is spent where it is cheap: one random byte per (impression, advertiser) pair for the pair
        factor ``1 ± pair_noise`` (256 levels) and one per (impression, category) for the log-normal interest
        (its 256 quantiles), both from the period's generator.
        """
        cfg = self.cfg
        n_adv, n_cat = cfg.n_advertisers, cfg.n_categories
        if self.t >= cfg.n_steps:
            self.p_t = np.zeros((n_adv, 0), dtype=np.float32)
            self._p_mean = np.zeros(n_adv)
            self.factor = (
                np.zeros((self._factor_rows.size, 0), dtype=np.float32) if self._factor_rows.size else None
            )
            self._shown_draws = np.zeros((0, cfg.rules.n_slots), dtype=np.float32)
            return
        rng = self._traffic_rng
        n = int(self.traffic[self.t])
        size = (n_adv + n_cat) * n
        raw = rng.bit_generator.random_raw(-(-size // 8)).view(np.uint8)
        pair = raw[: n_adv * n].reshape(n_adv, n)
        interest = np.take(self._interest_lut, raw[n_adv * n : size].reshape(n_cat, n))  # (C, n)
        p = np.empty((n_adv, n), dtype=np.float32)  # p = level · (1 - w + 2w·byte/255) · interest[category]
        np.multiply(pair, self._pair_step, out=p)
        p += self._pair_low
        if self._cat_broadcast:  # advertiser i is in category i mod C: broadcast instead of gathering
            p.reshape(n_adv // n_cat, n_cat, n)[...] *= interest[None]
        else:
            p *= interest[self._cat_cols]
        np.minimum(p, np.float32(1.0), out=p)
        self.p_t = p
        self._p_mean = np.add.reduce(p, axis=1).astype(np.float64) / max(n, 1)
        # the per-impression bid factors, drawn in a fixed order (acquisition flags, then order values)
        self.factor = None
        if self._factor_rows.size:
            n_acq = self._acq.size
            f = np.empty((self._factor_rows.size, n), dtype=np.float32)
            f[:n_acq] = rng.random((n_acq, n), dtype=np.float32) < cfg.new_customer_rate
            if self._valued.size:
                vb = rng.bit_generator.random_raw(-(-n_cat * n // 8)).view(np.uint8)[: n_cat * n]
                m = np.take(self._value_lut, vb.reshape(n_cat, n))  # (C, n)
                f[n_acq:] = m[self._cat_cols[self._valued]]
            self.factor = f
        self._shown_draws = rng.random((n, cfg.rules.n_slots), dtype=np.float32)

    @property
    def new_customer(self) -> np.ndarray:
        """(A, n) bool: is the user of each pending impression new to each acquisition advertiser (rows in the
        order of their indices)."""
        n = self.p_t.shape[1]
        return self.factor[: self._acq.size] > 0 if self.factor is not None else np.zeros((0, n), dtype=bool)

    @property
    def p_value(self) -> np.ndarray:
        """(n, N) predicted conversion probabilities of the pending step (a view of the (N, n) array)."""
        return self.p_t.T

    @property
    def done(self) -> bool:
        return self.t >= self.cfg.n_steps

    @property
    def remaining(self) -> np.ndarray:
        """(N,) budget left."""
        return np.maximum(self.advertisers.budget - self.spent, 0.0)

    # ---- one step ------------------------------------------------------------------------------------------
    def predicted_values(self) -> np.ndarray:
        """(n, N) predicted value of every pending impression to every advertiser (p × bid scale, new-customer
        filtered for acquisition advertisers)."""
        v = self.p_t * self.advertisers.bid_scale.astype(np.float32)[:, None]
        if self.factor is not None:
            v[self._factor_rows] *= self.factor
        return v.T

    def _bids(self, coef: np.ndarray) -> np.ndarray:
        """(N, n) float32 bids of the pending step for per-advertiser coefficients α × bid_scale (paused
        campaigns already at 0)."""
        bids = self.p_t * coef[:, None]
        if self.factor is not None:
            bids[self._factor_rows] *= self.factor
        return bids

    def bids(self, alphas: np.ndarray) -> np.ndarray:
        """(N, n) float32: what every advertiser would bid on each pending impression with coefficients ``alphas``
        (0 for paused campaigns), exactly as :meth:`step` computes them."""
        alphas = np.asarray(alphas, dtype=np.float64)
        return self._bids(
            (np.where(self.active, alphas, 0.0) * self.advertisers.bid_scale).astype(np.float32)
        )

    def shown(self) -> np.ndarray:
        """(n, K) bool: would slot k of each pending impression be shown if filled (the traffic's exposure draws)."""
        return self._shown_draws < self._exposure[None, :]

    def step(self, alphas: np.ndarray) -> tuple[StepOutcome, Feedback]:
        """Run the pending step's auctions with bid coefficients ``alphas`` (N,), then draw the next step."""
        if self.done:
            raise RuntimeError("the period is over; start a new Market")
        cfg, rules, adv = self.cfg, self.rules, self.advertisers
        alphas = np.asarray(alphas, dtype=np.float64)
        if alphas.shape != (cfg.n_advertisers,):
            raise ValueError(
                f"need one bid coefficient per advertiser ({cfg.n_advertisers}), got {alphas.shape}"
            )
        if not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
            bad = int(np.flatnonzero(~(np.isfinite(alphas) & (alphas >= 0)))[0])
            raise ValueError(
                f"bid coefficient of advertiser {bad} must be a finite number >= 0, got {alphas[bad]}"
            )
        p = self.p_t
        n = p.shape[1]
        coef = (np.where(self.active, alphas, 0.0) * adv.bid_scale).astype(np.float32)
        bids = self._bids(coef)
        pvalue_mean = self._p_mean
        bid_mean = bids.mean(axis=1, dtype=np.float64) if self.factor is not None else coef * pvalue_mean
        t = self.t
        result = gsp_auction_columns(
            bids, rules.n_slots, self._exposure, rules.reserve_price, self._shown_draws
        )
        wins = np.bincount(result.winners[result.winners >= 0], minlength=cfg.n_advertisers)
        remaining_before = self.remaining
        result, cost, trimmed = enforce_budgets(result, self.remaining, self._noise, t)
        (imp, who), converted = sample_conversions(result, p.T, adv.sigma.astype(np.float32), self._noise, t)
        weight = np.ones(who.size, dtype=np.float64)
        if self.factor is not None:  # acquisition: only new users count; ROI with order values: m each
            row = self._row_of[who]
            has = row >= 0
            weight[has] = self.factor[row[has], imp[has]]
            converted &= weight > 0  # a user an acquisition advertiser does not want does not count
        conversions = np.bincount(who[converted], weights=weight[converted], minlength=cfg.n_advertisers)
        expected = np.bincount(who, weights=p[who, imp] * weight, minlength=cfg.n_advertisers)
        exposures = np.bincount(who, minlength=cfg.n_advertisers)
        self.spent += cost
        self.active &= ~trimmed & (self.remaining > 0)
        self.conversions += conversions
        self.exposures += exposures
        lwc_mean = float(result.least_winning_cost.mean()) if n else 0.0
        h = self._hist
        h["bid"][t] = bid_mean
        h["pvalue"][t] = pvalue_mean
        h["conversions"][t] = conversions
        h["win_rate"][t] = wins / max(n, 1)
        h["lwc"][t] = lwc_mean
        h["impressions"][t] = n / 1000.0
        outcome = StepOutcome(
            t, cost, conversions, exposures, wins, bid_mean, pvalue_mean, lwc_mean, n, expected
        )
        factor = None
        if self.factor is not None:
            factor = np.ones((n, cfg.n_advertisers), dtype=np.float32)
            factor[:, self._factor_rows] = self.factor.T
        self.detail = StepDetail(
            p,
            bids,
            result,
            imp,
            who,
            converted,
            remaining_before,
            self.active.copy(),
            None if factor is None else factor.T,
        )
        feedback = Feedback(outcome, p.T, result.least_winning_cost, factor)
        self.t += 1
        self._draw_step()
        return outcome, feedback

    # ---- what bidders see ----------------------------------------------------------------------------------
    def states(self) -> np.ndarray:
        """(N, 16) float32 auto-bidding state of every advertiser before the pending step (see STATE_FEATURES).

        Computed once per step; the returned array is read-only (copy it to change it)."""
        if self._states_at == self.t:
            return self._states
        cfg, t, h = self.cfg, self.t, self._hist
        n_adv = cfg.n_advertisers
        out = np.zeros((n_adv, len(STATE_FEATURES)), dtype=np.float32)
        out[:, 0] = (cfg.n_steps - t) / cfg.n_steps
        budget = self.advertisers.budget
        out[:, 1] = np.where(budget > 0, self.remaining / np.where(budget > 0, budget, 1.0), 0.0)
        if t > 0:
            lo = max(0, t - 3)
            for col, key in ((2, "bid"), (4, "lwc"), (5, "pvalue"), (6, "conversions"), (7, "win_rate")):
                out[:, col] = h[key][:t].mean(axis=0)
            for col, key in ((3, "bid"), (8, "lwc"), (9, "pvalue"), (10, "conversions"), (11, "win_rate")):
                out[:, col] = h[key][lo:t].mean(axis=0)
            out[:, 14] = h["impressions"][lo:t].mean(axis=0)
            out[:, 15] = h["impressions"][:t].mean(axis=0)
        if not self.done:
            out[:, 12] = self._p_mean
            out[:, 13] = self.p_t.shape[1] / 1000.0
        out.flags.writeable = False
        self._states, self._states_at = out, t
        return out

    def scores(self) -> np.ndarray:
        """(N,) running score of every advertiser: conversions × min(1, (target / cost per conversion)^β)."""
        return self.rules.score(self.conversions, self.spent, self.advertisers.bid_scale)
