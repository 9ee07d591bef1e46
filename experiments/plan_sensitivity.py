"""Sensitivity of the value-guided DT's play-time knobs, without retraining: the plan weight w and the target margin z.

    .venv/bin/python experiments/plan_sensitivity.py --output /work/runs/dev35 --regimes cpa-bound
        [--bidder vdt_replay] [--seeds 2] [--z -1 0 1 1.5 2] [--weights 0.75] [--periods 20] [--test-seed 0]
        [--workers 2] [--scale 0.2]

Reads the seeds a ``bench-bidding`` run (default market settings but ``--scale``) kept in ``<output>/<regime>/<bidder>/seed-*`` (and its plain DT in
``<output>/<regime>/dt/seed-*``), loads each with every (w, z) of the grid (``DTBidder.load(path, plan_weight=w,
plan_target_z=z)``, z < 0: the target is not kept) and plays them on the bench's evaluation periods: ``--periods``
periods of ``--test-seed`` (0 = the development seed; never the final test seed), every 4th slot per period, the
seeds taking the periods in turn, as the bench does. Prints per regime and setting: mean score, its ratio to the DT
with a paired, period-clustered bootstrap 95% CI, the share of plays that miss the target, the budget used; the
last line is the JSON of every row.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from bidding.dt import DTBidder
from bidding.evaluate import EvalConfig, evaluate, process_pool
from bidding.stats import paired_bootstrap
from pipelines.bench_bidding import Config, _Factory, market_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True, help="a bench-bidding output folder with kept seeds")
    ap.add_argument("--regimes", nargs="+", default=["cpa-bound"])
    ap.add_argument("--bidder", default="vdt_replay")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--z", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 1.5, 2.0])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.75])
    ap.add_argument("--periods", type=int, default=20)
    ap.add_argument("--test-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=Config().scale, help="the bench run's --scale")
    args = ap.parse_args()
    ev = EvalConfig(periods=args.periods, rotate=4, test_seed=args.test_seed)
    rows = []
    with process_pool(args.workers) as pool:
        for name in args.regimes:
            market = market_of(replace(Config(), scale=args.scale), name)
            out = Path(args.output, name)
            missing = [p for p in (out / args.bidder / "seed-0", out / "dt" / "seed-0") if not p.is_dir()]
            if missing:
                raise SystemExit(f"no kept seeds at {', '.join(map(str, missing))}: run bench-bidding first")
            dt = [_Factory(DTBidder.load(out / "dt" / f"seed-{s}")) for s in range(args.seeds)]
            res = {"dt": evaluate(dt, market, ev, executor=pool)}
            for w in args.weights:
                for z in args.z:
                    makers = [
                        _Factory(
                            DTBidder.load(out / args.bidder / f"seed-{s}", plan_weight=w, plan_target_z=z)
                        )
                        for s in range(args.seeds)
                    ]
                    res[f"w={w:g} z={z:g}"] = evaluate(makers, market, ev, executor=pool)
                    print(f"[plan-sensitivity] {name} w={w:g} z={z:g} done", flush=True)
            ci = paired_bootstrap({k: r["period_scores"] for k, r in res.items()}, reference="dt", seed=0)
            print(f"\n{name} ({args.bidder}, {args.periods} periods of seed {args.test_seed})\n")
            print("| setting | score | x dt [95% CI] | misses target | budget used |")
            print("|---|---|---|---|---|")
            for k, r in res.items():
                c = ci[k]
                print(
                    f"| {k} | {c['score_mean']:.1f} | {c['ratio_to_ref']:.3f} [{c['ratio_ci'][0]:.2f}, "
                    f"{c['ratio_ci'][1]:.2f}] | {r['cpa_violation_rate']:.0%} | {r['budget_used']:.0%} |"
                )
                rows.append(
                    {
                        "regime": name,
                        "setting": k,
                        "score": c["score_mean"],
                        "ratio_to_dt": c["ratio_to_ref"],
                        "ratio_ci": list(c["ratio_ci"]),
                        "violation_rate": r["cpa_violation_rate"],
                        "budget_used": r["budget_used"],
                    }
                )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
