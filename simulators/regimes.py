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


def regime(name: str, **changes) -> MarketConfig:
    """The market of regime ``name`` with ``changes`` applied (e.g. ``impressions=20_000`` for a small one)."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; known: {sorted(REGIMES)}")
    return replace(REGIMES[name], **changes) if changes else REGIMES[name]
