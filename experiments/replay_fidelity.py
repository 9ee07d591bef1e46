"""How well replayed plan values predict what a constant bid really earns, with and without every slot priced.

    .venv/bin/python experiments/replay_fidelity.py [--regimes budget-bound cpa-bound] [--days 4] [--advertisers 8]
        [--grid 9] [--seed 7]

For ``--days`` logged days of a regime (:func:`bidding.history_lp.log_days`, default competitors everywhere) and
``--advertisers`` of their advertisers, each constant α of a ``--grid``-point replay grid is played for real: the
logged day again, the same traffic and competitors, with that advertiser bidding α all day (the others react as
they do). Its normalised score (score × bid scale / budget, the DT's unit) is compared with the replayed value at
the first step, replayed two ways: one slot at the least winning cost (the old replay) and every slot priced with
its exposure (:func:`bidding.replay.slot_outcomes`). Printed per regime and replay: the mean absolute error, the
mean signed error at the grid's top three constants (over-rating shows as positive), and the regret of the
constant each replay would pick: the real score at the replay's best α over the real best (1.0 = it picks the best).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from bidding.history_lp import log_days
from bidding.replay import replay_grid, replay_values
from simulators.bidders import FixedBidder, default_competitors
from simulators.market import sample_advertisers
from simulators.regimes import regime
from simulators.rollout import run_period


def real_values(market, seed: int, day: int, adv: int, grid: np.ndarray) -> np.ndarray:
    """The normalised score of advertiser ``adv`` bidding each α of ``grid`` all of logged day ``day``."""
    T, N = market.n_steps, market.n_advertisers
    advertisers = sample_advertisers(market, np.random.default_rng([seed, day, 0]))
    out = []
    for a in grid:
        bidders = default_competitors(N, np.random.default_rng([seed, day, 1]), T)
        bidders[adv] = FixedBidder(float(a))
        traj = run_period(market, bidders, np.random.default_rng([seed, day, 2]), advertisers=advertisers)
        conv, cost = float(traj.conversions[:, adv].sum()), float(traj.cost[:, adv].sum())
        bs, b0 = float(advertisers.bid_scale[adv]), float(advertisers.budget[adv])
        out.append(float(market.rules.score(conv, cost, bs)) * bs / b0)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", nargs="+", default=["budget-bound", "cpa-bound"])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--advertisers", type=int, default=8)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    for name in args.regimes:
        market = regime(name)
        grid = replay_grid(market.rules.alpha_max, args.grid)
        days = log_days(market, args.seed, range(args.days), 128)
        N, T = market.n_advertisers, market.n_steps
        ways = {
            "one slot": replay_values(replace(days, top_bids=None, top_who=None), grid, market.rules),
            "every slot": replay_values(days, grid, market.rules),
        }
        picks = np.random.default_rng(args.seed).choice(N, min(args.advertisers, N), replace=False)
        rows = {k: {"abs": [], "top": [], "regret": []} for k in ways}
        for d in range(args.days):
            for i in picks:
                real = real_values(market, args.seed, d, int(i), grid)
                for k, r in ways.items():
                    pred = r.value.reshape(args.days, N, T, -1)[d, i, 0]
                    rows[k]["abs"].append(np.abs(pred - real).mean())
                    rows[k]["top"].append((pred - real)[-3:].mean())
                    best = real.max()
                    rows[k]["regret"].append(real[int(np.argmax(pred))] / best if best > 0 else 1.0)
        for k, v in rows.items():
            print(f"{name:13s} {k:10s}: mean |error| {np.mean(v['abs']):.3f}, error at the top 3 constants "
                  f"{np.mean(v['top']):+.3f}, real score of its best constant / the real best "
                  f"{np.mean(v['regret']):.3f} (median {np.median(v['regret']):.3f}), "
                  f"{len(v['abs'])} advertiser-days", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
