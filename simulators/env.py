"""The gymnasium auction environment ``simulators/Auction-v0``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from simulators.auction import AuctionRules
from simulators.bidders import Bidder, default_competitors
from simulators.market import STATE_FEATURES, Market, MarketConfig

CompetitorSpec = Sequence[Bidder] | Callable[[np.random.Generator], Sequence[Bidder]] | None


class AuctionEnv(gym.Env):
    """Auto-bidding for one advertiser over one delivery period of multi-slot second-price ad auctions.

    ## Description
    A delivery period has T decision steps (default 48, e.g. half-hours of a day). N advertisers (default 48) in
    several product categories each have a budget and a target: a CPA target (cost per acquisition, or per *new*
    customer for acquisition advertisers) or an ROI target. The agent bids for one of them (``agent_index``); the
    others are competitors: heuristic bidders with heterogeneous settings (fixed α, PID on CPA, budget pacing,
    online LP) or any objects that follow :class:`simulators.bidders.Bidder`.

    Each step brings a batch of impression opportunities (traffic follows a day curve). For every (impression,
    advertiser) pair the market draws a predicted conversion probability p (per-category, per-advertiser and
    per-impression factors) with an uncertainty σ·p. Every advertiser bids ``α × p × bid_scale`` on every impression,
    where bid_scale is its CPA target (or value per conversion / ROI target), so α = 1 is the target-neutral bid.
    Each impression is a generalized second-price auction for K slots (default 3) shown with probabilities
    ``exposure`` (default 1.0, 0.8, 0.6) above a reserve price; an exposed winner pays the next bid; conversions are
    drawn from the true probability ``clip(p + σ·p·z, 0, 1)`` of exposed wins only; when a step would overspend a
    budget, that advertiser's won impressions are dropped in random order until the rest fits
    (see :mod:`simulators.auction`).

    ## Action Space
    ``Box(0, alpha_max, (1,), float32)``: the bid coefficient α for the step (``alpha_max`` is the market's
    :class:`simulators.auction.AuctionRules`). Actions outside [0, alpha_max] are clipped to it; a NaN or infinite
    action raises ``ValueError``.

    ## Observation Space
    ``Box(0, inf, (16,), float32)``, the standard auto-bidding state, before the step's auctions:

    | # | name | meaning |
    |---|------|---------|
    | 0 | time_left | steps left / T |
    | 1 | budget_left | budget left / budget |
    | 2 | hist_bid_mean | mean over past steps of the mean bid |
    | 3 | last3_bid_mean | the same over the last 3 steps |
    | 4 | hist_lwc_mean | mean over past steps of the mean least winning cost (K-th highest bid, or reserve) |
    | 5 | hist_pvalue_mean | mean over past steps of the mean predicted conversion probability |
    | 6 | hist_conversions_mean | mean conversions per past step |
    | 7 | hist_win_rate | mean over past steps of slots won / impressions |
    | 8 | last3_lwc_mean | as 4, last 3 steps |
    | 9 | last3_pvalue_mean | as 5, last 3 steps |
    | 10 | last3_conversions_mean | as 6, last 3 steps |
    | 11 | last3_win_rate | as 7, last 3 steps |
    | 12 | cur_pvalue_mean | mean predicted probability of this step's impressions |
    | 13 | cur_impressions_k | this step's impressions, in thousands |
    | 14 | last3_impressions_k | mean impressions of the last 3 steps, in thousands |
    | 15 | hist_impressions_k | mean impressions per past step, in thousands |

    History features are 0 at the first step.

    ## Rewards
    ``reward="score"`` (default): the change of the running score, so that the rewards of an episode add up to the
    period's score ``conversions × min(1, (target_cpa / cpa)^β)`` (β of the rules, 2 by default; for ROI advertisers target_cpa is value /
    ROI target, which is the same as ``min(1, (roi / target_roi)^β)``). A step can have a negative reward when it
    pushes the cost per conversion above the target. ``reward="conversions"``: the step's conversions.
    ``info`` holds the step's ``cost``, ``conversions``, ``exposures``, ``wins`` and the running ``score``,
    ``total_cost``, ``total_conversions``, ``cpa``, ``budget_left`` and the advertiser's ``budget``, ``target``,
    ``kind``, ``bid_scale``.

    ## Starting State
    ``reset(seed=...)`` draws a new period: advertisers (budgets, targets, conversion levels), competitors' settings
    (for the default competitors) and all traffic come from the env's seeded generator, so the same seed and actions
    give the same episode. ``reset(options={"advertisers": simulators.market.Advertisers(...)})`` fixes the
    advertisers instead of drawing them (evaluation on a set market, hand-built test cases).

    ## Episode End
    Terminated after T steps. Nothing else ends an episode: a bidder out of budget keeps stepping and wins nothing.

    ## Arguments
    ``gym.make("simulators/Auction-v0", agent_index=0, competitors=None, reward="score", config=None, **market)``:
    ``config`` is a :class:`simulators.market.MarketConfig` and ``market`` overrides its fields by name
    (``impressions``, ``n_steps``, ``n_advertisers``, ``budget_range``, ``cpa_range``, ``roi_share``,
    ``acquisition_share``, ...) and those of its rules (``n_slots``, ``exposure``, ``reserve_price``, ``beta``,
    ``alpha_max``); ``competitors`` is a list of
    N − 1 bidders, or a function of the episode's ``numpy.random.Generator`` that returns them, or None for the
    default heuristic mix.

    ## Version History
    * v0: first version. Since the auction rules moved into ``AuctionRules`` the ``alpha_max`` argument is a rules
      field like the others; since common random numbers, the same seed gives the same traffic whatever is bid.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        *,
        config: MarketConfig | None = None,
        agent_index: int = 0,
        competitors: CompetitorSpec = None,
        reward: str = "score",
        **market: Any,
    ) -> None:
        cfg = config if config is not None else MarketConfig()
        known = {f.name for f in fields(MarketConfig)}
        rule_names = {f.name for f in fields(AuctionRules)}
        unknown = sorted(set(market) - known - rule_names)
        if unknown:
            raise ValueError(f"unknown market settings {unknown}; known: {sorted(known | rule_names)}")
        rules = {k: market.pop(k) for k in list(market) if k in rule_names}
        if rules:
            market["rules"] = replace(market.get("rules", cfg.rules), **rules)
        self.cfg = replace(cfg, **market) if market else cfg
        if not 0 <= agent_index < self.cfg.n_advertisers:
            raise ValueError(f"agent_index must be in [0, {self.cfg.n_advertisers}), got {agent_index}")
        if reward not in ("score", "conversions"):
            raise ValueError(f"reward must be 'score' or 'conversions', got {reward!r}")
        if competitors is not None and not callable(competitors):
            competitors = list(competitors)
            if len(competitors) != self.cfg.n_advertisers - 1:
                raise ValueError(
                    f"need {self.cfg.n_advertisers - 1} competitors (n_advertisers − 1), got {len(competitors)}"
                )
        self.agent_index = agent_index
        self.alpha_max = self.cfg.rules.alpha_max
        self.reward_kind = reward
        self._competitor_spec = competitors
        self.action_space = spaces.Box(0.0, self.alpha_max, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, np.inf, shape=(len(STATE_FEATURES),), dtype=np.float32)
        self.market: Market | None = None
        self.competitors: list[Bidder] = []

    # ------------------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        advertisers = (options or {}).get("advertisers")
        self.market = Market(self.cfg, rng, advertisers=advertisers)
        spec = self._competitor_spec
        if spec is None:
            comps = default_competitors(self.cfg.n_advertisers - 1, rng, n_steps=self.cfg.n_steps)
        elif callable(spec):
            comps = list(spec(rng))
            if len(comps) != self.cfg.n_advertisers - 1:
                raise ValueError(
                    f"the competitor factory returned {len(comps)} bidders, need {self.cfg.n_advertisers - 1}"
                )
        else:
            comps = spec
        self.competitors = comps
        self._others = [i for i in range(self.cfg.n_advertisers) if i != self.agent_index]
        for i, bidder in zip(self._others, comps, strict=True):
            bidder.reset(self.market.advertisers.spec(i, self.cfg.rules))
        self._score = 0.0
        states = self.market.states()
        return states[self.agent_index].copy(), self._info(None)

    def step(self, action):
        if self.market is None:
            raise RuntimeError("call reset() before step()")
        if self.market.done:
            raise RuntimeError("the episode is over; call reset()")
        if action is None or any(x is None for x in np.asarray(action, dtype=object).reshape(-1)):
            raise ValueError("action is None: step() needs one number, the bid coefficient")
        try:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"action must be one number (the bid coefficient), got {action!r}") from None
        if a.size != 1:
            raise ValueError(f"action must be one bid coefficient, got shape {np.shape(action)}")
        if not np.isfinite(a[0]):
            raise ValueError(f"action must be a finite bid coefficient, got {a[0]}")
        alpha = float(np.clip(a[0], 0.0, self.alpha_max))
        m = self.market
        states = m.states()
        alphas = np.empty(self.cfg.n_advertisers)
        alphas[self.agent_index] = alpha
        for i, bidder in zip(self._others, self.competitors, strict=True):
            c = float(bidder.act(states[i]))
            if not math.isfinite(c):
                raise ValueError(f"competitor {i} ({type(bidder).__name__}) returned a non-finite α {c}")
            alphas[i] = min(max(c, 0.0), self.alpha_max)
        outcome, feedback = m.step(alphas)
        for bidder in self.competitors:
            observe = getattr(bidder, "observe", None)
            if observe is not None:
                observe(feedback)
        i = self.agent_index
        new_score = float(self.cfg.rules.score(m.conversions[i], m.spent[i], m.advertisers.bid_scale[i]))
        reward = new_score - self._score if self.reward_kind == "score" else float(outcome.conversions[i])
        self._score = new_score
        obs = m.states()[i].copy()
        return obs, reward, m.done, False, self._info(outcome)

    def _info(self, outcome) -> dict[str, Any]:
        m, i = self.market, self.agent_index
        adv = m.advertisers
        conv = float(m.conversions[i])
        spent = float(m.spent[i])
        return {
            "cost": float(outcome.cost[i]) if outcome is not None else 0.0,
            "conversions": float(outcome.conversions[i]) if outcome is not None else 0.0,
            "exposures": int(outcome.exposures[i]) if outcome is not None else 0,
            "wins": int(outcome.wins[i]) if outcome is not None else 0,
            "score": self._score,
            "total_cost": spent,
            "total_conversions": conv,
            "cpa": spent / conv if conv > 0 else (math.inf if spent > 0 else 0.0),
            "budget_left": float(m.remaining[i]),
            "budget": float(adv.budget[i]),
            "target": float(adv.target[i]),
            "kind": str(adv.kind[i]),
            "bid_scale": float(adv.bid_scale[i]),
        }
