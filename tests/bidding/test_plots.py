"""The bidding half's figures: the market sample adds up, and each figure draws what it says."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from bidding.plots import market_sample, plot_bidders, plot_market, score_table
from simulators.market import MarketConfig, traffic_curve

MARKET = MarketConfig(impressions=2_000, n_steps=8, n_advertisers=6, n_categories=2)


def _result(score: list[float], T: int = 8) -> dict:
    return {
        "score_by_budget": score,
        "score_mean": float(np.mean(score)),
        "cpa_violation_rate": 0.25,
        "budget_used": 0.5,
        "spend_curve": np.linspace(0.1, 0.8, T).tolist(),
        "cpa_curve": np.linspace(0.5, 1.2, T).tolist(),
    }


def test_market_sample_follows_the_traffic_curve_and_keeps_positive_bids():
    s = market_sample(MARKET, seed=0)
    assert s.impressions.tolist() == traffic_curve(MARKET).tolist()
    assert [len(x) for x in s.lwc] == s.impressions.tolist()  # one least winning cost per impression
    assert s.bids.size > 0 and (s.bids > 0).all() and (s.price > 0).all()
    again = market_sample(MARKET, seed=0)
    assert np.array_equal(s.bids, again.bids)  # seeded


def test_plot_market_labels_every_panel(tmp_path):
    fig = plot_market(market_sample(MARKET, seed=0), tmp_path / "market.png")
    traffic, dist, price = fig.axes
    assert len(traffic.patches) == MARKET.n_steps and traffic.get_ylabel() == "impression opportunities"
    assert dist.get_xscale() == "log" and "log scale" in dist.get_xlabel()
    assert [t.get_text().split(" (")[0] for t in dist.get_legend().get_texts()] == [
        "bids",
        "least winning cost per impression",
        "price paid per shown impression",
    ]
    assert price.get_lines()[0].get_xydata().shape == (MARKET.n_steps, 2)
    assert (tmp_path / "market.png").stat().st_size > 0


def test_plot_bidders_one_line_per_bidder_and_the_target(tmp_path):
    results = {"pid": _result([1.0, 2.0, 3.0]), "dt": _result([2.0, 2.5, 4.0])}
    path = tmp_path / "bidding.png"
    fig = plot_bidders(results, (0.5, 1.0, 1.5), path)
    assert isinstance(fig, Figure) and path.read_bytes().startswith(b"\x89PNG")
    score, pacing, cpa = fig.axes
    assert [ln.get_label() for ln in score.get_lines()] == ["pid", "dt"]
    assert score.get_lines()[0].get_xydata().tolist() == [[50, 1.0], [100, 2.0], [150, 3.0]]
    assert len(pacing.get_lines()) == 2 and pacing.get_ylabel() == "share of budget spent"
    assert len(cpa.get_lines()) == 3  # two bidders and the target at 1
    assert [t.get_text() for t in cpa.get_legend().get_texts()] == ["pid", "dt", "target"]
    assert cpa.get_ylabel() == "cost per conversion / target"
    assert [ax.get_title() for ax in fig.axes] == [
        "Score by budget",
        "Budget pacing over the day",
        "CPA over the day",
    ]


def test_score_table_best_mean_first():
    t = score_table({"pid": _result([1.0, 2.0]), "dt": _result([2.0, 4.0])}, (0.5, 1.0))
    assert t["bidder"].to_list() == ["dt", "pid"]
    assert t.columns == ["bidder", "score @50%", "score @100%", "mean", "CPA violations", "budget used"]
    assert t["mean"].to_list() == [3.0, 1.5]
