"""How much does a 1e-4 change of a constant α move a play's score? (common random numbers, docs/simulator.md)

Plays FixedBidder(α) and FixedBidder(α + 1e-4) in the same evaluation plays (default market, default competitors)
and prints the standard deviation of the score difference across plays, and of the scores themselves. Without
common random numbers the two plays drift apart once one draw differs; with them, the difference is tiny.

    python experiments/crn_sensitivity.py [--periods 4] [--alpha 0.12]
"""

from __future__ import annotations

import argparse
import inspect
import statistics

from bidding import evaluate as ev
from simulators.bidders import FixedBidder
from simulators.market import MarketConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--periods", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=0.12)
    args = ap.parse_args()
    market = MarketConfig()
    cfg = ev.EvalConfig(periods=args.periods, budget_ratios=(1.0,))
    extra = (
        (5.0,) if "alpha_max" in inspect.signature(ev._plays).parameters else ()
    )  # code before AuctionRules
    diffs, scores = [], []
    for _, slot, _, play in ev._plays(market, cfg, *extra):
        s = []
        for a in (args.alpha, args.alpha + 1e-4):
            traj = play(FixedBidder(a))
            s.append(float(traj.rewards[:, slot].sum()))
        scores.append(s[0])
        diffs.append(s[1] - s[0])
        print(f"play {len(diffs)}: score {s[0]:.2f} → {s[1]:.2f}", flush=True)
    print(
        f"plays {len(diffs)}  score sd {statistics.stdev(scores):.2f}  "
        f"sd of the change for +1e-4 {statistics.stdev(diffs):.3f}  mean |change| "
        f"{statistics.fmean(abs(d) for d in diffs):.3f}"
    )


if __name__ == "__main__":
    main()
