"""align: preference alignment of a search generator (reward model + list-wise DPO) from an SFT checkpoint.

Derives the interaction levels of the training search requests (:mod:`onesearch.align.levels`), trains the reward
model (LightGBM click and purchase propensities over the cascade ranker's features, plus query-item relevance) and
reports its held-out NDCG and AUCs on the validation requests, builds the preference lists (phase 1: the SFT
model's beams ranked by the reward; phase 2: the logged levels) and trains the list-wise DPO loss against the
frozen SFT model (:mod:`onesearch.align.dpo`). Writes an aligned bundle (same layout as train-generator's) that
``bench-generative``, ``bench-search --model`` and ``score`` accept. ``--model`` names the SFT bundle; without it
one is trained with the train-generator settings first. Prints ``{"model_uri", "sft_model_uri", "reward": {...},
"lists": {...}, "val_sft": {...}, "val_aligned": {...}, ...}``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from onesearch.align.dpo import PRESETS as ALIGN_PRESETS
from onesearch.align.dpo import (
    AlignConfig,
    align,
    eval_rows,
    fit_report,
    frozen_copy,
    level_lists,
    rerank_ndcg,
    reward_lists,
    score_rows,
    soft_reward_lists,
)
from onesearch.align.levels import CLICKED, LEVEL, PURCHASED_ELSEWHERE, derive_levels, level_counts
from onesearch.align.reward import RewardData, RewardModel
from onesearch.cascade.ranker import FEATURES, Cascade, CascadeConfig
from onesearch.cascade.sources import BM25Source, Catalog, CovisitSource, DenseSource
from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.registry import load_dataset
from onesearch.data.splits import leave_one_out, training_purchases
from onesearch.device import pick_device
from onesearch.model.beam import beam_search
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import search_examples
from onesearch.retrieval import Requests, holdout_fold, split_requests
from onesearch.tokenizer.embeddings import cf_embeddings, item_texts, text_embeddings
from pipelines import tracking, train_generator
from pipelines.config import flatten

JOB = "align"


@dataclass(frozen=True)
class Config:
    """Settings of the align job."""

    model: str = ""
    """SFT generator bundle (folder or MLflow URI) to align; empty = train one with the trainer settings."""
    trainer: train_generator.Config = field(default_factory=lambda: train_generator.Config(task="search"))
    """Generator training settings (dataset and task apply to the alignment; search only)."""
    align: AlignConfig = field(default_factory=AlignConfig)
    """Alignment settings."""
    output: str = "artifacts/aligned"
    """Folder for <dataset>/<SFT bundle name>-aligned-s<align seed>/ (the aligned bundle)."""


PRESETS = {
    "base": Config(),
    "tiny": Config(
        trainer=replace(train_generator.PRESETS["tiny"], task="search"),
        align=ALIGN_PRESETS["tiny"],
    ),
}


def _log(m: str) -> None:
    print(f"[{JOB}] {m}", file=sys.stderr, flush=True)


def _feature_cascade(ds: Dataset, purchases: pl.DataFrame, bm25: BM25Source, text) -> Cascade:
    """A cascade whose sources read ``purchases``: only its features are used (the reward model's inputs)."""
    text_emb, encode = text
    cat = Catalog.build(ds.items, purchases)
    emb = text_emb if text_emb is not None else cf_embeddings(purchases, cat.item_ids)
    return Cascade(cat, bm25, DenseSource(cat, emb, encode), CovisitSource(cat, purchases), CascadeConfig())


def _text(ds: Dataset):
    if not ds.has_text:
        return None, None
    emb, _ = text_embeddings(item_texts(ds.items), progress=False)

    def encode(queries: list[str]) -> np.ndarray:
        return text_embeddings(queries, cache_dir=None, batch_size=256, progress=False)[0]

    return emb, encode


def _pair_features(cascade: Cascade, req: Requests, item_ids: np.ndarray, batch: int = 256) -> np.ndarray:
    """(B, m, F) features of item ids (B, m) (-1 = none) per request."""
    rows = np.where(item_ids >= 0, [[cascade.catalog.row.get(int(i), -1) for i in r] for r in item_ids], -1)
    out = np.zeros((*rows.shape, len(FEATURES)), np.float32)
    for s in range(0, req.size, batch):
        idx = np.arange(s, min(s + batch, req.size))
        out[idx] = cascade.pair_features(req.take(idx), rows[idx])
    return out


def _levelled(levels: pl.DataFrame, order: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per request id of ``order``: its levelled item ids (N, M) (-1 = none) and their levels (N, M)."""
    per = levels.group_by(S.REQUEST_ID, maintain_order=True).agg(S.ITEM_ID, LEVEL)
    got = {r: (i, lv) for r, i, lv in per.iter_rows()}
    M = max((len(v[0]) for v in got.values()), default=1)
    items = np.full((len(order), M), -1, np.int64)
    lvl = np.full((len(order), M), -1, np.int64)
    for n, rid in enumerate(order):
        i, lv = got.get(rid, ([], []))
        items[n, : len(i)], lvl[n, : len(lv)] = i, lv
    return items, lvl


def _reward_data(X: np.ndarray, items: np.ndarray, lvl: np.ndarray) -> RewardData:
    """Reward data of levelled items (N, M) (-1 = none), their levels and their features (N, M, F)."""
    ok = items >= 0
    return RewardData.from_levels(X[ok], lvl[ok], ok.sum(1))


def align_bundle(
    cfg: AlignConfig, sft_path: str, ds: Dataset, out: str | Path, log_metrics: bool = True
) -> dict:
    """Align the SFT bundle at ``sft_path`` on ``ds``'s search log and write the aligned bundle to ``out``.

    Returns the reward model's held-out NDCG and AUCs, the list counts, the validation metrics of the SFT and the
    aligned model, and where the bundle is. Raises ``ValueError`` for a bundle of another dataset or task.
    """
    t0 = time.perf_counter()
    if ds.search_log is None:
        raise ValueError(f"dataset {ds.name!r} has no search log: alignment needs search requests")
    bundle = GeneratorBundle.load(sft_path)
    if bundle.meta.get("dataset") != ds.name or "search" not in bundle.meta.get("tasks", []):
        raise ValueError(
            f"{sft_path}: a {bundle.meta.get('tasks')} model of {bundle.meta.get('dataset')!r}; alignment needs a "
            f"search model of {ds.name!r}"
        )
    if bundle.vocab is None:
        raise ValueError(f"{sft_path}: the model reads no query (a recommend model); align a search model")
    device = pick_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    mcfg = bundle.model.cfg
    splits = search_examples(ds, bundle.table, bundle.vocab, mcfg.max_history, mcfg.max_query_tokens)
    req = split_requests(ds, "search")
    log = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP))
    train_log, valid_log = (log.filter(pl.col(S.SPLIT) == s) for s in ("train", "valid"))
    if train_log.height != splits.train.size or train_log.height != req["train"][0].size:
        raise RuntimeError("search examples and requests disagree on the training split (a bug)")

    vrows = eval_rows(splits.valid.size, cfg)
    if not len(vrows):
        raise ValueError(
            f"{splits.valid.size} validation requests: alignment needs some to evaluate on"
            + (
                " (--align.list-source valid keeps at most half of them for that)"
                if cfg.list_source == "valid"
                else ""
            )
        )

    # ---- levels and the reward model
    buys = ds.interactions.filter(pl.col(S.EVENT) == "purchase")
    train_buys = training_purchases(buys, ds.search_log, "search")
    inter = ds.interactions
    has_rid = inter[S.REQUEST_ID].null_count() < inter.height
    own = lambda part: (  # noqa: E731  the requests' own events plus the training purchases
        inter.filter(pl.col(S.REQUEST_ID).is_in(part[S.REQUEST_ID].implode())) if has_rid else inter.head(0)
    )
    lv_kw = dict(same_category=cfg.same_category, random=cfg.random_negatives,
                 purchased_elsewhere=cfg.purchased_elsewhere)  # fmt: skip

    logs_impressions = bool(inter.filter(pl.col(S.EVENT) == "impression").height)

    def levels_of(part: pl.DataFrame, cascade: Cascade | None = None, part_req: Requests | None = None):
        retrieved = None
        if cascade is not None and cfg.retrieved_negatives and not logs_impressions:
            # a uniform sample of the recall stage's candidates: negatives from its top only would teach the
            # reward that a high recall rank means "not bought"
            cands = cascade.recall(part_req, cascade.cfg.candidates).items
            retrieved = {}
            for rid, row in zip(part[S.REQUEST_ID].to_list(), cands, strict=True):
                row = row[row >= 0]
                take = min(cfg.retrieved_negatives, len(row))
                retrieved[rid] = row[np.sort(rng.choice(len(row), take, replace=False))] if take else row
        return derive_levels(
            ds.items, pl.concat([own(part), train_buys.select(inter.columns)]), part, rng, **lv_kw,
            retrieved=retrieved,
        )  # fmt: skip

    _log("reward model: features of the levelled pairs")
    text = _text(ds)
    bm25 = BM25Source(Catalog.build(ds.items, train_buys))
    full = _feature_cascade(ds, train_buys, bm25, text)
    fold, fold_req, fold_target = holdout_fold(ds, "search", train_buys)
    last = train_log.group_by(S.USER_ID, maintain_order=True).agg(pl.all().last())
    if not np.array_equal(last[S.ITEM_ID].to_numpy(), fold_target):
        raise RuntimeError("holdout fold and the last training requests disagree (a bug)")
    fold_cascade = _feature_cascade(ds, fold, bm25, text)
    fold_lv = levels_of(last, fold_cascade, fold_req)
    fold_items, fold_lvl = _levelled(fold_lv, last[S.REQUEST_ID].to_list())
    fold_X = _pair_features(fold_cascade, fold_req, fold_items)

    def fit_reward(users: np.ndarray) -> RewardModel:  # on the fold requests of these users (a mask)
        data = _reward_data(fold_X[users], fold_items[users], fold_lvl[users])
        return RewardModel(cfg.reward_rounds, cfg.reward_leaves, 0.05, cfg.click_weight, cfg.relevance_weight,
                           cfg.seed, cfg.reward_objective).fit(data)  # fmt: skip

    reward = fit_reward(np.ones(len(fold_items), dtype=bool))
    valid_lv = levels_of(valid_log, full, req["valid"][0])
    items, lvl = _levelled(valid_lv, valid_log[S.REQUEST_ID].to_list())
    reward_eval = reward.evaluate(_reward_data(_pair_features(full, req["valid"][0], items), items, lvl))
    reward_eval["train_levels"] = level_counts(fold_lv)
    reward_eval["valid_levels"] = level_counts(valid_lv)
    _log(f"reward model held-out (validation requests): {reward_eval}")

    # ---- preference lists over a sample of the training requests
    n = splits.train.size
    pick = np.arange(n) if not cfg.list_requests or cfg.list_requests >= n else np.sort(
        rng.choice(n, cfg.list_requests, replace=False))  # fmt: skip
    ex = splits.train.take(pick)
    sub_log = train_log[pick]
    model = bundle.model.to(device).eval()
    trie = bundle.trie
    table = bundle.table

    def beams_of(examples, width: int = cfg.list_beam) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The SFT model's beams (SID rows, log-probabilities, item ids) of each example."""
        beams = np.full((examples.size, width), -1, np.int64)
        beam_lp = np.full((examples.size, width), -np.inf, np.float32)
        for s in range(0, examples.size, 256):
            idx = np.arange(s, min(s + 256, examples.size))
            d = beam_search(model, examples.batch(idx).to(device), trie, beam=width)
            beams[idx], beam_lp[idx] = d.items.cpu().numpy(), d.scores.float().cpu().numpy()
        return beams, beam_lp, np.where(beams >= 0, table.item_ids[np.maximum(beams, 0)], -1)

    def protect(beam_ids: np.ndarray, li: np.ndarray, lvl: np.ndarray) -> np.ndarray:
        """Beams that are one of the request's logged clicks or purchases (never rejected)."""
        logged = [
            set(i[(v >= CLICKED) & (v != PURCHASED_ELSEWHERE)].tolist()) for i, v in zip(li, lvl, strict=True)
        ]
        return np.array([[int(b) in logged[n] for b in row] for n, row in enumerate(beam_ids)], dtype=bool)

    # what phase 1 could teach at most: the validation sample's beams (as wide as the lists) re-ranked by
    # log-probability + s · reward
    vb, vlp, vids = beams_of(splits.valid.take(vrows))
    vr = reward.reward(_pair_features(full, req["valid"][0].take(vrows), vids))
    scales = tuple(sorted({0.0, 0.3, 1.0, 3.0, 10.0, cfg.reward_scale}))
    reward_eval["rerank_ndcg@10"] = rerank_ndcg(vb, vlp, vr, splits.valid.target[vrows], scales)
    _log(
        f"validation beams re-ranked by log-probability + scale x reward, ndcg@10: {reward_eval['rerank_ndcg@10']}"
    )

    _log(f"lists: beams of {len(pick)} training requests")
    beams, beam_lp, beam_ids = beams_of(ex)
    train_lv = levels_of(sub_log)
    li, lvl = _levelled(train_lv, sub_log[S.REQUEST_ID].to_list())
    if cfg.list_source == "holdout":
        # phase 1 on each user's last training request, scored with features that do not count its purchase
        # (the fold's sources) by the reward model of the other half of the users (cross-fitted)
        last_rows = (
            train_log.with_row_index("_row")
            .group_by(S.USER_ID, maintain_order=True)
            .agg(pl.col("_row").last())
        )
        ex1 = splits.train.take(last_rows["_row"].to_numpy())
        if ex1.size < 2:
            raise ValueError(
                "--align.list-source holdout needs at least 2 users (the reward is cross-fitted)"
            )
        _log(f"lists: beams of {ex1.size} held-out training requests (phase 1)")
        beams1, lp1, ids1 = beams_of(ex1)
        X1 = _pair_features(fold_cascade, fold_req, ids1)
        half = np.zeros(ex1.size, dtype=bool)
        half[np.random.default_rng([cfg.seed, 2]).permutation(ex1.size)[: ex1.size // 2]] = True
        r = np.empty(ids1.shape, np.float32)
        for h in (half, ~half):
            r[h] = fit_reward(~h).reward(X1[h])
        protected = protect(ids1, fold_items, fold_lvl)
    elif cfg.list_source == "valid":
        # phase 1 on the validation requests the evaluations do not decode: only their query and history are read
        # (beams and rewards; features from the training purchases), never their target
        rows1 = np.setdiff1d(np.arange(splits.valid.size), vrows)
        if not len(rows1):
            raise ValueError(
                "--align.list-source valid needs validation requests outside the evaluation sample"
            )
        _log(f"lists: beams of {len(rows1)} validation requests outside the evaluation sample (phase 1)")
        ex1 = splits.valid.take(rows1)
        ex1 = ex1._replace(target=np.full(ex1.size, -1, np.int64))  # unlabelled
        beams1, lp1, ids1 = beams_of(ex1)
        r = reward.reward(_pair_features(full, req["valid"][0].take(rows1), ids1))
        protected = None
    else:
        ex1, beams1, lp1 = ex, beams, beam_lp
        r = reward.reward(_pair_features(full, req["train"][0].take(pick), beam_ids))
        protected = protect(beam_ids, li, lvl)
    if cfg.reward_scale > 0:
        phase1 = soft_reward_lists(ex1, beams1, lp1, r, cfg.reward_scale, cfg.beta, protected)
    else:
        phase1 = reward_lists(
            ex1, beams1, lp1, r, cfg.rejected, cfg.reward_margin, cfg.disagreeing_only, protected
        )
    rows = np.full(li.shape, -1, np.int64)
    rows[li >= 0] = table.rows(li[li >= 0])
    item_lp = score_rows(model, ex, rows)
    phase2 = level_lists(ex, rows, lvl, item_lp, cfg.rejected, beams if cfg.beam_negatives else None, beam_lp,
                         cfg.disagreeing_only, ex.target)  # fmt: skip
    on_target = float(np.mean(phase1.items[:, 0] == phase1.examples.target)) if phase1.size else 0.0
    said = (
        "unlabelled requests" if cfg.list_source == "valid" else f"{on_target:.0%} prefer the logged target"
    )
    _log(f"lists: phase 1 (reward-ranked beams) {phase1.size} ({said}), "
         f"phase 2 (levels) {phase2.size}")  # fmt: skip

    # ---- list-wise DPO against the frozen SFT model
    reference = frozen_copy(model)
    policy = GeneratorBundle.load(sft_path).model

    def on_eval(entry: dict) -> None:
        if log_metrics:
            tracking.log_metrics(
                {k: v for k, v in entry.items() if k not in ("step", "phase")}, step=entry["step"]
            )

    res = align(
        policy,
        reference,
        [("phase1", phase1, cfg.phase1_steps), ("phase2", phase2, cfg.phase2_steps)],
        splits.train,
        splits.valid,
        trie,
        cfg,
        device=device,
        on_eval=on_eval,
    )
    # how much of the reward the selected policy took: its order of the same validation beams as the ceiling's
    fit = fit_report(
        vb, vlp, score_rows(res.model, splits.valid.take(vrows), vb), vr, splits.valid.target[vrows]
    )
    fit["rerank_ndcg@10"] = reward_eval["rerank_ndcg@10"]
    _log(f"fit on the validation beams (ceiling above): {fit}")
    aligned = GeneratorBundle(res.model.cpu(), table, bundle.vocab, bundle.meta)
    extra = {
        "aligned_from": str(Path(sft_path).resolve()),
        "align": flatten(cfg),
        "valid": res.best,
        "valid_sft": res.start,
        "align_minutes": res.minutes,
    }
    aligned.save(out, extra=extra)
    return {
        "model_uri": str(Path(out).resolve()),
        "sft_model_uri": str(Path(sft_path).resolve()),
        "dataset": ds.name,
        "reward": reward_eval,
        "lists": res.lists,
        "fit": fit,
        "steps": res.steps,
        "selected_step": res.best.get("step"),
        "val_sft": res.start,
        "val_aligned": res.best,
        "history": res.history,
        "align_minutes": (time.perf_counter() - t0) / 60,
    }


def output_dir(cfg_output: str, ds_name: str, sft_path: str, seed: int) -> Path:
    return Path(cfg_output) / ds_name / f"{Path(sft_path).name}-aligned-s{seed}"


def main(cfg: Config) -> dict:
    if cfg.trainer.task != "search":
        raise ValueError(
            f"align works on search requests: --trainer.task must be search, got {cfg.trainer.task!r}"
        )
    with tracking.job_run(JOB, cfg) as run:
        ds = load_dataset(cfg.trainer.dataset)
        path = (
            tracking.resolve_model(cfg.model) if cfg.model else train_generator.main(cfg.trainer)["model_uri"]
        )
        out = output_dir(cfg.output, ds.name, path, cfg.align.seed)
        res = align_bundle(cfg.align, path, ds, out)
        tracking.log_json(res, "align.json")
        tracking.log_artifacts(out, "generator")
        tracking.log_metrics(
            {k: res[k] for k in ("reward", "lists", "fit", "val_sft", "val_aligned", "align_minutes")}
        )
        res.pop("history")
        return {
            **res,
            "mlflow_model_uri": f"runs:/{run.info.run_id}/generator",
            "mlflow_run_id": run.info.run_id,
        }
