"""What binds in each market regime (docs/simulator.md): constant-α plays against the default competitors.

For every regime, every play of a small evaluation (``--periods`` development periods × 4 slots, budget ratio 1) is
played with each α of a grid. Printed per regime:

* the constant α with the best mean score over the plays, and at it the share of plays that miss the target
  (cost per counted conversion above the bid scale), the budget used and cost per conversion / target;
* each play's own best α (hindsight), and at it the mean budget used and cost per conversion / target: budget
  used near 100% with CPA well under target says the budget binds; CPA at the target with budget left says the
  target binds.

    python experiments/regime_profile.py [--periods 3] [--scale 1] [--regimes budget-bound cpa-bound roi acquisition]
"""

from __future__ import annotations

import argparse
import ast
import statistics

import numpy as np

from bidding.evaluate import EvalConfig, _plays
from simulators.bidders import FixedBidder
from simulators.regimes import REGIMES, regime

GRID = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0)


def profile(name: str, periods: int, first_period: int, scale: float = 1.0, **changes) -> dict:
    market = regime(name, scale, **changes)
    cfg = EvalConfig(periods=periods, first_period=first_period, budget_ratios=(1.0,))
    rows = []  # per play: (kind, {α: (score, used, cpa_ratio)})
    for _, slot, adv, play in _plays(market, cfg):
        out = {}
        for a in GRID:
            traj = play(FixedBidder(a))
            cost, conv = float(traj.cost[:, slot].sum()), float(traj.conversions[:, slot].sum())
            scale = float(adv.bid_scale[slot])
            ratio = cost / conv / scale if conv > 0 else (np.inf if cost > 0 else 0.0)
            out[a] = (float(traj.rewards[:, slot].sum()), cost / float(adv.budget[slot]), ratio)
        kind = "acq" if adv.acquisition[slot] else str(adv.kind[slot])
        rows.append((kind, out))
    mean_score = {a: statistics.fmean(o[a][0] for _, o in rows) for a in GRID}
    best = max(GRID, key=lambda a: mean_score[a])
    at_best = [o[best] for _, o in rows]
    own = [max(o.values(), key=lambda v: v[0]) for _, o in rows]
    own_alpha = [max(GRID, key=lambda a: o[a][0]) for _, o in rows]
    res = {
        "regime": name,
        "plays": len(rows),
        "tested": {k: sum(1 for r in rows if r[0] == k) for k in sorted({r[0] for r in rows})},
        "best_constant_alpha": best,
        "score_at_best": mean_score[best],
        "violation_rate_at_best": statistics.fmean(v[2] > 1.0 for v in at_best),
        "budget_used_at_best": statistics.fmean(v[1] for v in at_best),
        "cpa_ratio_at_best": statistics.median(v[2] for v in at_best),
        "hindsight_alpha_median": statistics.median(own_alpha),
        "hindsight_alpha_range": [min(own_alpha), max(own_alpha)],
        "hindsight_score": statistics.fmean(v[0] for v in own),
        "hindsight_budget_used": statistics.fmean(v[1] for v in own),
        "hindsight_cpa_ratio": statistics.median(v[2] for v in own),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--periods", type=int, default=3)
    ap.add_argument("--first-period", type=int, default=50_000, help="development periods, not test ones")
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES))
    ap.add_argument(
        "--scale", type=float, default=1.0, help="market size (impressions and budgets) vs the regime's"
    )
    ap.add_argument(
        "--set", nargs="*", default=[], help="market changes as key=python-literal, e.g. roi_range='(2,4)'"
    )
    args = ap.parse_args()
    changes = {k: ast.literal_eval(v) for k, v in (c.split("=", 1) for c in args.set)}
    print(
        "| regime | plays (tested kinds) | best constant α | its violations | its budget used | its CPA/target "
        "| hindsight α (median, range) | hindsight budget used | hindsight CPA/target | constant / hindsight score |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.regimes:
        r = profile(name, args.periods, args.first_period, args.scale, **changes)
        tested = ", ".join(f"{k} {v}" for k, v in r["tested"].items())
        lo, hi = r["hindsight_alpha_range"]
        print(
            f"| {name} | {r['plays']} ({tested}) | {r['best_constant_alpha']} | {r['violation_rate_at_best']:.0%} "
            f"| {r['budget_used_at_best']:.0%} | {r['cpa_ratio_at_best']:.2f} | {r['hindsight_alpha_median']} "
            f"({lo}–{hi}) | {r['hindsight_budget_used']:.0%} | {r['hindsight_cpa_ratio']:.2f} "
            f"| {r['score_at_best']:.0f} / {r['hindsight_score']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
