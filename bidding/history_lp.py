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

__all__ = ["History", "HistoryLPBidder", "log_history"]


@dataclass(frozen=True)
class History:
    """Logged impressions: ``value`` (N, T, M) predicted value at α = 1 per unit of bid scale, ``cost`` (T, M)
    least winning cost, ``weight`` (T,) impressions each sample stands for (averaged over the logged days)."""

    value: np.ndarray
    cost: np.ndarray
    weight: np.ndarray


def log_history(market: MarketConfig, seed: int, periods: range, sample: int = 256) -> History:
    """Play ``periods`` of ``market`` as :func:`bidding.evaluate.evaluate` draws them from ``seed`` (the same
    advertisers, competitors and traffic), with default competitors in every slot, and keep ``sample`` impressions
    of every step."""
    T, N = market.n_steps, market.n_advertisers
    days = len(periods)
    value = np.zeros((N, T, days * sample), dtype=np.float32)
    cost = np.zeros((T, days * sample), dtype=np.float32)
    weight = np.zeros(T)
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
                value[:, t, d * sample : (d + 1) * sample] = v
                cost[t, d * sample : (d + 1) * sample] = det.result.least_winning_cost[idx]
                weight[t] += n / sample / days
            step["t"] += 1

        run_period(market, bidders, rng, advertisers=advertisers, after_step=record)
    return History(value, cost, weight)


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
