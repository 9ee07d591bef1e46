"""figures: the README's figures, made on the tiny synthetic world and a small ad market in about a minute.

Writes ``<output>/code_tree.png`` (the semantic-ID tree of the tiny world, ``onesearch.plots.plot_code_tree``),
``<output>/hr_at_k.png`` (generator, cascade and popularity on its search requests, ``onesearch.plots.plot_hr``)
and ``<output>/bidding.png`` (three heuristics and a small Decision Transformer on the same unseen markets,
``bidding.plots.plot_bidders``): the same helpers, settings and figures as notebooks 01-03. Run it with
``make figures`` or ``python -m pipelines figures --output docs/figures``; models and trajectories go to a
temporary folder, the figures are also logged to the MLflow run.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from bidding.data import load_trajectories
from bidding.dt import DTConfig, DTTrainConfig, train_dt
from bidding.evaluate import EvalConfig, compare
from bidding.plots import plot_bidders
from onesearch.data.registry import load_dataset
from onesearch.plots import plot_code_tree, plot_hr
from onesearch.retrieval import hr_curve
from onesearch.tokenizer.pipeline import tokenize
from onesearch.tokenizer.report import code_tree
from pipelines import bench_search, simulate, tracking
from simulators.bidders import FixedBidder, OnlineLPBidder, PIDBidder
from simulators.market import MarketConfig

JOB = "figures"
FIGURES = ("code_tree.png", "hr_at_k.png", "bidding.png")


@dataclass(frozen=True)
class Config:
    """Settings of the figures job."""

    output: str = "docs/figures"
    """Folder the PNGs are written to (created if missing)."""
    seed: int = 0
    """Seed of the tokenizer, the models and the markets."""


PRESETS = {"default": Config(), "tiny": Config()}

MARKET = MarketConfig(impressions=20_000, n_steps=24, n_advertisers=12, n_categories=4)
"""The small market of notebook 03."""


def _log(m: str) -> None:
    print(f"[{JOB}] {m}", file=sys.stderr, flush=True)


def code_tree_figure(path: Path, seed: int) -> Path:
    """The khqe code tree of the tiny synthetic world (the tokenize job's tiny settings)."""
    ds = load_dataset("synthetic-tiny")
    res = tokenize(ds, "khqe", codebook_sizes=(16, 16), pq_codes=16, seed=seed)
    plot_code_tree(code_tree(res.table), f"{ds.name}: khqe semantic IDs, {res.table.n_items} items", path)
    return path


def hr_figure(path: Path, work: Path, seed: int) -> Path:
    """HR@K of the generator, the cascade and popularity on the tiny world's search requests."""
    tiny = bench_search.PRESETS["tiny"]
    trainer = replace(
        tiny.trainer,
        task="search",
        output=str(work / "generators"),
        tokenizer_dir=str(work / "tokenizers"),
        train=replace(tiny.trainer.train, seed=seed),
    )
    built = bench_search.build_systems(
        replace(tiny, systems=("generative", "cascade", "popularity"), trainer=trainer)
    )
    curves = {n: hr_curve(s.retrieve(built.test, 50).items, built.target) for n, s in built.systems.items()}
    plot_hr(curves, f"{built.dataset.name}, search: HR@K on {built.test.size} test requests", path)
    return path


def bidding_figure(path: Path, work: Path, seed: int) -> Path:
    """Score by budget, pacing and CPA over the day of three heuristics and a small DT (notebook 03)."""
    sim = replace(
        simulate.PRESETS["tiny"],
        market=MARKET,
        periods=20,
        part_periods=20,
        policies=("fixed", "pid", "pacing", "lp"),
        progress=False,
        seed=seed,
        output=str(work / "offline"),
    )
    simulate.main(sim)
    dt, _ = train_dt(
        load_trajectories(sim.output),
        DTConfig(context=8, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_steps=MARKET.n_steps),
        DTTrainConfig(steps=300, batch_size=32, warmup=30, seed=seed),
    )
    evaluation = EvalConfig(
        periods=3, budget_ratios=(0.5, 0.75, 1.0, 1.25, 1.5), slots=(0, 5), test_seed=seed
    )
    bidders = {
        "fixed": lambda: FixedBidder(1.0),
        "pid": lambda: PIDBidder(),
        "onlinelp": lambda: OnlineLPBidder(n_steps=MARKET.n_steps),
        "dt": lambda: dt,
    }
    plot_bidders(compare(bidders, MARKET, evaluation, curves=True), evaluation.budget_ratios, path)
    return path


def main(cfg: Config) -> dict:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    with tracking.job_run(JOB, cfg) as run, tempfile.TemporaryDirectory(prefix="onesearch-figures-") as d:
        work = Path(d)
        _log("semantic-ID tree")
        paths = [code_tree_figure(out / FIGURES[0], cfg.seed)]
        _log("generator against cascade (trains both)")
        paths.append(hr_figure(out / FIGURES[1], work, cfg.seed))
        _log("bidders (simulates a small market, trains a small Decision Transformer)")
        paths.append(bidding_figure(out / FIGURES[2], work, cfg.seed))
        for p in paths:
            tracking.log_file(p)
        return {"figures": [str(p) for p in paths], "mlflow_run_id": run.info.run_id}
