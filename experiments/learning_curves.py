"""Learning curves of the online bidders (PPO, SAC) kept by a bench-bidding run.

Each kept online bidder's train.json holds the score of every training episode (stats["episode_scores"], one play of
a training period in the test-size market). This plots their running mean against episodes, per regime and seed,
and prints whether each curve was still rising at the end: the mean of the last fifth of the episodes against the
fifth before it.

    python experiments/learning_curves.py /work/runs/bench-acc --figure docs/figures/bidding_learning_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def curves(root: Path, bidders=("ppo", "sac")) -> dict:
    """{regime: {bidder: {seed: np.ndarray of episode scores}}} of every kept online bidder under ``root``."""
    out: dict = {}
    for regime_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for bidder in bidders:
            for seed_dir in sorted((regime_dir / bidder).glob("seed-*")):
                path = seed_dir / "train.json"
                if not path.exists():
                    continue
                scores = json.loads(path.read_text()).get("stats", {}).get("episode_scores")
                if not scores:
                    raise ValueError(f"{path}: no stats.episode_scores (was it trained by an older bench?)")
                seed = int(seed_dir.name.split("-", 1)[1])
                out.setdefault(regime_dir.name, {}).setdefault(bidder, {})[seed] = np.asarray(scores, float)
    if not out:
        raise FileNotFoundError(f"{root}: no <regime>/ppo|sac/seed-*/train.json below it")
    return out


def trend(scores: np.ndarray) -> tuple[float, float]:
    """Mean score of the last fifth of the episodes and of the fifth before it."""
    k = max(1, len(scores) // 5)
    return float(scores[-k:].mean()), float(scores[-2 * k : -k].mean()) if len(scores) >= 2 * k else float(
        "nan"
    )


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[window:] - c[:-window]) / window


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="bench-bidding --output folder")
    ap.add_argument("--figure", type=Path, default=None, help="write the plot here (png)")
    args = ap.parse_args()
    data = curves(args.root)
    print("| regime | bidder | seed | episodes | mean, last fifth | mean, fifth before | change |")
    print("|---|---|---|---|---|---|---|")
    for regime, by_bidder in data.items():
        for bidder, by_seed in by_bidder.items():
            for seed, s in by_seed.items():
                last, before = trend(s)
                print(
                    f"| {regime} | {bidder} | {seed} | {len(s)} | {last:.1f} | {before:.1f} | {last / before - 1:+.0%} |"
                )
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.4), squeeze=False)
        for ax, (regime, by_bidder) in zip(axes[0], data.items(), strict=True):
            for colour, (bidder, by_seed) in zip(("tab:blue", "tab:orange"), by_bidder.items(), strict=False):
                for i, s in enumerate(by_seed.values()):
                    w = max(5, len(s) // 20)
                    ax.plot(
                        np.arange(w, len(s) + 1),
                        running_mean(s, w),
                        color=colour,
                        alpha=0.8,
                        label=bidder if i == 0 else None,
                    )
            ax.set_title(regime)
            ax.set_xlabel("training episode")
            ax.set_ylabel("episode score (running mean)")
            ax.legend()
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
