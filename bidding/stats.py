"""Confidence intervals for bidding benchmarks: paired, period-clustered bootstrap.

Plays of one test period share their market (its traffic, its competitors), so they are not independent samples:
the unit to resample is the period. Every bidder plays the same periods, so ratios between bidders are computed on
the same resampled periods (paired), which removes the variance that the periods' difficulty puts into both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    scores: Mapping[str, np.ndarray],
    reference: str | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Mean score and its CI for every bidder, and its ratio to ``reference`` with a CI.

    ``scores[name]`` is a (P, S) array: P test periods (the same periods, in the same order, for every bidder) × S
    plays per period. Each bootstrap replicate draws P periods with replacement and takes, for every bidder, the
    mean over all plays of the drawn periods; the ratio of a replicate is the bidder's mean over the reference's mean
    on the same draw. CIs are the replicates' percentiles ((1 − level)/2 and (1 + level)/2). Returns
    ``{name: {"score_mean", "score_ci", "ratio_to_ref", "ratio_ci"}}`` (ratios are None without a reference).
    """
    if not scores:
        raise ValueError("no bidders' scores given")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    first = next(iter(shapes.values()))
    if any(a.ndim != 2 for a in arrays.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"scores must be (periods, plays) arrays of one shape, got {shapes}")
    if first[0] < 2 or first[1] < 1:
        raise ValueError(f"need at least 2 periods and 1 play per period for a bootstrap, got {first}")
    bad = [k for k, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        raise ValueError(f"scores of {bad} hold NaN or infinite values")
    if reference is not None and reference not in arrays:
        raise ValueError(f"reference {reference!r} is not among the bidders {sorted(arrays)}")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level {level}, n_boot {n_boot}")
    P = first[0]
    draws = np.random.default_rng(seed).integers(0, P, size=(n_boot, P))
    period_means = {k: a.mean(axis=1) for k, a in arrays.items()}  # every period has S plays: equal weights
    reps = {k: m[draws].mean(axis=1) for k, m in period_means.items()}
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    out = {}
    for k, m in period_means.items():
        row = {"score_mean": float(m.mean()), "score_ci": [float(x) for x in np.percentile(reps[k], q)]}
        row["ratio_to_ref"] = row["ratio_ci"] = None
        if reference is not None:
            ref_mean = float(period_means[reference].mean())
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = reps[k] / reps[reference]
            if ref_mean > 0 and np.all(reps[reference] > 0):
                row["ratio_to_ref"] = float(m.mean() / ref_mean)
                row["ratio_ci"] = [float(x) for x in np.percentile(ratio, q)]
        out[k] = row
    return out
