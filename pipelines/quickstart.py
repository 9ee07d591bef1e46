"""quickstart: the end-to-end demo on embedded data: prepare the data, give every item a semantic ID, train a tiny
generative retriever on the synthetic world and evaluate it on the held-out test requests; then simulate a small ad
market, train a small Decision Transformer bidder on its trajectories and judge it against PID."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from bidding.dt import DTConfig, DTTrainConfig
from bidding.evaluate import EvalConfig
from onesearch.data.dataset import Dataset
from onesearch.data.registry import shared_data_dir
from onesearch.data.schema import ITEM_ID, REQUEST_ID
from onesearch.scoring import search_requests, write_requests
from pipelines import (
    bench_bidding,
    bench_generative,
    prepare_data,
    score,
    tokenize,
    tracking,
    train_generator,
)
from simulators.market import MarketConfig

JOB = "quickstart"


@dataclass(frozen=True)
class Config:
    """Settings of the quickstart."""

    world: str = "tiny"
    """Synthetic world preset to generate: tiny, small, medium or large."""
    scientific: str = "scientific-mini"
    """Scientific data: 'scientific-mini' (the vendored slice), 'scientific' (the full set in ../shared/data),
    'auto' (the full set when ../shared/data is there, else the slice), or 'none'."""
    output: str = "artifacts/quickstart"
    """Folder for everything the quickstart writes."""
    seed: int = 0
    """Seed of the synthetic world."""
    tokenizer: str = "khqe"
    """Semantic-ID tokenizer to run on each dataset ('none' to skip)."""
    generator: str = "search"
    """Task of the tiny generator trained on the synthetic world: search, recommend, or 'none' to skip."""
    generator_epochs: int = 8
    """Training epochs of that generator."""
    bidding: bool = True
    """Simulate a small ad market, train a small Decision Transformer bidder on it, and judge it against PID."""


PRESETS = {
    "default": Config(),
    "full": Config(world="small", scientific="auto"),
    "tiny": Config(generator_epochs=2, bidding=False),
}
"""default: every half on the tiny world and the vendored Scientific slice, in about a minute; full: the small world
(5,000 items) and the full Scientific set when it is there (several minutes); tiny: a quicker check (2 epochs, no bidding)."""

_COLUMNS = ("users", "items", "interactions", "search_requests", "items_without_interactions")
_SID_COLUMNS = ("levels", "collision_rate", "unique_rate", "purity_l1", "seconds")
_GEN_COLUMNS = (
    "task",
    "params",
    "recall@10",
    "ndcg@10",
    "mrr@10",
    "valid_rate",
    "decode_qps",
    "train_minutes",
)


_BID_COLUMNS = ("score_mean", "violation_rate", "budget_used", "train_minutes", "act_ms")


def _sample_requests(dataset_dir: str, path: Path, n: int = 200) -> Path:
    """The first ``n`` search requests of a prepared dataset as score input (history = purchases before them)."""
    ds = Dataset.load(dataset_dir)
    req = search_requests(ds.interactions, ds.search_log.sort(REQUEST_ID).head(n))
    write_requests(req, path, ds.name, ds.items[ITEM_ID])
    return path


def _bidding_config(output: Path, seed: int) -> bench_bidding.Config:
    """A budget-bound market small enough to simulate, train on and judge in well under a minute."""
    tiny = bench_bidding.PRESETS["tiny"]
    market = MarketConfig(n_steps=24, n_advertisers=12, n_categories=4)
    return replace(
        tiny,
        regimes=("budget-bound",),
        scale=0.04,  # 20,000 impressions
        bidders=("pid", "dt"),
        seeds=1,
        simulate=replace(
            tiny.simulate, market=market, periods=40, part_periods=40, seed=seed, progress=False
        ),
        evaluation=EvalConfig(periods=4, rotate=6, test_seed=seed),
        tuning_periods=2,
        tuning_rotate=6,
        tuning_seed=seed + 1,
        dt=DTConfig(context=8, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_steps=market.n_steps),
        dt_train=DTTrainConfig(steps=400, batch_size=32, warmup=40, seed=seed),
        output=str(output),
    )


def _cell(v: object) -> str:
    if isinstance(v, bool) or v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(rows: dict[str, dict], columns: tuple[str, ...] = _COLUMNS, first: str = "dataset") -> str:
    head = [first, *columns]
    body = [[name, *[_cell(r.get(c)) for c in columns]] for name, r in rows.items()]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *map(line, body)])


@contextlib.contextmanager
def _step(what: str, seconds: dict[str, float]) -> Iterator[None]:
    """Announce a step on stderr, and record and print how long it took."""
    print(f"[quickstart] {what} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    seconds[what] = time.perf_counter() - t0
    print(f"[quickstart] {what}: {seconds[what]:.1f} s", file=sys.stderr, flush=True)


def main(cfg: Config) -> dict:
    """Prepare each dataset as its own nested prepare-data run and print a summary table."""
    scientific = cfg.scientific
    if scientific == "auto":
        scientific = "scientific" if shared_data_dir() is not None else "scientific-mini"
    datasets = [f"synthetic-{cfg.world}"] + ([] if scientific == "none" else [scientific])
    out = Path(cfg.output)
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()
    with tracking.job_run(JOB, cfg) as run:
        stats = {}
        for name in datasets:
            with _step(f"preparing {name}", seconds):
                stats[name] = prepare_data.main(
                    prepare_data.Config(dataset=name, output=str(out / "data"), seed=cfg.seed)
                )
        sids = {}
        if cfg.tokenizer != "none":
            for name, st in stats.items():
                with _step(f"tokenizing {name} with {cfg.tokenizer}", seconds):
                    sids[name] = tokenize.main(
                        tokenize.Config(
                            dataset=st["output"],
                            method=cfg.tokenizer,
                            output=str(out / "tokenizers"),
                        )
                    )
        gen = {}
        world = datasets[0]
        if cfg.generator != "none" and world in sids:
            tiny = train_generator.PRESETS["tiny"]
            trainer = replace(
                tiny,
                dataset=stats[world]["output"],
                task=cfg.generator,
                tokenizer=sids[world]["output"],
                output=str(out / "generators"),
                train=replace(tiny.train, epochs=cfg.generator_epochs),
            )
            with _step(f"training and judging a tiny {cfg.generator} generator on {world}", seconds):
                gen[world] = bench_generative.main(
                    replace(
                        bench_generative.PRESETS["tiny"], trainer=trainer, qps_beams=(20,), qps_requests=256
                    )
                )
        scores = None
        if gen:
            with _step("scoring a small batch of search requests", seconds):
                requests = _sample_requests(stats[world]["output"], out / "requests.parquet")
                scores = score.main(
                    score.Config(
                        model=gen[world]["model_uri"],
                        input=str(requests),
                        output=str(out / "scores"),
                        progress=False,
                    )
                )
        bids = {}
        if cfg.bidding:
            with _step("simulating a small ad market and training a Decision Transformer bidder", seconds):
                bench = bench_bidding.main(_bidding_config(out / "bidding", cfg.seed))
            bids = bench["regimes"]["budget-bound"]["bidders"]
        table = _table(stats)
        if sids:
            table += "\n\nSemantic IDs (" + cfg.tokenizer + ")\n\n" + _table(sids, _SID_COLUMNS)
        if gen:
            table += "\n\nGenerative retriever (tiny model, test split, beam 10)\n\n" + _table(
                gen, _GEN_COLUMNS
            )
        if bids:
            table += "\n\nBidders on a small simulated market (unseen periods; score = CPA-penalised conversions)\n\n"
            table += _table(bids, _BID_COLUMNS, first="bidder")
        seconds["total"] = time.perf_counter() - t_start
        table += "\n\nTime per step\n\n" + "\n".join(f"- {k}: {v:.1f} s" for k, v in seconds.items())
        tracking.log_text(table, "summary.md")
        print("\n" + table + "\n")
        print(f"Tables written under {out / 'data'}/<dataset>/*.parquet")
        if sids:
            print(f"Semantic-ID tables under {out / 'tokenizers'}/<dataset>/{cfg.tokenizer}/sid.parquet")
        if gen:
            print(f"Generator bundle: {gen[world]['model_uri']}")
        if scores:
            print(
                f"Scored {scores['rows_scored']} of {scores['rows_in']} requests ({scores['rows_failed']} bad) "
                f"from {out / 'requests.parquet'}: ranked items in {scores['output']}/part-*.parquet"
            )
        print(f"Open the runs: {tracking.ui_command()}\n", flush=True)
        return {
            "datasets": {k: {c: v.get(c) for c in (*_COLUMNS, "output")} for k, v in stats.items()},
            "semantic_ids": {
                k: {c: v.get(c) for c in (*_SID_COLUMNS, "sid_hash", "output")} for k, v in sids.items()
            },
            "generator": {k: {c: v.get(c) for c in (*_GEN_COLUMNS, "model_uri")} for k, v in gen.items()},
            "bidders": bids,
            "scores": scores,
            "mlflow_run_id": run.info.run_id,
            "mlflow_ui": tracking.ui_command(),
            "step_seconds": seconds,
        }
