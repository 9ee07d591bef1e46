"""bench-search: every system side by side on the same split, candidates and machine, in one run.

Systems: ``generative`` (trained here with the train-generator settings, or ``--model``), ``cascade`` (BM25 + dense +
co-purchase recall, LightGBM LambdaRank), ``cascade_recall`` (its recall stage alone), ``sasrec`` and
``popularity``; with ``--aligned`` also ``generative_aligned``, the run's own ``generative`` aligned by the align
job's method (reward model + list-wise DPO, ``docs/alignment.md``). Each is asked for its top 50 on every test
request; items are bucketed by training purchases (head = top 20% of the purchased items by count, tail = the other
purchased items, cold = never purchased in training).
Every metric is also given without the requests whose target is cold (``warm_hr@10``, ...). ``--cold-items N``
makes N catalogue items cold first (they keep their text and lose their training purchases,
:mod:`onesearch.data.cold`) and reports ``cold_items_hr@10`` on the test requests for them.
Prints ``{"dataset", "task", "systems": {name: {"hr@10", "ndcg@10", "mrr@10", "hr@50", "warm_hr@10", ...,
"tail_hr@10", "cold_hr@10", "cold_requests", "tail_exposure@10", "qps_batch", "p50_ms", "p99_ms"}}}`` and logs a
markdown table and an HR@K plot.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from onesearch.align.dpo import PRESETS as ALIGN_PRESETS
from onesearch.align.dpo import AlignConfig
from onesearch.align.pipeline import align_bundle, output_dir
from onesearch.cascade.ranker import Cascade, CascadeConfig, CascadeRecall
from onesearch.cascade.sasrec import SASRec, SASRecConfig
from onesearch.cascade.sources import BM25Source, Catalog, CovisitSource, DenseSource, Popularity
from onesearch.data import schema as S
from onesearch.data.cold import candidates as cold_candidates
from onesearch.data.cold import make_cold
from onesearch.data.dataset import Dataset
from onesearch.data.registry import load_dataset
from onesearch.data.splits import training_purchases
from onesearch.metrics import target_ranks
from onesearch.model.bundle import GenerativeRetriever, GeneratorBundle
from onesearch.plots import plot_hr
from onesearch.retrieval import (
    Requests,
    Retriever,
    holdout_fold,
    hr_curve,
    item_buckets,
    side_by_side_metrics,
    split_requests,
    throughput,
    training_sequences,
)
from onesearch.tokenizer.embeddings import cf_embeddings, item_texts, text_embeddings
from pipelines import tracking, train_generator

JOB = "bench-search"
SYSTEMS = ("generative", "cascade", "cascade_recall", "sasrec", "popularity")
METRICS = ("hr@10", "ndcg@10", "mrr@10", "hr@50", "warm_hr@10", "warm_ndcg@10", "warm_mrr@10", "tail_hr@10",
           "cold_hr@10", "cold_items_hr@10", "tail_exposure@10", "qps_batch", "p50_ms", "p99_ms")  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Settings of the bench-search job."""

    model: str = ""
    """Generator bundle (folder or MLflow URI) to evaluate; empty = train one with the trainer settings."""
    trainer: train_generator.Config = field(default_factory=train_generator.Config)
    """Generator training settings (dataset and task apply to every system)."""
    beam: int = 50
    """Generator beam width (at least 50 for hr@50)."""
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    """Cascade settings."""
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    """SASRec settings."""
    systems: tuple[str, ...] = SYSTEMS
    """Systems to run."""
    test_requests: int = 0
    """Evaluate on a seeded sample of this many test requests (0 = all)."""
    latency_requests: int = 200
    """Single requests timed for p50 / p99 latency."""
    qps_requests: int = 1024
    """Requests decoded at batch 64 for throughput."""
    aligned: bool = False
    """Also align the run's generator (reward model + list-wise DPO) and add the system generative_aligned."""
    align: AlignConfig = field(default_factory=AlignConfig)
    """Alignment settings (with --aligned)."""
    cold_items: float = 0.0
    """Make items cold before anything trains: N purchased items with text when >= 1, that share of them when in
    (0, 1), e.g. 0.1; they keep their text and lose every training purchase (0 = off). Adds cold_items_hr@10."""
    cold_seed: int = 0
    """Seed of the choice of cold items."""
    data_dir: str = "artifacts/datasets"
    """Where the dataset with cold items is written (<name>-cold<N>-s<seed>/), for the generator's training."""


PRESETS = {
    "base": Config(),
    "tiny": Config(
        trainer=train_generator.PRESETS["tiny"],
        beam=50,
        cascade=CascadeConfig(
            per_source=50, candidates=100, rounds=30, early_stopping=10, train_requests=2000
        ),
        sasrec=SASRecConfig(d_model=16, epochs=4, eval_every=2, max_minutes=1),
        latency_requests=10,
        qps_requests=64,
        align=ALIGN_PRESETS["tiny"],
    ),
}


def _text(ds) -> tuple[np.ndarray | None, object]:
    """Item text embeddings and a query encoder (MiniLM), or (None, None) for a text-free catalogue, whose dense
    source then uses the behaviour embedding of the training purchases and has no query side."""
    if not ds.has_text:
        return None, None
    emb, _ = text_embeddings(item_texts(ds.items))

    def encode(queries: list[str]) -> np.ndarray:
        return text_embeddings(queries, cache_dir=None, batch_size=256, progress=False)[0]

    return emb, encode


def _latency(system, req, k: int, n: int) -> tuple[float, float]:
    times = []
    for i in range(min(n, req.size)):
        t0 = time.perf_counter()
        system.retrieve(req.take([i]), k)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def markdown(systems: dict[str, dict]) -> str:
    head = "| system | " + " | ".join(METRICS) + " |"
    sep = "|---" * (len(METRICS) + 1) + "|"
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) and v < 10 else f"{v:.1f}")  # noqa: E731
    rows = [f"| {n} | " + " | ".join(fmt(m.get(c)) for c in METRICS) + " |" for n, m in systems.items()]
    return "\n".join([head, sep, *rows])


class Systems(NamedTuple):
    """Everything bench-search evaluates: the test split, the catalogue's buckets and the built systems."""

    dataset: Dataset
    train: pl.DataFrame
    """Training purchases of the task (no held-out target among them)."""
    test: Requests
    target: np.ndarray
    """(B,) target item id per test request."""
    catalog: Catalog
    buckets: np.ndarray
    """Head / tail / cold bucket per item of ``catalog.item_ids``."""
    systems: dict[str, Retriever]
    """The built (and trained) systems, by name."""
    details: dict[str, dict]
    """Per system, what training reported (the generator's model URI, the ranker's best round, ...)."""
    cold_ids: np.ndarray | None = None
    """The items made cold with ``--cold-items`` (None without)."""


def _log(m: str) -> None:
    print(f"[{JOB}] {m}", file=sys.stderr, flush=True)


def check(cfg: Config) -> None:
    """Refuse unknown systems and a beam too short for hr@50."""
    unknown = set(cfg.systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown system(s) {sorted(unknown)}; choose from {SYSTEMS}")
    if cfg.aligned and "generative" not in cfg.systems:
        raise ValueError("--aligned aligns the run's generator: --systems must include generative")
    if "generative" in cfg.systems and cfg.beam < 50:
        raise ValueError(f"--beam must be at least 50 for hr@50, got {cfg.beam}")
    if cfg.cold_items < 0 or (cfg.cold_items >= 1 and cfg.cold_items != int(cfg.cold_items)):
        raise ValueError(f"--cold-items must be 0, a share in (0, 1) or a whole count, got {cfg.cold_items}")


def with_cold_items(cfg: Config) -> tuple[Config, np.ndarray | None]:
    """With ``--cold-items``: make the items cold, save that dataset under ``--data-dir`` and point every system
    (the generator's training included) at it; returns the new settings and the cold item ids."""
    if not cfg.cold_items:
        return cfg, None
    ds = load_dataset(cfg.trainer.dataset)
    n = cfg.cold_items
    if n < 1:
        n = max(1, round(n * len(cold_candidates(ds))))
    cold_ds, ids = make_cold(ds, int(n), cfg.cold_seed)
    path = cold_ds.save(Path(cfg.data_dir) / cold_ds.name)
    _log(f"{len(ids)} items made cold (seed {cfg.cold_seed}): dataset {cold_ds.name} written to {path}")
    return replace(cfg, trainer=replace(cfg.trainer, dataset=str(path))), ids


def build_systems(cfg: Config) -> Systems:
    """Load the dataset and its test split, then build and train every system of ``cfg.systems``.

    The generator is trained with ``cfg.trainer`` (a train-generator run) unless ``cfg.model`` names one.
    """
    check(cfg)
    cfg, cold_ids = with_cold_items(cfg)
    t = cfg.trainer
    ds = load_dataset(t.dataset)
    req = split_requests(ds, t.task)
    test, target = req["test"]
    if cfg.test_requests and cfg.test_requests < test.size:
        pick = np.sort(np.random.default_rng(0).choice(test.size, cfg.test_requests, replace=False))
        test, target = test.take(pick), target[pick]
    buys = ds.interactions.filter(pl.col(S.EVENT) == "purchase")
    train = training_purchases(buys, ds.search_log, t.task)  # no held-out target of the task among them
    catalog = Catalog.build(ds.items, train)
    buckets = item_buckets(catalog.item_ids, train[S.ITEM_ID].to_numpy())
    _log(f"{ds.name} {t.task}: {test.size} test requests, buckets "
        f"head/tail/cold = {[int((buckets == b).sum()) for b in range(3)]} items")  # fmt: skip

    systems, extra = {}, {}
    if "popularity" in cfg.systems:
        systems["popularity"] = Popularity(catalog)
    if {"cascade", "cascade_recall"} & set(cfg.systems):
        text_emb, encode = _text(ds)
        bm25 = BM25Source(catalog)

        def cascade_on(purchases: pl.DataFrame) -> Cascade:
            cat = Catalog.build(ds.items, purchases)
            emb = text_emb if text_emb is not None else cf_embeddings(purchases, cat.item_ids)
            return Cascade(
                cat, bm25, DenseSource(cat, emb, encode), CovisitSource(cat, purchases), cfg.cascade
            )

        cascade = cascade_on(train)
        if "cascade_recall" in cfg.systems:
            systems["cascade_recall"] = CascadeRecall(cascade)
        if "cascade" in cfg.systems:
            _log("training the cascade's LightGBM ranker on a time holdout of the training period")
            t0 = time.perf_counter()
            fold, fold_req, fold_target = holdout_fold(ds, t.task, train)
            extra["cascade"] = cascade.fit(
                fold_req, fold_target, *req["valid"], features_from=cascade_on(fold)
            )
            extra["cascade"]["train_minutes"] = (time.perf_counter() - t0) / 60
            systems["cascade"] = cascade
    if "sasrec" in cfg.systems:
        _log("training SASRec")
        sas = SASRec(catalog, cfg.sasrec)
        extra["sasrec"] = sas.fit(training_sequences(train), *req["valid"])
        systems["sasrec"] = sas
    if "generative" in cfg.systems:
        path = tracking.resolve_model(cfg.model) if cfg.model else train_generator.main_nested(t)["model_uri"]
        bundle = GeneratorBundle.load(path)
        if bundle.meta.get("dataset") != ds.name or t.task not in bundle.meta.get("tasks", [t.task]):
            raise ValueError(
                f"{path}: a {bundle.meta.get('tasks')} model of {bundle.meta.get('dataset')!r}; this run is "
                f"{t.task} on {ds.name!r}"
            )
        systems["generative"] = GenerativeRetriever(bundle, beam=cfg.beam)
        extra["generative"] = {"model_uri": path, "train_minutes": bundle.meta.get("train_minutes")}
        if cfg.aligned:
            _log("aligning the generator (reward model + list-wise DPO)")
            out = output_dir(t.output, ds.name, path, cfg.align.seed)
            res = align_bundle(cfg.align, path, ds, out, on_eval=tracking.log_step_metrics)
            systems["generative_aligned"] = GenerativeRetriever(GeneratorBundle.load(out), beam=cfg.beam)
            extra["generative_aligned"] = {k: v for k, v in res.items() if k != "history"}
    return Systems(ds, train, test, target, catalog, buckets, systems, extra, cold_ids)


def main(cfg: Config) -> dict:
    check(cfg)
    t = cfg.trainer
    with tracking.job_run(JOB, cfg) as run:
        built = build_systems(cfg)
        ds, test, target, systems = built.dataset, built.test, built.target, built.systems
        results, curves = {}, {}
        for name in [s for s in (*SYSTEMS, "generative_aligned") if s in systems]:
            sysm = systems[name]
            _log(f"evaluating {name}")
            got = sysm.retrieve(test, 50)
            m = side_by_side_metrics(got.items, target, built.buckets, built.catalog.item_ids)
            m["cold_items_hr@10"] = None
            if built.cold_ids is not None:
                on = np.isin(target, built.cold_ids)
                r = target_ranks(got.items, target)[on]
                m["cold_items_hr@10"] = float(((r >= 1) & (r <= 10)).mean()) if on.any() else None
                m["cold_items_requests"] = int(on.sum())
            sample = test.take(range(min(cfg.qps_requests, test.size)))
            m["qps_batch"] = throughput(sysm, sample, 50, 64)
            m["p50_ms"], m["p99_ms"] = _latency(sysm, test, 50, cfg.latency_requests)
            results[name] = m
            curves[name] = hr_curve(got.items, target)
        table = markdown(results)
        print("\n" + table + "\n", file=sys.stderr, flush=True)
        tracking.log_text(table, "systems.md")
        with tempfile.TemporaryDirectory() as d:
            title = f"{ds.name}, {t.task}: HR@K on {test.size} test requests"
            plot_hr(curves, title, Path(d) / "hr_at_k.png")
            tracking.log_file(Path(d) / "hr_at_k.png")
        result = {
            "dataset": ds.name,
            "task": t.task,
            "test_requests": test.size,
            "systems": results,
            "details": built.details,
            "mlflow_run_id": run.info.run_id,
        }
        tracking.log_metrics({"systems": results})
        tracking.log_json(result, "bench.json")
        return result
