"""Where PPO / SAC stop improving: train one online bidder with ``bidding.online.train_online`` and score the policy
as it stands every ``--every`` environment steps on development periods (test seed 0, never the final test seed).

Prints one row per check (steps, training minutes so far, mean score, share of the hindsight bound of the same plays)
and writes the curve as JSON (``--output``) and a plot (``--figure``; several JSON files plot together with
``--plot``). bench-bidding's step budgets for PPO and SAC (``OnlineConfig.timesteps``) were chosen where these
curves flatten (docs/bidding.md).

    python experiments/online_convergence.py --algorithm sac --timesteps 60000 --every 5000 --output sac.json
    python experiments/online_convergence.py --plot sac.json ppo.json --figure docs/figures/bidding_online_convergence.png
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from bidding.bound import hindsight_bound
from bidding.evaluate import EvalConfig, evaluate
from bidding.online import ACTIONS, OnlineConfig, train_online
from simulators.regimes import REGIMES, regime


def run(args) -> dict:
    market = regime(args.regime, args.scale)
    ev = EvalConfig(periods=args.periods, rotate=args.rotate, test_seed=0)
    bound = hindsight_bound(market, ev)["score_mean"]
    cfg = OnlineConfig(
        algorithm=args.algorithm,
        timesteps=args.timesteps,
        max_minutes=0,
        seed=args.seed,
        envs=args.envs,
        net=tuple(args.net),
        scale_reward=not args.raw_reward,
        action=args.action,
        learning_rate=args.lr,
        rollout=args.rollout,
    )

    def check(bidder) -> float:
        score = evaluate(lambda: bidder, market, ev)["score_mean"]
        print(f"| {len(checks) + 1} | {score:.1f} | {score / bound:.1%} |", flush=True)
        checks.append(score)
        return score

    checks: list[float] = []
    _, stats = train_online(market, cfg, every=args.every, check=check)
    return {
        "regime": args.regime,
        "config": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(replace(cfg, action=cfg.policy_action)).items()
        },
        "bound": bound,
        "checks": [{"steps": s, "minutes": m, "score": v, "share": v / bound} for s, m, v in stats["checks"]],
        "episodes": len(stats["episode_scores"]),
        "train_minutes": stats["train_minutes"],
    }


def plot(files: list[Path], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    for f in files:
        d = json.loads(f.read_text())
        c, cfg = d["checks"], d["config"]
        over = {"log_alpha": " over ln α", "alpha": " over α"}.get(cfg.get("action", ""), "")
        every = f", {cfg['rollout']:,} an update" if cfg["algorithm"] == "ppo" and "rollout" in cfg else ""
        label = f"{cfg['algorithm']}{over}{every} ({d['regime']}, seed {cfg['seed']})"
        ax.plot([x["steps"] for x in c], [100 * x["share"] for x in c], marker="o", ms=3, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("share of the hindsight bound, %")
    ax.set_title("Online bidders on development periods")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regime", default="budget-bound", choices=list(REGIMES))
    ap.add_argument("--scale", type=float, default=0.2, help="market size (bench-bidding's default 0.2)")
    ap.add_argument("--algorithm", default="sac", choices=["ppo", "sac"])
    ap.add_argument("--timesteps", type=int, default=60_000)
    ap.add_argument("--every", type=int, default=5_000, help="environment steps between checks")
    ap.add_argument("--envs", type=int, default=OnlineConfig.envs)
    ap.add_argument("--net", type=int, nargs="+", default=list(OnlineConfig.net))
    ap.add_argument(
        "--action",
        default=OnlineConfig.action,
        choices=["", *ACTIONS],
        help="what the policy outputs (empty: the algorithm's own, PPO log_alpha, SAC alpha)",
    )
    ap.add_argument("--rollout", type=int, default=OnlineConfig.rollout, help="PPO: steps per update")
    ap.add_argument("--lr", type=float, default=OnlineConfig.learning_rate, help="0 = SB3's default")
    ap.add_argument("--raw-reward", action="store_true", help="train on the raw change of the score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--periods", type=int, default=8, help="development periods per check")
    ap.add_argument("--rotate", type=int, default=8, help="every rotate-th slot of a period is played")
    ap.add_argument("--output", type=Path, default=None, help="write the curve here (json)")
    ap.add_argument("--plot", type=Path, nargs="+", default=None, help="plot these curves (json) instead")
    ap.add_argument("--figure", type=Path, default=None, help="write the plot here (png)")
    args = ap.parse_args()
    if args.plot:
        if not args.figure:
            ap.error("--plot needs --figure")
        plot(args.plot, args.figure)
        return
    if args.figure and not args.output:
        ap.error("--figure needs --output (the curve it plots)")
    torch.set_num_threads(1)
    print("| check | score | share of bound |\n|---|---|---|")
    out = run(args)
    for c in out["checks"]:
        print(f"{c['steps']:>7} steps {c['minutes']:5.2f} min  score {c['score']:6.1f}  {c['share']:.1%}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out))
    if args.figure:
        plot([args.output], args.figure)


if __name__ == "__main__":
    main()
