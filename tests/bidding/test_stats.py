"""Paired, period-clustered bootstrap: hand-worked cases and the properties that make it paired and clustered."""

from __future__ import annotations

import numpy as np
import pytest

from bidding.stats import paired_bootstrap


def test_constant_ratio_has_a_zero_width_interval():
    """B scores exactly twice A in every play: whatever periods a replicate draws, the ratio is 2."""
    a = np.array([[1.0, 3.0], [10.0, 20.0], [5.0, 5.0]])
    out = paired_bootstrap({"a": a, "b": 2 * a}, reference="a", n_boot=500)
    assert out["b"]["ratio_to_ref"] == pytest.approx(2.0)
    assert out["b"]["ratio_ci"] == pytest.approx([2.0, 2.0])
    assert out["a"]["ratio_ci"] == pytest.approx([1.0, 1.0])
    # the mean is over all plays: (1 + 3 + 10 + 20 + 5 + 5) / 6 = 44 / 6
    assert out["a"]["score_mean"] == pytest.approx(44 / 6)
    # the score CI spans period means: it lies within [min, max] of the period means 2 .. 15
    lo, hi = out["a"]["score_ci"]
    assert 2.0 <= lo < 44 / 6 < hi <= 15.0


def test_two_periods_by_hand():
    """Two periods with means 0 and 10: a replicate draws (0,0), (0,10), (10,0) or (10,10) → mean 0, 5 or 10 with
    probabilities 1/4, 1/2, 1/4; the 95% interval is [0, 10]."""
    out = paired_bootstrap({"a": np.array([[0.0], [10.0]])}, n_boot=4000, seed=1)
    assert out["a"]["score_mean"] == 5.0
    assert out["a"]["score_ci"] == [0.0, 10.0]
    assert out["a"]["ratio_to_ref"] is None


def test_pairing_removes_the_periods_difficulty():
    """Periods differ 100-fold in difficulty, B is 10% better than A with small noise: the unpaired score CIs
    overlap widely, the paired ratio's CI is tight around 1.1."""
    rng = np.random.default_rng(0)
    level = np.exp(rng.normal(0, 1.5, size=(20, 1)))
    a = level * (1 + 0.02 * rng.standard_normal((20, 8)))
    b = 1.1 * level * (1 + 0.02 * rng.standard_normal((20, 8)))
    out = paired_bootstrap({"a": a, "b": b}, reference="a")
    lo, hi = out["b"]["ratio_ci"]
    assert 1.07 < lo <= out["b"]["ratio_to_ref"] <= hi < 1.13 and hi - lo < 0.03
    assert out["b"]["score_ci"][0] < out["a"]["score_ci"][1]  # unpaired, they could not be told apart


def test_clustering_widens_the_interval_when_plays_of_a_period_move_together():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 1, size=(20, 1)) + np.zeros((20, 10))  # 10 plays, one value per period
    indep = rng.normal(0, 1, size=(20, 10))
    w = lambda x: np.diff(paired_bootstrap({"x": x})["x"]["score_ci"])[0]  # noqa: E731
    assert w(shared) > 2 * w(indep)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap({"a": np.ones((3, 2)), "b": np.ones((3, 3))})
    with pytest.raises(ValueError, match="at least 2 periods"):
        paired_bootstrap({"a": np.ones((1, 4))})
    with pytest.raises(ValueError, match=r"scores of \['b'\] hold NaN"):
        paired_bootstrap({"a": np.ones((3, 2)), "b": np.full((3, 2), np.nan)})
    with pytest.raises(ValueError, match="reference 'dt' is not among"):
        paired_bootstrap({"a": np.ones((3, 2))}, reference="dt")
    with pytest.raises(ValueError, match="no bidders"):
        paired_bootstrap({})
