"""Why does CQL score far below behaviour cloning? Train variants on one regime's logs and look at what they learned.

For each variant: the policy's α against the logged α at logged states, the slope of Q(s, ·) at the policy's α
(positive: Q asks for more), Q's spread over α, and the score on tuning periods (training periods of seed 1), next
to BC trained on the same logs.

    python experiments/cql_diagnosis.py --data /work/runs/bench-r1/budget-bound/offline --regime budget-bound
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from bidding.data import load_trajectories
from bidding.evaluate import EvalConfig, evaluate
from bidding.offline import OfflineConfig, Transitions, train_offline
from simulators.regimes import regime

VARIANTS = {
    "bc": dict(algorithm="bc"),
    "cql, bc_weight 2.5 (TD3+BC's)": dict(algorithm="cql", bc_weight=2.5),
    "cql (default, bc_weight 0.25)": dict(algorithm="cql"),
    "cql, bc_weight 2.5, cql_alpha 5": dict(algorithm="cql", bc_weight=2.5, cql_alpha=5.0),
    "cql, bc_weight 2.5, alpha_max 2": dict(algorithm="cql", bc_weight=2.5, alpha_max=2.0),
}


def probe(bidder, data: Transitions, n: int = 2000, seed: int = 0) -> dict:
    """Policy α vs logged α, and the shape of Q (when the bidder keeps one) at n logged states."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, data.s.shape[0], (n,), generator=g)
    s, a = data.s[i], data.a[i]
    with torch.no_grad():
        pi = bidder.policy(s)
    out = {
        "logged_alpha_median": float(a.median()),
        "policy_alpha_median": float(pi.median()),
        "policy_over_logged_median": float((pi / a.clamp_min(1e-3)).median()),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--regime", default="budget-bound")
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--minutes", type=float, default=1.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ep = load_trajectories(args.data)
    data = Transitions.from_episodes(ep)
    market = regime(args.regime, args.scale)
    tuning = EvalConfig(periods=4, first_period=0, test_seed=1, rotate=8)
    print(
        "| variant | steps | train min | logged α (median) | policy α (median) | policy / logged | tuning score |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, kw in VARIANTS.items():
        cfg = replace(OfflineConfig(max_minutes=args.minutes), **kw)
        if "alpha_max" not in kw:
            cfg = replace(cfg, alpha_max=market.rules.alpha_max)
        t = time.perf_counter()
        bidder, stats = train_offline(ep, cfg)
        minutes = (time.perf_counter() - t) / 60
        p = probe(bidder, data)
        score = evaluate(lambda b=bidder: b, market, tuning)["score_mean"]
        print(
            f"| {name} | {stats['steps']} | {minutes:.1f} | {p['logged_alpha_median']:.3f} | "
            f"{p['policy_alpha_median']:.3f} | {p['policy_over_logged_median']:.2f} | {score:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
