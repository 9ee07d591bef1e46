"""Online LP from previous days' data, as AuctionNet's OnlineLP baseline does it.

From logged periods (training days), keep for every advertiser index and step a sample of impressions: their
predicted value to that advertiser (p × order value or new-user flag) and their least winning cost, each standing
for impressions-of-the-step / sample-size impressions. At step t of a new day, with budget B left, the bidder
"buys" the logged impressions of steps t … T−1 in order of cost per unit of value (averaged over the logged days)
until B is spent; α is the cost per value of the last one bought (the price of a conversion at the margin, over the
advertiser's bid scale), never above ``cap`` (bench-bidding tunes it on training periods). The current day's own
traffic is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulators.bidders import default_competitors
from simulators.market import Advertiser, MarketConfig, sample_advertisers
from simulators.rollout import run_period

__all__ = ["History", "HistoryLPBidder", "LoggedDays", "log_days", "log_history"]


@dataclass(frozen=True)
class History:
    """Logged impressions: ``value`` (N, T, M) predicted value at α = 1 per unit of bid scale, ``cost`` (T, M)
    least winning cost, ``weight`` (T,) impressions each sample stands for (averaged over the logged days)."""

    value: np.ndarray
    cost: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class LoggedDays:
    """The impression log of D days, day by day: ``value`` (D, N, T, M) predicted value at α = 1 per unit of bid
    scale, ``cost`` (D, T, M) least winning cost, ``weight`` (D, T) impressions each sample of that day and step
    stands for; and what the logging bidders saw: ``states`` (D, T, N, 16) the state before each step,
    ``conversions`` and ``cost_paid`` (D, T, N) their conversions and cost per step, ``budget`` and ``bid_scale``
    (D, N) the advertisers of each day; and, where the log has every bid of an impression (AuctionNet's raw log
    does), ``top_bids`` (D, T, M, K+1) the K+1 highest bids of each sampled impression, highest first (0 where fewer
    took part), and ``top_who`` (D, T, M, K+1) their advertisers, so that any advertiser's competitors' bids, and
    with them the price of every slot, can be read back."""

    value: np.ndarray
    cost: np.ndarray
    weight: np.ndarray
    states: np.ndarray
    conversions: np.ndarray
    cost_paid: np.ndarray
    budget: np.ndarray
    bid_scale: np.ndarray
    top_bids: np.ndarray | None = None
    top_who: np.ndarray | None = None

    def history(self) -> History:
        """The days pooled as :class:`History` (each step's samples of every day side by side)."""
        D, N, T, M = self.value.shape
        weight = np.zeros(T)
        for d in range(D):  # summed day by day, in order, as the pooled log always was
            weight += self.weight[d] / D
        return History(
            self.value.transpose(1, 2, 0, 3).reshape(N, T, D * M),
            self.cost.transpose(1, 0, 2).reshape(T, D * M),
            weight,
        )


def log_days(market: MarketConfig, seed: int, periods: range, sample: int = 256) -> LoggedDays:
    """Play ``periods`` of ``market`` as :func:`bidding.evaluate.evaluate` draws them from ``seed`` (the same
    advertisers, competitors and traffic), with default competitors in every slot, and keep ``sample`` impressions
    of every step, day by day, with what every advertiser saw."""
    T, N, D = market.n_steps, market.n_advertisers, len(periods)
    value = np.zeros((D, N, T, sample), dtype=np.float32)
    cost = np.zeros((D, T, sample), dtype=np.float32)
    weight = np.zeros((D, T))
    states = np.zeros((D, T, N, 16), dtype=np.float32)
    conversions = np.zeros((D, T, N), dtype=np.float32)
    cost_paid = np.zeros((D, T, N), dtype=np.float32)
    budget = np.zeros((D, N), dtype=np.float32)
    bid_scale = np.zeros((D, N), dtype=np.float32)
    K1 = min(market.rules.n_slots + 1, N)
    top_bids = np.zeros((D, T, sample, K1), dtype=np.float32)
    top_who = np.full((D, T, sample, K1), -1, dtype=np.int16)
    for d, p in enumerate(periods):
        rng = np.random.default_rng([seed, p, 2])
        advertisers = sample_advertisers(market, np.random.default_rng([seed, p, 0]))
        bidders = default_competitors(N, np.random.default_rng([seed, p, 1]), T)
        picks = np.random.default_rng([seed, p, 3])
        step = {"t": 0}

        def record(m, d=d, step=step, picks=picks) -> None:
            det, t = m.detail, step["t"]
            n = det.p.shape[1]
            if n:
                idx = picks.integers(0, n, size=sample)
                v = det.p[:, idx].copy()
                if det.factor is not None:  # order values, new-user flags
                    v *= det.factor[:, idx]
                value[d, :, t] = v
                cost[d, t] = det.result.least_winning_cost[idx]
                b = det.bids[:, idx]  # (N, M)
                who = np.argsort(-b, axis=0, kind="stable")[:K1]  # (K1, M) highest first
                top = np.take_along_axis(b, who, axis=0)
                top_bids[d, t] = np.maximum(top, 0.0).T
                top_who[d, t] = np.where(top > 0, who, -1).T
                weight[d, t] = n / sample
            step["t"] += 1

        traj = run_period(market, bidders, rng, advertisers=advertisers, after_step=record)
        states[d], conversions[d], cost_paid[d] = traj.states, traj.conversions, traj.cost
        budget[d], bid_scale[d] = advertisers.budget, advertisers.bid_scale
    return LoggedDays(
        value, cost, weight, states, conversions, cost_paid, budget, bid_scale, top_bids, top_who
    )


def log_history(market: MarketConfig, seed: int, periods: range, sample: int = 256) -> History:
    """:func:`log_days` pooled (:meth:`LoggedDays.history`): what OnlineLP reads."""
    return log_days(market, seed, periods, sample).history()


@dataclass
class HistoryLPBidder:
    """Bids the marginal cost per value of the logged impressions that the budget left can still buy (module doc)."""

    history: History
    cap: float = 5.0
    n_steps: int = 48
    _cache: dict = field(default_factory=dict, repr=False)

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser

    def _curve(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(cost per value at bid scale 1, cumulative cost) of the advertiser's logged impressions of steps t … T−1,
        cheapest per value first (kept: a bidder plays many days)."""
        key = (self.advertiser.index, t)
        if key not in self._cache:
            h = self.history
            v = h.value[self.advertiser.index, t:].reshape(-1).astype(np.float64)
            c = h.cost[t:].reshape(-1).astype(np.float64)
            w = np.repeat(h.weight[t:], h.cost.shape[1])
            ok = v > 0
            ratio = c[ok] / v[ok]
            order = np.argsort(ratio, kind="stable")
            self._cache[key] = (ratio[order], np.cumsum((c[ok] * w[ok])[order]))
        return self._cache[key]

    def act(self, state: np.ndarray) -> float:
        adv = self.advertiser
        t = min(max(self.n_steps - round(float(state[0]) * self.n_steps), 0), self.n_steps - 1)
        budget_left = float(state[1]) * adv.budget
        if budget_left <= 0:
            return 0.0
        ratio, cum = self._curve(t)
        if ratio.size == 0:
            return self.cap
        k = int(np.searchsorted(cum, budget_left, side="right"))
        if k >= ratio.size:
            return self.cap
        return float(min(self.cap, ratio[k] / max(adv.bid_scale, 1e-12)))
