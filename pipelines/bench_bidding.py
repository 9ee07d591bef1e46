"""bench-bidding: train the offline and online bidders, then judge every bidder on the same unseen markets.

Offline bidders (bc, iql, cql, dt, vdt) train on the trajectories of ``--trajectories`` (made with ``simulate`` first
when empty); online bidders (ppo, sac) train in the env; heuristics (fixed, pid, onlinelp) need no training. Every
bidder then plays the test periods of ``bidding.evaluate`` (unseen seeds, budget ratios 50-150%, several advertiser
slots, the same heuristic competitors for all). The last stdout line is
``{"bidders": {name: {"score_by_budget", "score_mean", "cpa_violation_rate", "roi", "cac", "budget_used",
"train_minutes", "act_ms"}}, "reference": {"hindsight_alpha": {...}}}``; MLflow gets the table (``bidders.md``)
and plots of score by budget, budget pacing and cost per conversion over the day. The reference (``--no-hindsight``
skips it) is not a bidder: the best constant α of each play, chosen after playing it with every α of
``--hindsight-grid``, so it knows the day in advance; each bidder's share of it says how much headroom is left.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from bidding.data import load_trajectories
from bidding.dt import (
    DTBidder,
    DTConfig,
    DTTrainConfig,
    ValueConfig,
    check_plan_weight,
    plan_episodes,
    train_dt,
)
from bidding.evaluate import HINDSIGHT_GRID, EvalConfig, evaluate, hindsight_alpha
from bidding.offline import OfflineConfig, PolicyBidder, train_offline
from bidding.online import OnlineConfig, SB3Bidder, train_online
from bidding.plots import plot_bidders
from pipelines import simulate, tracking
from simulators.bidders import FixedBidder, OnlineLPBidder, PIDBidder

JOB = "bench-bidding"
BIDDERS = ("fixed", "pid", "onlinelp", "bc", "iql", "cql", "ppo", "sac", "dt", "vdt")


@dataclass(frozen=True)
class Config:
    """Settings of the bench-bidding job."""

    trajectories: str = ""
    """Folder of trajectory parts to train on; empty = run simulate (settings below) into <output>/offline."""
    simulate: simulate.Config = field(default_factory=simulate.Config)
    """Data generation when --trajectories is empty; its market is also the test market."""
    bidders: tuple[str, ...] = BIDDERS
    """Bidders to train and judge."""
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    """Test periods, budget ratios and advertiser slots."""
    dt: DTConfig = field(default_factory=DTConfig)
    """Decision Transformer shape (vdt uses it with the vdt_* settings below)."""
    dt_train: DTTrainConfig = field(default_factory=DTTrainConfig)
    """Decision Transformer training (dt and vdt)."""
    value: ValueConfig = field(default_factory=ValueConfig)
    """The learned value of vdt."""
    vdt_epsilon: float = 0.0
    """Exploration range of vdt: β ∈ [1 − ε, 1 + ε] (0 = no action exploration)."""
    vdt_value_target: bool = True
    """vdt asks at every step for the return its learned state value expects (DTConfig.value_target)."""
    vdt_plan_weight: float = 0.75
    """vdt pulls each bid towards the constant α its plan value V(s, λ) rates best from the current state, as
    α_DT^(1 − w) · λ*^w (DTConfig.plan_weight; 0 = off; chosen on validation periods, docs/bidding.md)."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """BC / IQL / CQL settings (the algorithm is set per bidder)."""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    """PPO / SAC settings (the algorithm is set per bidder)."""
    hindsight: bool = True
    """Also compute the hindsight reference (best constant α per play, chosen after seeing the play; not a bidder):
    how much any bidder could still gain. Costs len(hindsight_grid) plays per play."""
    hindsight_grid: tuple[float, ...] = HINDSIGHT_GRID
    """The constant α values the hindsight reference tries."""
    output: str = "artifacts/bidding"
    """Folder for the trained bidders (and the trajectories when simulated here)."""


_TINY_MARKET = simulate.PRESETS["tiny"].market
PRESETS = {
    "default": Config(),
    "tiny": Config(
        simulate=replace(simulate.PRESETS["tiny"], periods=6, policies=("fixed", "pid", "pacing", "lp")),
        evaluation=EvalConfig(periods=2, budget_ratios=(0.5, 1.0, 1.5), slots=(0, 3)),
        dt=DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=_TINY_MARKET.n_steps),
        dt_train=DTTrainConfig(steps=40, batch_size=16, warmup=5),
        value=ValueConfig(critic_steps=40, critic_hidden=32, target_steps=40, plan_steps=40),
        offline=OfflineConfig(hidden=32, steps=40, batch_size=64),
        online=OnlineConfig(timesteps=128, impressions=2_000),
        hindsight_grid=(0.1, 0.3, 1.0),
    ),
}


HEURISTICS = {
    "fixed": lambda n_steps: FixedBidder(1.0),
    "pid": lambda n_steps: PIDBidder(),
    "onlinelp": lambda n_steps: OnlineLPBidder(n_steps=n_steps),
}
"""The heuristic bidders judged, with their default settings."""


def main(cfg: Config) -> dict:
    unknown = sorted(set(cfg.bidders) - set(BIDDERS))
    if unknown or not cfg.bidders:
        raise ValueError(f"unknown bidders {unknown or '(none given)'}; choose from {', '.join(BIDDERS)}")
    guided = [
        flag
        for flag, on in (
            ("--explore-epsilon", cfg.dt.explore_epsilon > 0),
            ("--value-target", cfg.dt.value_target),
            ("--plan-weight", cfg.dt.plan_weight > 0),
        )
        if on
    ]
    if guided:
        raise ValueError(
            f"{', '.join(guided)} would make the plain dt value-guided too; "
            "set vdt's guidance with --vdt-epsilon, --vdt-value-target and --vdt-plan-weight"
        )
    check_plan_weight(cfg.vdt_plan_weight, "--vdt-plan-weight")  # before anything trains
    out = Path(cfg.output)
    market = cfg.simulate.market
    with tracking.job_run(JOB, cfg):
        needs_data = {"bc", "iql", "cql", "dt", "vdt"} & set(cfg.bidders)
        episodes = None
        if needs_data:
            folder = cfg.trajectories
            if not folder:
                folder = str(out / "offline")
                simulate.main(replace(cfg.simulate, output=folder))
            episodes = load_trajectories(folder)
            if episodes.n_steps != market.n_steps:
                raise ValueError(
                    f"{folder}: trajectories have {episodes.n_steps} steps, the test market {market.n_steps}"
                )
            if episodes.rules is not None and episodes.rules != market.rules:
                raise ValueError(
                    f"{folder}: trajectories were played under other auction rules ({episodes.rules}) than the "
                    f"test market's ({market.rules})"
                )
            if "vdt" in cfg.bidders and cfg.vdt_plan_weight > 0:  # before anything trains, not after an hour
                plan_episodes(episodes, cfg.value.plan_policies)
        results: dict[str, dict] = {}
        for name in cfg.bidders:
            print(f"[bench-bidding] {name}: training", file=sys.stderr)
            train_minutes = 0.0
            if name in HEURISTICS:
                make = (lambda f: lambda: f(market.n_steps))(HEURISTICS[name])
            else:
                if name in ("bc", "iql", "cql"):
                    ocfg = replace(cfg.offline, algorithm=name, alpha_max=market.rules.alpha_max)
                    bidder, stats = train_offline(episodes, ocfg)
                    bidder = PolicyBidder.load(bidder.save(out / name))
                elif name in ("dt", "vdt"):
                    dcfg = replace(
                        cfg.dt,
                        max_steps=max(cfg.dt.max_steps, episodes.n_steps),
                        alpha_max=market.rules.alpha_max,
                    )
                    if name == "vdt":
                        dcfg = replace(
                            dcfg,
                            explore_epsilon=cfg.vdt_epsilon,
                            value_target=cfg.vdt_value_target,
                            plan_weight=cfg.vdt_plan_weight,
                        )
                    bidder, stats = train_dt(
                        episodes, dcfg, cfg.dt_train, cfg.value if name == "vdt" else None
                    )
                    bidder = DTBidder.load(bidder.save(out / name))
                else:
                    bidder, stats = train_online(market, replace(cfg.online, algorithm=name))
                    bidder = SB3Bidder.load(bidder.save(out / name))
                train_minutes = stats["train_minutes"]
                tracking.log_metrics(
                    {
                        f"train.{name}.{k}": v
                        for k, v in stats.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                    }
                )
                make = (lambda b: lambda: b)(bidder)
            print(f"[bench-bidding] {name}: evaluating", file=sys.stderr)
            res = evaluate(make, market, cfg.evaluation, curves=True)
            res["train_minutes"] = train_minutes
            results[name] = res
            tracking.log_metrics(_numbers(name, res))
        reference: dict[str, dict] = {}
        if cfg.hindsight:
            print("[bench-bidding] hindsight reference: best constant α per play", file=sys.stderr)
            reference["hindsight_alpha"] = hindsight_alpha(market, cfg.evaluation, cfg.hindsight_grid)
            tracking.log_metrics(_numbers("hindsight_alpha", reference["hindsight_alpha"]))
        table = markdown(results, cfg.evaluation.budget_ratios, reference)
        tracking.log_text(table, "bidders.md")
        plot_bidders(results, cfg.evaluation.budget_ratios, out / "bidding.png")
        tracking.log_file(out / "bidding.png")
        tracking.log_json({"bidders": results, "reference": reference}, "bench.json")
        print(table, file=sys.stderr)
    keep = (
        "score_by_budget",
        "score_mean",
        "cpa_violation_rate",
        "roi",
        "cac",
        "budget_used",
        "train_minutes",
        "act_ms",
    )
    return {"bidders": {n: {k: r[k] for k in keep} for n, r in results.items()}, "reference": reference}


def _numbers(prefix: str, figures: dict) -> dict[str, float]:
    """The numeric figures of ``figures`` (not lists, not booleans) as MLflow metrics named ``prefix.key``."""
    return {
        f"{prefix}.{k}": v
        for k, v in figures.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def markdown(results: dict[str, dict], ratios, reference: dict[str, dict] | None = None) -> str:
    """The results as a markdown table, best mean score first; then the hindsight reference, if given, with each
    bidder's mean score as a share of it."""
    head = "| bidder | " + " | ".join(f"score @{r:.0%}" for r in ratios)
    head += " | mean | CPA violations | ROI | CAC / target | budget used | train min | act ms |"
    lines = [head, "|" + "---|" * (len(ratios) + 8)]
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["score_mean"]):
        cells = [f"{v:.2f}" for v in r["score_by_budget"]]
        cells += [
            f"{r['score_mean']:.2f}",
            f"{r['cpa_violation_rate']:.0%}",
            f"{r['roi']:.2f}",
            f"{r['cac']:.2f}",
            f"{r['budget_used']:.0%}",
            f"{r['train_minutes']:.1f}",
            f"{r['act_ms']:.2f}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ref = (reference or {}).get("hindsight_alpha")
    if ref:
        cells = [f"{v:.2f}" for v in ref["score_by_budget"]]
        cells += [
            f"{ref['score_mean']:.2f}",
            f"{ref['cpa_violation_rate']:.0%}",
            "",
            "",
            f"{ref['budget_used']:.0%}",
        ]
        lines.append("| *hindsight best constant α (reference)* | " + " | ".join(cells) + " | | |")
        if ref["score_mean"] > 0:
            shares = ", ".join(
                f"{n} {r['score_mean'] / ref['score_mean']:.0%}"
                for n, r in sorted(results.items(), key=lambda kv: -kv[1]["score_mean"])
            )
            lines.append("")
            lines.append(f"Mean score as a share of the hindsight reference: {shares}.")
    return "\n".join(lines)
