"""train-generator: train the generative retriever on a dataset's purchases (recommend) or search log (search).

Reads the semantic IDs of ``--tokenizer`` (a tokenize output folder, or a method name whose output is looked up
under ``--tokenizer-dir`` and made with the tokenize job when missing), trains with early stopping on validation
recall@10, and writes a bundle folder (checkpoint + SID table + query vocabulary) that ``bench-generative`` and
``score`` accept as ``--model``. An interrupted run resumes from its work folder when started again with the same
settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from onesearch.data.dataset import Dataset
from onesearch.data.registry import load_dataset
from onesearch.model import generator as G
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import (
    Examples,
    Splits,
    catalogue_examples,
    item_purchase_counts,
    item_word_tokens,
    query_texts,
    recommend_examples,
    search_examples,
)
from onesearch.model.text import QueryTokenizer
from onesearch.model.train import (
    TrainConfig,
    distributed,
    exposure_meta,
    train,
    tune_dense_weight,
    tune_exposure,
    tune_popularity_weight,
)
from onesearch.tokenizer.sid import SID_META_FILE, SIDTable
from pipelines import tokenize, tracking
from pipelines.config import flatten
from pipelines.pyfunc import log_generator_model

JOB = "train-generator"
TASK_NAMES = ("recommend", "search")


@dataclass(frozen=True)
class Config:
    """Settings of the train-generator job."""

    dataset: str = "scientific"
    """Dataset name or path (see prepare-data)."""
    task: str = "recommend"
    """recommend (history → next purchase) or search (query + history → purchased item)."""
    tokenizer: str = "khqe"
    """Semantic IDs: a tokenize output folder, or a method (khqe, rqkmeans, rqvae, index:<variant>)."""
    tokenizer_dir: str = "artifacts/tokenizers"
    """Where tokenize outputs are looked up (and made when missing) for a method name."""
    model_size: str = "base"
    """Generator size preset: tiny, small or base."""
    dropout: float | None = None
    """Dropout rate of the generator, in [0, 1) (unset: the size preset's, 0.1)."""
    item_embeddings: bool = False
    """Add a learned per-item embedding to the short-term history tokens (the bundle's name gets -ie)."""
    mix_recommend: bool = False
    """search task: also train on the recommend examples (one model for both tasks)."""
    dense_head: bool = False
    """Add the dense head (an item vector from the decoder, scored against every item; the beam's items and its
    nearest ones ranked by one combined score, whose weight is picked on validation; the bundle's name gets -dh)."""
    dense_words: int = 0
    """search task, with --dense-head: item vectors also read the item's first N title and category word tokens,
    embedded with the query tokens' embeddings, so queries and items share one word space and an item never bought
    gets a vector from its words (0 = off; the bundle's name gets -dwN)."""
    popularity_prior: bool = False
    """Rank the final candidates by score − w · log(1 + training purchases), w picked on validation as the largest
    whose recall@10 is within one paired standard error of the best (so the long tail and cold items are not
    buried by popularity validation cannot justify; the bundle's name gets -pp)."""
    tail_budget: float = 0.0
    """With --popularity-prior: long-tail and new-item exposure. Each page of 10 results takes the candidates with
    the highest probability (calibrated on validation) plus a boost for long-tail items and a further one for items
    never bought, and shows them in order of probability. The tail boost is the largest whose validation
    recall@10 stays at least (1 − this budget) times the best, the cold boost the largest whose recall@10 on the
    requests for items bought in training stays so (0 = off; e.g. 0.01 gives up at most 1% of the hits to each;
    the bundle's name gets -te)."""
    catalogue_queries: int = 0
    """search task: add up to N queries made from each catalogue item's own text (title; category words; category
    and title words), empty history, the item as target, so items never bought are reachable (0 = off; the
    bundle's name gets -cqN)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and evaluation settings."""
    output: str = "artifacts/generators"
    """Folder for <dataset>/<task>-<tokenizer>-<size>-s<seed>/ (the bundle)."""
    resume: bool = True
    """Continue an interrupted run of the same settings from its work folder (False: start over)."""


PRESETS = {
    "base": Config(),
    "tiny": Config(
        dataset="synthetic-tiny",
        model_size="tiny",
        tokenizer_dir="artifacts/tokenizers",
        train=TrainConfig(batch_size=64, epochs=3, warmup_steps=10, patience=0, eval_beam=10, progress=False),
    ),
    "small": Config(model_size="small"),
}


def resolve_tokenizer(
    cfg_dataset: str, ds: Dataset, tokenizer: str, tokenizer_dir: str
) -> tuple[SIDTable, str]:
    """The SID table named by ``tokenizer`` and its folder; runs the tokenize job when a method has no output.

    A table records what it was fitted on (``fitted_on.json``: dataset, data fingerprint, settings). One fitted on
    other data is refused, whether named by folder or found in the cache; a cached table of a method is also
    refused when its settings are not the ones this run would fit, or when it has no record (made before
    records existed: run tokenize again, or name its folder to use it anyway).
    """
    path = Path(tokenizer)
    if (path / SID_META_FILE).exists():
        _check_fitted_on(path, ds, None)
        return SIDTable.load(path), str(path)
    if path.exists() or "/" in tokenizer:
        raise FileNotFoundError(
            f"--tokenizer {tokenizer}: folder has no {SID_META_FILE} (not a tokenize output)"
        )
    folder = Path(tokenizer_dir) / ds.name / tokenizer.replace(":", "_")
    want = tokenize.Config(dataset=cfg_dataset, method=tokenizer, output=tokenizer_dir)
    if not (folder / SID_META_FILE).exists():
        print(f"[{JOB}] no {tokenizer} IDs under {folder}; running tokenize", file=sys.stderr, flush=True)
        tokenize.main(want)
    _check_fitted_on(folder, ds, want)
    return SIDTable.load(folder), str(folder)


def _check_fitted_on(folder: Path, ds: Dataset, want: tokenize.Config | None) -> None:
    """Refuse a SID table fitted on other data (or, for a cached method table, with other settings)."""
    rec_file = folder / tokenize.FITTED_ON_FILE
    if not rec_file.is_file():
        if want is None:
            return  # a folder named explicitly, from before records existed: the user's choice
        raise ValueError(
            f"cached semantic IDs {folder} do not record what they were fitted on ({tokenize.FITTED_ON_FILE} "
            f"is missing); run `tokenize --dataset {want.dataset} --method {want.method}` again, or pass the "
            f"folder as --tokenizer to use it as it is"
        )
    try:
        rec = json.loads(rec_file.read_text())
        got_ds, got_fp, got_set = rec["dataset"], rec["data_fingerprint"], rec["settings"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{rec_file}: not a fitted-on record ({e})") from None
    here = ds.fingerprint()
    if got_ds != ds.name or got_fp != here:
        raise ValueError(
            f"semantic IDs {folder} were fitted on dataset {got_ds!r} (fingerprint {str(got_fp)[:12]}), not on "
            f"this run's {ds.name!r} (fingerprint {here[:12]}): other data or another split; "
            f"run tokenize on this dataset"
        )
    wanted = None if want is None else tokenize.table_settings(want, ds.items.height)
    if wanted is not None and got_set != wanted:
        diff = {k: (got_set.get(k), v) for k, v in wanted.items() if got_set.get(k) != v}
        raise ValueError(
            f"cached semantic IDs {folder} were fitted with other settings than this run would use "
            f"(setting: (there, here)) {diff}; pass the folder as --tokenizer to use them, or remove it"
        )


@dataclass
class Prepared:
    ds: Dataset
    table: SIDTable
    table_dir: str
    vocab: QueryTokenizer | None
    splits: Splits
    model_cfg: G.GeneratorConfig
    item_tokens: np.ndarray | None = None
    """The dense head's item word tokens (--dense-words), SID-table row order."""
    item_purchases: np.ndarray | None = None
    """Training purchases per item (--popularity-prior), SID-table row order."""


def prepare(cfg: Config) -> Prepared:
    """Load the data and IDs, fit the query vocabulary, build the examples of the task."""
    if cfg.task not in TASK_NAMES:
        raise ValueError(f"--task must be one of {TASK_NAMES}, got {cfg.task!r}")
    if cfg.model_size not in G.PRESETS:
        raise ValueError(f"--model-size must be one of {sorted(G.PRESETS)}, got {cfg.model_size!r}")
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.catalogue_queries < 0:
        raise ValueError(f"--catalogue-queries must be >= 0, got {cfg.catalogue_queries}")
    if cfg.catalogue_queries and cfg.task != "search":
        raise ValueError("--catalogue-queries needs --task search (a recommend-only model reads no query)")
    if not 0 <= cfg.tail_budget < 1:
        raise ValueError(f"--tail-budget must be in [0, 1), got {cfg.tail_budget}")
    if cfg.tail_budget and not cfg.popularity_prior:
        raise ValueError(
            "--tail-budget needs --popularity-prior (its purchase counts say which items are head)"
        )
    if cfg.dense_words < 0:
        raise ValueError(f"--dense-words must be >= 0, got {cfg.dense_words}")
    if cfg.dense_words and not cfg.dense_head:
        raise ValueError("--dense-words feeds the dense head: add --dense-head")
    if cfg.dense_words and cfg.task != "search":
        raise ValueError("--dense-words embeds item words with the query vocabulary: it needs --task search")
    ds = load_dataset(cfg.dataset)
    table, table_dir = resolve_tokenizer(cfg.dataset, ds, cfg.tokenizer, cfg.tokenizer_dir)
    size = replace(G.PRESETS[cfg.model_size], item_embeddings=cfg.item_embeddings, dense_head=cfg.dense_head)
    if cfg.dropout is not None:
        size = replace(size, dropout=cfg.dropout)
    vocab = QueryTokenizer.fit(query_texts(ds)) if cfg.task == "search" else None
    model_cfg = G.with_data_shape(size, table.codebook_sizes, 0 if vocab is None else vocab.vocab_size)
    model_cfg = replace(
        model_cfg,
        dense_text_tokens=cfg.dense_words,
        popularity_prior=cfg.popularity_prior,
    )
    H, Q = model_cfg.max_history, model_cfg.max_query_tokens
    if vocab is not None:
        splits = search_examples(ds, table, vocab, H, Q, cfg.mix_recommend)
        if cfg.catalogue_queries:
            cat = catalogue_examples(ds.items, table, vocab, cfg.catalogue_queries, H, Q, cfg.train.seed)
            splits = replace(splits, train=Examples.concat([splits.train, cat]))
    else:
        splits = recommend_examples(ds, table, H, Q)
    tokens = item_word_tokens(ds.items, table, vocab, cfg.dense_words) if cfg.dense_words else None
    counts = item_purchase_counts(ds, table, cfg.task) if cfg.popularity_prior else None
    return Prepared(ds, table, table_dir, vocab, splits, model_cfg, tokens, counts)


def run_name(cfg: Config) -> str:
    tok = Path(cfg.tokenizer).name if "/" in cfg.tokenizer else cfg.tokenizer.replace(":", "_")
    flags = ("-ie" if cfg.item_embeddings else "") + ("-dh" if cfg.dense_head else "")
    flags += f"-dw{cfg.dense_words}" if cfg.dense_words else ""
    flags += "-pp" if cfg.popularity_prior else ""
    flags += "-te" if cfg.tail_budget else ""
    flags += f"-cq{cfg.catalogue_queries}" if cfg.catalogue_queries else ""
    return f"{cfg.task}-{tok}-{cfg.model_size}{flags}-s{cfg.train.seed}"


def _settings_hash(cfg: Config, p: Prepared) -> str:
    d = flatten(replace(cfg, resume=True, train=replace(cfg.train, progress=True)))
    d["sid_hash"] = p.table.content_hash()
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _join_process_group(cfg: Config) -> tuple[int, int]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join its process group: nccl when training on CUDA, else gloo.
    Returns (rank, world size); (0, 1) when run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist = torch.distributed
    if world > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return distributed()


def _worker(cfg: Config, rank: int) -> dict:
    """A process of rank > 0 under torchrun: it trains its share of every batch beside rank 0, which alone logs,
    evaluates for the record and writes the bundle."""
    torch.distributed.barrier()  # rank 0 has prepared the data (running tokenize if the IDs were missing)
    p = prepare(cfg)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    model = G.Generator(p.model_cfg, p.table.codes, p.item_tokens, p.item_purchases)
    work = Path(cfg.output) / p.ds.name / ".work" / f"{run_name(cfg)}-{_settings_hash(cfg, p)}"
    res = train(model, p.splits, _trie(p), cfg.train, work)
    return {"rank": rank, "steps": res.steps}


def main(cfg: Config) -> dict:
    """Train, save the bundle, log it to MLflow; return the validation metrics and where the model is.

    Under ``torchrun --nproc-per-node N -m pipelines train-generator ...`` the N processes share every batch
    (DistributedDataParallel, :func:`onesearch.model.train.train`); rank 0 does everything else."""
    rank, world = _join_process_group(cfg)
    if rank > 0:
        return _worker(cfg, rank)
    with tracking.job_run(JOB, cfg) as run:
        p = prepare(cfg)
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        model = G.Generator(p.model_cfg, p.table.codes, p.item_tokens, p.item_purchases)
        name = run_name(cfg)
        out = Path(cfg.output) / p.ds.name / name
        work = Path(cfg.output) / p.ds.name / ".work" / f"{name}-{_settings_hash(cfg, p)}"
        if not cfg.resume and work.exists():
            shutil.rmtree(work)
        if world > 1:
            torch.distributed.barrier()  # the others may read the prepared data (and the state to resume) now
        sizes = p.splits.sizes()
        print(
            f"[{JOB}] {p.ds.name} {cfg.task}: {sizes} examples, {p.table.n_items} items, "
            f"model {G.param_count_str(model.n_params())} params",
            file=sys.stderr,
            flush=True,
        )
        tracking.log_metrics({"examples": sizes, "params": model.n_params()})

        def on_eval(entry: dict) -> None:
            tracking.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])

        res = train(model, p.splits, _trie(p), cfg.train, work, on_eval=on_eval)
        if world > 1:
            print(f"[{JOB}] trained on {world} processes sharing each batch", file=sys.stderr, flush=True)
        tuned = {}  # decoding weights picked on validation after training
        if res.model.cfg.dense_head:
            w, grid = tune_dense_weight(res.model, p.splits.valid, _trie(p), cfg.train)
            tuned = {"dense_weight": w, "dense_grid": {str(k): v for k, v in grid.items()}}
            print(f"[{JOB}] dense weight {w} (validation recall@10 by weight: "
                  f"{ {k: round(v['recall@10'], 4) for k, v in grid.items()} })", file=sys.stderr, flush=True)  # fmt: skip
            tracking.log_metrics({"dense_weight": w})
        if res.model.cfg.popularity_prior:
            w, grid = tune_popularity_weight(res.model, p.splits.valid, _trie(p), cfg.train)
            tuned |= {"popularity_weight": w, "popularity_grid": {str(k): v for k, v in grid.items()}}
            print(f"[{JOB}] popularity weight {w} (validation recall@10 by weight, difference to the best ± its "
                  f"paired standard error: { {k: (round(v['recall'], 4), round(v['diff'], 4), round(v['se'], 4)) for k, v in grid.items()} })",
                  file=sys.stderr, flush=True)  # fmt: skip
            tracking.log_metrics({"popularity_weight": w})
        if cfg.tail_budget:
            e = tune_exposure(res.model, p.splits.valid, _trie(p), cfg.train, budget=cfg.tail_budget)
            tuned |= exposure_meta(e)
            print(f"[{JOB}] tail boost {e.tail_boost}, cold boost {e.cold_boost}, score temperature "
                  f"{e.score_temperature} (validation recall@10 and tail share of the top 10 by tail boost: "
                  f"{ {k: (round(v['recall@10'], 4), round(v['tail_share'], 4)) for k, v in e.tail_grid.items()} }; "
                  f"recall@10 and cold share by cold boost: "
                  f"{ {k: (round(v['recall@10'], 4), round(v['cold_share'], 4)) for k, v in e.cold_grid.items()} })",
                  file=sys.stderr, flush=True)  # fmt: skip
            tracking.log_metrics({"tail_boost": e.tail_boost, "cold_boost": e.cold_boost,
                                  "score_temperature": e.score_temperature})  # fmt: skip
        bundle = GeneratorBundle(res.model.cpu(), p.table, p.vocab, {})
        source = Path(cfg.dataset).expanduser()
        extra = {
            "dataset": p.ds.name,
            "dataset_source": str(source.resolve()) if source.exists() else cfg.dataset,
            "data_fingerprint": p.ds.fingerprint(),
            "task": cfg.task,
            "tasks": ["search", "recommend"] if cfg.task == "search" and cfg.mix_recommend else [cfg.task],
            "tokenizer": cfg.tokenizer,
            "model_size": cfg.model_size,
            "train_minutes": res.minutes,
            "valid": res.best,
            **tuned,
        }
        bundle.save(out, extra=extra)
        shutil.rmtree(work, ignore_errors=True)
        tracking.log_json(res.history, "history.json")
        tracking.log_artifacts(out, "generator")
        pyfunc = log_generator_model(
            out
        )  # the same bundle as an MLflow pyfunc model (batch scoring, serving)
        result = {
            "model_uri": str(out.resolve()),
            "mlflow_model_uri": f"runs:/{run.info.run_id}/generator",
            "mlflow_pyfunc_uri": pyfunc.model_uri,
            "dataset": p.ds.name,
            "task": cfg.task,
            "tokenizer": cfg.tokenizer,
            "params": model.n_params(),
            "train_minutes": res.minutes,
            "steps": res.steps,
            "stopped": res.stopped,
            "examples": sizes,
            **{f"val_{k}": v for k, v in res.best.items()},
            **tuned,
            "mlflow_run_id": run.info.run_id,
        }
        tracking.log_metrics({k: v for k, v in result.items() if k.startswith(("val_", "train_minutes"))})
        return result


def _trie(p: Prepared):
    from onesearch.decode import SIDTrie

    return SIDTrie.build(p.table.codes, p.table.codebook_sizes)


def main_nested(cfg: Config, section: str = "trainer") -> dict:
    """:func:`main` for a job that nests these settings as ``section`` (align, bench-generative, bench-search): the
    options its errors name are given as that job spells them (``--task`` -> ``--trainer.task``)."""
    try:
        return main(cfg)
    except ValueError as e:
        raise ValueError(_OPTION.sub(lambda m: f"--{section}.{m.group(1)}", str(e))) from e


_OPTION = re.compile(r"(?<![\w.-])--([a-z][a-z0-9-]*)")
