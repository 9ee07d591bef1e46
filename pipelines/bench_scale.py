"""bench-scale: how each stage's cost grows with the catalogue, from 10k to 1M synthetic items.

For each catalogue size in ``--sizes`` a synthetic world is generated (:func:`scaled_world`: users, categories and
brands grow with the items as in the presets) and every stage runs in its own process, so that its peak memory is
its own (``VmHWM`` of that process, interpreter and imports included):

- ``prepare``: generate the world and write its tables (``Dataset.save``);
- ``tokenize``: the tokenize job, khqe on behaviour (PPMI-SVD) embeddings (MiniLM on 1M titles would take ~28 min
  and measure the text model, not the tokenizer);
- ``trie``: the valid-ID trie of the SID table (its in-memory size is the artifact);
- ``train``: the train-generator job, search task, ``--train-steps`` optimiser steps, validation on a sample;
- ``decode``: constrained beam search at ``--beam`` over ``--decode-requests`` test requests in batches of
  ``--decode-batch``: requests per second (after one warm-up batch) and the valid rate (the share of returned IDs
  that are a real item's ID);
- ``score``: the score job over ``--score-requests`` test requests written as its input file;
- ``cascade_recall``: the classic cascade's recall (BM25, dense on the behaviour embedding, co-purchase, popular),
  built from the catalogue and training purchases, then run on ``--recall-requests`` test requests.

``seconds`` is the stage's own work (process start and imports excluded); ``artifact_mb`` what it leaves on disk
(the trie: its tables in memory). Each stage's figures are kept in ``<output>/<size>/<stage>.json`` and reused by
a re-run with the same settings (``--no-resume`` redoes them), so an interrupted run continues where it stopped.
The last stdout line is ``{"sizes": {"<items>": {"<stage>": {"seconds", "peak_rss_mb", "artifact_mb"}}},
"decode_qps": {"<items>": qps}, "valid_rate": {"<items>": rate}, ...}``; the log-log plot of cost against catalogue
size goes to ``<output>/bench_scale.png`` (and to ``--figure`` when given).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipelines import tracking

JOB = "bench-scale"
STAGES = ("prepare", "tokenize", "trie", "train", "decode", "score", "cascade_recall")
RESULT_KEYS = ("seconds", "peak_rss_mb", "artifact_mb")


@dataclass(frozen=True)
class Config:
    """Settings of the bench-scale job."""

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    """Catalogue sizes (items) to measure, each at least 1,000."""
    output: str = "artifacts/bench-scale"
    """Folder for <size>/ (data, IDs, model, scores, the stages' figures) and bench_scale.png."""
    train_steps: int = 200
    """Optimiser steps of the generator (the same at every size: the cost per step is what grows)."""
    model_size: str = "small"
    """Generator size preset (tiny, small, base)."""
    batch_size: int = 256
    """Training examples per step."""
    eval_examples: int = 512
    """Validation requests decoded after training."""
    beam: int = 20
    """Beam width of the decode and score stages."""
    decode_batch: int = 256
    """Requests per decoding batch."""
    decode_requests: int = 2048
    """Test requests decoded for the throughput (a seeded sample)."""
    score_requests: int = 4096
    """Test requests written as the score job's input."""
    recall_requests: int = 512
    """Test requests the cascade's recall runs on."""
    seed: int = 0
    """Seed of the synthetic worlds, the samples and training."""
    resume: bool = True
    """Reuse a stage's kept figures (and outputs) when its settings are unchanged (False: redo every stage)."""
    figure: str = ""
    """Also write the cost plot here (e.g. docs/figures/bench_scale.png)."""


PRESETS = {
    "default": Config(),
    "tiny": Config(
        sizes=(1_000, 2_000),
        train_steps=4,
        model_size="tiny",
        batch_size=64,
        eval_examples=32,
        beam=10,
        decode_batch=64,
        decode_requests=128,
        score_requests=128,
        recall_requests=64,
    ),
}


def scaled_world(n_items: int, seed: int = 0):
    """The synthetic world of ``n_items`` items: the ``large`` preset's shape with users (a tenth of the items, at
    least 2,000), leaf categories (one per 500 items, at least 60) and brands (one per 50 items, 150..1,200) scaled
    to the catalogue, 8 sessions per user."""
    from onesearch.data.synthetic import PRESETS as WORLDS

    return replace(
        WORLDS["large"],
        n_items=n_items,
        n_users=max(2_000, n_items // 10),
        n_categories=max(60, n_items // 500),
        n_brands=min(1_200, max(150, n_items // 50)),
        seed=seed,
    )


def _dir_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _log(msg: str) -> None:
    print(f"[{JOB}] {msg}", file=sys.stderr, flush=True)


# -- the stages, each run in its own process ------------------------------------------------------------------


class _Paths:
    def __init__(self, cfg: Config, size: int):
        self.root = Path(cfg.output) / str(size)
        self.data = self.root / "data"
        self.tokenizers = self.root / "tokenizers"
        self.generators = self.root / "generators"
        self.requests = self.root / "requests.parquet"
        self.scores = self.root / "scores"

    def _one(self, pattern: str, where: Path, stage: str) -> Path:
        found = sorted(p for p in where.glob(pattern) if p.is_dir())
        if len(found) != 1:
            raise FileNotFoundError(f"expected one {pattern} under {where}, found {len(found)}: run the {stage} "
                                    f"stage again (--no-resume)")  # fmt: skip
        return found[0]

    @property
    def tok(self) -> Path:
        return self._one("*/khqe", self.tokenizers, "tokenize")

    def model(self) -> Path:
        return self._one("*/search-*", self.generators, "train")


def _test_sample(ds, table, vocab, mc, n: int, seed: int):
    """A seeded sample of ``n`` test search examples."""
    import numpy as np

    from onesearch.model.data import search_examples

    splits = search_examples(ds, table, vocab, mc.max_history, mc.max_query_tokens)
    ex = splits.test
    pick = np.sort(np.random.default_rng(seed).choice(ex.size, min(n, ex.size), replace=False))
    return ex.take(pick)


def _stage_prepare(cfg: Config, size: int, p: _Paths) -> dict:
    from onesearch.data.synthetic import generate_world

    for old in (p.data, p.tokenizers, p.generators, p.scores):  # what was made from another world
        if old.exists():
            shutil.rmtree(old)
    t0 = time.perf_counter()
    ds = generate_world(scaled_world(size, cfg.seed))
    ds.save(p.data)
    return {
        "seconds": time.perf_counter() - t0,
        "artifact_mb": _dir_mb(p.data),
        **{k: v for k, v in ds.stats().items() if k in ("users", "items", "interactions", "search_requests")},
    }


def _stage_tokenize(cfg: Config, size: int, p: _Paths) -> dict:
    from pipelines import tokenize

    t0 = time.perf_counter()
    res = tokenize.main(
        tokenize.Config(
            dataset=str(p.data), method="khqe", embedding="cf", seed=cfg.seed, output=str(p.tokenizers)
        )
    )
    out = Path(res["output"])
    return {
        "seconds": time.perf_counter() - t0,
        "artifact_mb": _dir_mb(out),
        "embed_seconds": res.get("embed_seconds"),
        "fit_seconds": res.get("seconds"),
        "codebook_sizes": res["codebook_sizes"],
        "output": str(out),
    }


def _stage_trie(cfg: Config, size: int, p: _Paths) -> dict:
    from onesearch.decode import SIDTrie
    from onesearch.tokenizer.sid import SIDTable

    table = SIDTable.load(p.tok)
    t0 = time.perf_counter()
    trie = SIDTrie.build(table.codes, table.codebook_sizes)
    seconds = time.perf_counter() - t0
    nbytes = sum(t.element_size() * t.numel() for ts in (trie.valid, trie.keys, trie.child) for t in ts)
    return {"seconds": seconds, "artifact_mb": nbytes / 2**20, "nodes_per_level": trie.nodes_per_level()}


def _stage_train(cfg: Config, size: int, p: _Paths) -> dict:
    from onesearch.model.train import TrainConfig
    from pipelines import train_generator

    if p.generators.exists():  # one model per size: the decode and score stages read it
        shutil.rmtree(p.generators)
    t0 = time.perf_counter()
    res = train_generator.main(
        train_generator.Config(
            dataset=str(p.data),
            task="search",
            tokenizer=str(p.tok),
            model_size=cfg.model_size,
            output=str(p.generators),
            resume=False,
            train=TrainConfig(
                batch_size=cfg.batch_size,
                max_steps=cfg.train_steps,
                warmup_steps=max(1, cfg.train_steps // 10),
                patience=0,
                eval_examples=cfg.eval_examples,
                eval_beam=cfg.beam,
                seed=cfg.seed,
                progress=False,
            ),
        )
    )
    return {
        "seconds": time.perf_counter() - t0,
        "artifact_mb": _dir_mb(Path(res["model_uri"])),
        "steps": res["steps"],
        "params": res["params"],
        "train_minutes": res["train_minutes"],
        "val_recall@10": res.get("val_recall@10"),
    }


def _stage_decode(cfg: Config, size: int, p: _Paths) -> dict:
    import numpy as np
    import torch

    from onesearch.data.registry import load_dataset
    from onesearch.device import pick_device
    from onesearch.model.beam import beam_search
    from onesearch.model.bundle import GeneratorBundle

    bundle = GeneratorBundle.load(p.model())
    ds = load_dataset(str(p.data))
    mc = bundle.model.cfg
    ex = _test_sample(ds, bundle.table, bundle.vocab, mc, cfg.decode_requests, cfg.seed)
    device = pick_device("auto")
    model, trie = bundle.model.to(device).eval(), bundle.trie.to(device)
    codes = torch.as_tensor(bundle.table.codes, device=device)
    B, n = cfg.decode_batch, ex.size
    valid, returned = 0, 0
    with torch.inference_mode():
        beam_search(model, ex.batch(np.arange(min(B, n))).to(device), trie, beam=cfg.beam)  # warm-up
        t0 = time.perf_counter()
        for s in range(0, n, B):
            out = beam_search(model, ex.batch(np.arange(s, min(s + B, n))).to(device), trie, beam=cfg.beam)
            hit = out.items >= 0
            same = (codes[out.items.clamp_min(0)] == out.codes).all(-1)
            valid += int((hit & same).sum())
            returned += out.items.numel()
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "artifact_mb": 0.0,
        "requests": n,
        "qps": n / seconds,
        "valid_rate": valid / returned,
        "device": str(device),
    }


def _stage_score(cfg: Config, size: int, p: _Paths) -> dict:
    import numpy as np
    import polars as pl

    from onesearch.data import schema as S
    from onesearch.data.dataset import Dataset
    from onesearch.data.splits import leave_one_out
    from onesearch.scoring import ScoreSettings, search_requests, write_requests
    from pipelines import score

    ds = Dataset.load(p.data)
    test = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP)).filter(pl.col(S.SPLIT) == "test")
    n = min(cfg.score_requests, test.height)
    pick = np.sort(np.random.default_rng(cfg.seed).choice(test.height, n, replace=False))
    req = search_requests(ds.interactions, test[pick])
    write_requests(req, p.requests, ds.name, ds.items[S.ITEM_ID])
    if p.scores.exists():
        shutil.rmtree(p.scores)
    t0 = time.perf_counter()
    res = score.main(
        score.Config(
            model=str(p.model()),
            input=str(p.requests),
            output=str(p.scores),
            settings=ScoreSettings(beam=cfg.beam, k=cfg.beam),
            chunk_rows=1024,
            progress=False,
        )
    )
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "artifact_mb": _dir_mb(p.scores),
        "rows_scored": res["rows_scored"],
        "rows_failed": res["rows_failed"],
        "requests_per_second": res["rows_scored"] / seconds,
    }


def _stage_cascade_recall(cfg: Config, size: int, p: _Paths) -> dict:
    import numpy as np
    import polars as pl

    from onesearch.cascade.ranker import Cascade, CascadeConfig, CascadeRecall
    from onesearch.cascade.sources import BM25Source, Catalog, CovisitSource, DenseSource
    from onesearch.data import schema as S
    from onesearch.data.dataset import Dataset
    from onesearch.data.splits import training_purchases
    from onesearch.retrieval import split_requests
    from onesearch.tokenizer.embeddings import cf_embeddings

    ds = Dataset.load(p.data)
    test, _ = split_requests(ds, "search")["test"]
    pick = np.sort(
        np.random.default_rng(cfg.seed).choice(test.size, min(cfg.recall_requests, test.size), replace=False)
    )
    test = test.take(pick)
    t0 = time.perf_counter()
    buys = ds.interactions.filter(pl.col(S.EVENT) == "purchase")
    train = training_purchases(buys, ds.search_log, "search")
    cat = Catalog.build(ds.items, train)
    emb = cf_embeddings(train, cat.item_ids)
    cascade = Cascade(cat, BM25Source(cat), DenseSource(cat, emb), CovisitSource(cat, train), CascadeConfig())
    build_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    CascadeRecall(cascade).retrieve(test, cfg.beam)
    recall_seconds = time.perf_counter() - t1
    m = cascade.covisit.m
    index_mb = (
        emb.nbytes + m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    ) / 2**20  # dense + co-purchase
    return {
        "seconds": build_seconds + recall_seconds,
        "artifact_mb": index_mb,
        "build_seconds": build_seconds,
        "recall_seconds": recall_seconds,
        "requests": test.size,
        "qps": test.size / recall_seconds,
    }


_RUNNERS = {
    "prepare": _stage_prepare,
    "tokenize": _stage_tokenize,
    "trie": _stage_trie,
    "train": _stage_train,
    "decode": _stage_decode,
    "score": _stage_score,
    "cascade_recall": _stage_cascade_recall,
}


def run_stage(cfg: Config, stage: str, size: int, result_file: str) -> None:
    """Run one stage in this process and write its figures, with its peak memory, to ``result_file``."""
    res = _RUNNERS[stage](cfg, size, _Paths(cfg, size))
    tracking.write_json({**res, "peak_rss_mb": peak_rss_mb()}, result_file)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` of /proc/self/status, the high-water mark of the
    memory map made at exec (``ru_maxrss`` would not do: a child's starts from its parent's size at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the job ---------------------------------------------------------------------------------------------------


def _digest(cfg: Config, size: int, stage: str) -> str:
    """What a stage's figures depend on: the settings (not where the plot goes, nor resume) at this size. A stage
    redone redoes every later one (``main``), since they read its outputs."""
    d = asdict(replace(cfg, figure="", resume=True, sizes=(size,)))
    d["stage"] = stage
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _child(cfg: Config, stage: str, size: int, result_file: Path) -> int:
    """Run a stage in a fresh interpreter (so that its peak memory is its own); its exit status."""
    code = (
        "import json, sys\n"
        "from pipelines.bench_scale import Config, run_stage\n"
        "c = json.loads(sys.argv[1])\n"
        "c['sizes'] = tuple(c['sizes'])\n"
        "run_stage(Config(**c), sys.argv[2], int(sys.argv[3]), sys.argv[4])\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    args = [sys.executable, "-c", code, json.dumps(asdict(cfg)), stage, str(size), str(result_file)]
    return subprocess.run(args, env=env, check=False).returncode


def check(cfg: Config) -> None:
    if not cfg.sizes:
        raise ValueError("--sizes: give at least one catalogue size")
    for n in cfg.sizes:
        if not isinstance(n, int) or n < 1_000:
            raise ValueError(f"--sizes: each size must be an integer of at least 1,000 items, got {n!r}")
    for name in ("train_steps", "batch_size", "eval_examples", "beam", "decode_batch", "decode_requests",
                 "score_requests", "recall_requests"):  # fmt: skip
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")


def main(cfg: Config) -> dict:
    """Run every stage at every size (each in its own process); return the cost table."""
    check(cfg)
    with tracking.job_run(JOB, cfg) as run:
        out = Path(cfg.output)
        sizes_res: dict[str, dict[str, dict]] = {}
        for size in cfg.sizes:
            root = out / str(size)
            root.mkdir(parents=True, exist_ok=True)
            row: dict[str, dict] = {}
            redo = not cfg.resume
            for stage in STAGES:
                kept_file = root / f"{stage}.json"
                digest = _digest(cfg, size, stage)
                if not redo and kept_file.is_file():
                    kept = json.loads(kept_file.read_text())
                    if kept.get("digest") == digest:
                        _log(f"{size} items: {stage} kept from an earlier run ({kept['seconds']:.1f} s)")
                        row[stage] = kept
                        continue
                redo = True  # a stage redone: every later stage reads its output, so they are redone too
                _log(f"{size} items: {stage} ...")
                tmp = root / f".{stage}.partial.json"
                t0 = time.perf_counter()
                rc = _child(cfg, stage, size, tmp)
                if rc != 0 or not tmp.is_file():
                    raise RuntimeError(
                        f"bench-scale: stage {stage} at {size} items failed (exit status {rc}); its error is above. "
                        f"Figures of the stages before it are kept in {root}"
                    )
                res = {
                    **json.loads(tmp.read_text()),
                    "wall_seconds": time.perf_counter() - t0,
                    "digest": digest,
                }
                tracking.write_json(res, kept_file)
                tmp.unlink()
                row[stage] = res
                _log(f"{size} items: {stage} {res['seconds']:.1f} s, peak {res['peak_rss_mb']:.0f} MiB, "
                     f"{res['artifact_mb']:.1f} MB")  # fmt: skip
            sizes_res[str(size)] = row
            tracking.log_metrics({f"{size}.{s}.{k}": row[s][k] for s in STAGES for k in RESULT_KEYS})
        result = {
            "sizes": {
                n: {s: {k: r[s][k] for k in RESULT_KEYS} for s in STAGES} for n, r in sizes_res.items()
            },
            "decode_qps": {n: r["decode"]["qps"] for n, r in sizes_res.items()},
            "valid_rate": {n: r["decode"]["valid_rate"] for n, r in sizes_res.items()},
            "score_qps": {n: r["score"]["requests_per_second"] for n, r in sizes_res.items()},
            "cascade_recall_qps": {n: r["cascade_recall"]["qps"] for n, r in sizes_res.items()},
            "details": sizes_res,
            "mlflow_run_id": run.info.run_id,
        }
        fig = out / "bench_scale.png"
        plot(result, fig)
        if cfg.figure:
            Path(cfg.figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig, cfg.figure)
        tracking.log_file(fig)
        tracking.log_json(result, "bench_scale.json")
        _log("\n" + markdown(result))
        return result


def markdown(result: dict) -> str:
    sizes = list(result["sizes"])
    head = "| stage | " + " | ".join(f"{int(n):,} items: s / peak MiB / MB" for n in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for s in STAGES:
        cells = [
            f"{r[s]['seconds']:.1f} / {r[s]['peak_rss_mb']:.0f} / {r[s]['artifact_mb']:.1f}"
            for r in (result["sizes"][n] for n in sizes)
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| decode req/s (valid rate) | " + " | ".join(
        f"{result['decode_qps'][n]:.0f} ({result['valid_rate'][n]:.3f})" for n in sizes) + " |")  # fmt: skip
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in result["sizes"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in STAGES:
        secs = [result["sizes"][str(n)][s]["seconds"] for n in sizes]
        mem = [result["sizes"][str(n)][s]["peak_rss_mb"] for n in sizes]
        axes[0].plot(sizes, secs, marker="o", label=s)
        axes[1].plot(sizes, mem, marker="o", label=s)
    for ax, what in zip(axes, ("seconds", "peak resident MiB"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue size (items)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("bench-scale: cost of each stage against catalogue size")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
