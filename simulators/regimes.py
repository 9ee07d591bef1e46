"""Named market regimes: which constraint binds decides which bidder wins, so a benchmark needs more than one.

=================  ======================================================================================
``budget-bound``   today's default market: budgets run out; the task is pacing the budget over the day.
``cpa-bound``      budgets of 150k–450k (the default: 4k–12k) and CPA targets of 40–90 (60–130): a bidder
                   that keeps its CPA near the target cannot spend its budget, so the target binds, and the
                   constant α that is best on average misses the target on many days.
``roi``            every advertiser has an ROI target (2–4) and impressions differ in order value
                   (log-normal, σ 0.8): a conversion counts its value, so ROI is not a CPA target in disguise;
                   large budgets, so the ROI target binds.
``acquisition``    half of the CPA advertisers pay only for customers new to them (flags drawn per user and
                   advertiser); their score is on the customer-acquisition cost (CAC) against the target;
                   large budgets, so the CAC target binds.
=================  ======================================================================================

What binds in each, measured with ``python experiments/regime_profile.py``, is in docs/simulator.md.
"""

from __future__ import annotations

import math
from dataclasses import replace

from simulators.market import MarketConfig

__all__ = ["REGIMES", "regime"]

_BASE = MarketConfig()

_LARGE = (150_000.0, 450_000.0)  # budgets that a target-meeting bidder does not spend

REGIMES: dict[str, MarketConfig] = {
    "budget-bound": _BASE,
    "cpa-bound": replace(_BASE, budget_range=_LARGE, cpa_range=(40.0, 90.0)),
    "roi": replace(_BASE, roi_share=1.0, value_spread=0.8, roi_range=(2.0, 4.0), budget_range=_LARGE),
    "acquisition": replace(_BASE, roi_share=0.0, acquisition_share=0.5, budget_range=_LARGE),
}
"""The market of every regime (advertisers, traffic and rules; change the size with :func:`regime`)."""


def regime(name: str, scale: float = 1.0, **changes) -> MarketConfig:
    """The market of regime ``name``, ``scale`` times as large (impressions and budgets together, so what binds stays
    the same), with ``changes`` applied after (e.g. ``n_steps=24``)."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; known: {sorted(REGIMES)}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    base = REGIMES[name]
    if scale != 1.0:
        lo, hi = base.budget_range
        base = replace(base, impressions=max(base.n_steps, round(base.impressions * scale)),
                       budget_range=(lo * scale, hi * scale))  # fmt: skip
    return replace(base, **changes) if changes else base
