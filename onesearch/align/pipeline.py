"""The alignment pipeline over a dataset: interaction levels, the reward model, preference lists, list-wise DPO.

:func:`align_bundle` takes an SFT search bundle and a dataset and writes the aligned bundle; the ``align`` and
``bench-search --aligned`` jobs call it (``docs/alignment.md``). It runs, in order:

1. **Levels and the reward model** (:class:`RewardStage`): the interaction levels of each user's last training
   request (the holdout fold, whose features count only the purchases before it) train the reward model; its
   held-out figures come from the validation requests.
2. **Lists**: phase 1, the SFT model's beams of the training requests ranked by the reward (a beam that is one of
   the request's logged clicks or purchases is never rejected); phase 2, the logged levels.
3. **List-wise DPO** against the frozen SFT model (:func:`onesearch.align.dpo.align`), selected on validation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

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
)
from onesearch.align.levels import CLICKED, LEVEL, PURCHASED_ELSEWHERE, derive_levels, level_counts
from onesearch.align.reward import RewardData, RewardModel
from onesearch.cascade.ranker import FEATURES, Cascade, CascadeConfig
from onesearch.cascade.sources import BM25Source, Catalog, CovisitSource, DenseSource
from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.splits import leave_one_out, training_purchases
from onesearch.device import pick_device
from onesearch.model.beam import beam_search
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import Examples, search_examples
from onesearch.model.generator import config_as
from onesearch.retrieval import Requests, holdout_fold, split_requests
from onesearch.tokenizer.embeddings import cf_embeddings, item_texts, text_embeddings

RERANK_SCALES = (0.0, 0.3, 1.0, 3.0, 10.0)
"""Scales s of the reward in the reported ceiling ``rerank_ndcg@10`` (beams re-ranked by log-probability + s · reward)."""


def _log(m: str) -> None:
    print(f"[align] {m}", file=sys.stderr, flush=True)


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


class RewardStage:
    """The levels of a dataset's search requests and the reward model fitted on them.

    Fits on the interaction levels of each user's last training request, with features from the purchases before
    it (the holdout fold), so that no feature counts the request's own purchase; ``evaluate`` reports it on the
    validation requests. ``features(requests, item_ids)`` scores pairs with the features of all training
    purchases, as the served model would see them."""

    def __init__(
        self, cfg: AlignConfig, ds: Dataset, train_log: pl.DataFrame, rng: np.random.Generator
    ) -> None:
        self.cfg, self.ds, self.rng = cfg, ds, rng
        inter = ds.interactions
        self._inter = inter
        self._has_rid = inter[S.REQUEST_ID].null_count() < inter.height
        self._logs_impressions = bool(inter.filter(pl.col(S.EVENT) == "impression").height)
        buys = inter.filter(pl.col(S.EVENT) == "purchase")
        self.train_buys = training_purchases(buys, ds.search_log, "search")
        _log("reward model: features of the levelled pairs")
        text = _text(ds)
        bm25 = BM25Source(Catalog.build(ds.items, self.train_buys))
        self.full = _feature_cascade(ds, self.train_buys, bm25, text)
        fold, fold_req, fold_target = holdout_fold(ds, "search", self.train_buys)
        last = train_log.group_by(S.USER_ID, maintain_order=True).agg(pl.all().last())
        if not np.array_equal(last[S.ITEM_ID].to_numpy(), fold_target):
            raise RuntimeError("holdout fold and the last training requests disagree (a bug)")
        fold_cascade = _feature_cascade(ds, fold, bm25, text)
        self.fold_levels = self.levels(last, fold_cascade, fold_req)
        items, lvl = _levelled(self.fold_levels, last[S.REQUEST_ID].to_list())
        X = _pair_features(fold_cascade, fold_req, items)
        self.model = RewardModel(cfg.reward_rounds, cfg.reward_leaves, 0.05, cfg.click_weight, cfg.relevance_weight,
                                 cfg.seed, cfg.reward_objective).fit(_reward_data(X, items, lvl))  # fmt: skip

    def levels(self, part: pl.DataFrame, cascade: Cascade | None = None, part_req: Requests | None = None):
        """The levelled items of the requests ``part``. Where the log has no impressions, a uniform sample of the
        recall candidates of ``cascade`` stands in for level shown (negatives from its top only would teach the
        reward that a high recall rank means "not bought")."""
        cfg, inter = self.cfg, self._inter
        retrieved = None
        if cascade is not None and cfg.retrieved_negatives and not self._logs_impressions:
            cands = cascade.recall(part_req, cascade.cfg.candidates).items
            retrieved = {}
            for rid, row in zip(part[S.REQUEST_ID].to_list(), cands, strict=True):
                row = row[row >= 0]
                take = min(cfg.retrieved_negatives, len(row))
                retrieved[rid] = row[np.sort(self.rng.choice(len(row), take, replace=False))] if take else row
        own = (  # the requests' own events
            inter.filter(pl.col(S.REQUEST_ID).is_in(part[S.REQUEST_ID].implode()))
            if self._has_rid
            else inter.head(0)
        )
        return derive_levels(
            self.ds.items, pl.concat([own, self.train_buys.select(inter.columns)]), part, self.rng,
            same_category=cfg.same_category, random=cfg.random_negatives,
            purchased_elsewhere=cfg.purchased_elsewhere, retrieved=retrieved,
        )  # fmt: skip

    def evaluate(self, valid_log: pl.DataFrame, valid_req: Requests) -> dict:
        """The reward model's held-out figures on the validation requests, and the level counts."""
        lv = self.levels(valid_log, self.full, valid_req)
        items, lvl = _levelled(lv, valid_log[S.REQUEST_ID].to_list())
        out = self.model.evaluate(_reward_data(_pair_features(self.full, valid_req, items), items, lvl))
        out["train_levels"] = level_counts(self.fold_levels)
        out["valid_levels"] = level_counts(lv)
        return out

    def reward(self, req: Requests, item_ids: np.ndarray) -> np.ndarray:
        """(B, m) rewards of item ids (B, m) per request, with the features of all training purchases."""
        return self.model.reward(_pair_features(self.full, req, item_ids))


def beams_of(
    model, examples: Examples, bundle: GeneratorBundle, width: int, device, batch: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's ``width`` beams of each example: SID-table rows, log-probabilities and item ids (-1 = none).
    Exposure boosts (``tail_boost``, ``cold_boost``) are off here: they re-order by page and replace the scores."""
    beams = np.full((examples.size, width), -1, np.int64)
    logp = np.full((examples.size, width), -np.inf, np.float32)
    with config_as(model, tail_boost=0.0, cold_boost=0.0):
        for s in range(0, examples.size, batch):
            idx = np.arange(s, min(s + batch, examples.size))
            d = beam_search(model, examples.batch(idx).to(device), bundle.trie, beam=width)
            beams[idx], logp[idx] = d.items.cpu().numpy(), d.scores.float().cpu().numpy()
    return beams, logp, np.where(beams >= 0, bundle.table.item_ids[np.maximum(beams, 0)], -1)


def logged_beams(beam_ids: np.ndarray, items: np.ndarray, lvl: np.ndarray) -> np.ndarray:
    """(N, K) bool: which beams (item ids) are one of their request's logged clicks or purchases."""
    logged = [
        set(i[(v >= CLICKED) & (v != PURCHASED_ELSEWHERE)].tolist()) for i, v in zip(items, lvl, strict=True)
    ]
    return np.array([[int(b) in logged[n] for b in row] for n, row in enumerate(beam_ids)], dtype=bool)


def align_bundle(
    cfg: AlignConfig,
    sft_path: str | Path,
    ds: Dataset,
    out: str | Path,
    on_eval: Callable[[dict], None] | None = None,
) -> dict:
    """Align the SFT bundle at ``sft_path`` on ``ds``'s search log and write the aligned bundle to ``out``.

    Returns the reward model's held-out NDCG and AUCs, the list counts, the validation metrics of the SFT and the
    aligned model, and where the bundle is; ``on_eval`` gets every validation entry as it happens. Raises
    ``ValueError`` for a bundle of another dataset or task.
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
        raise ValueError(f"{splits.valid.size} validation requests: alignment needs some to evaluate on")

    # ---- levels and the reward model
    stage = RewardStage(cfg, ds, train_log, rng)
    reward_eval = stage.evaluate(valid_log, req["valid"][0])
    _log(f"reward model held-out (validation requests): {reward_eval}")

    model = bundle.model.to(device).eval()
    # what phase 1 could teach at most: the validation sample's beams (as wide as the lists) re-ranked by
    # log-probability + s · reward
    vb, vlp, vids = beams_of(model, splits.valid.take(vrows), bundle, cfg.list_beam, device)
    vr = stage.reward(req["valid"][0].take(vrows), vids)
    reward_eval["rerank_ndcg@10"] = rerank_ndcg(vb, vlp, vr, splits.valid.target[vrows], RERANK_SCALES)
    _log(
        f"validation beams re-ranked by log-probability + scale x reward, ndcg@10: {reward_eval['rerank_ndcg@10']}"
    )

    # ---- preference lists over a sample of the training requests
    n = splits.train.size
    pick = np.arange(n) if not cfg.list_requests or cfg.list_requests >= n else np.sort(
        rng.choice(n, cfg.list_requests, replace=False))  # fmt: skip
    ex, sub_log = splits.train.take(pick), train_log[pick]
    _log(f"lists: beams of {len(pick)} training requests")
    beams, beam_lp, beam_ids = beams_of(model, ex, bundle, cfg.list_beam, device)
    li, lvl = _levelled(stage.levels(sub_log), sub_log[S.REQUEST_ID].to_list())
    r = stage.reward(req["train"][0].take(pick), beam_ids)
    phase1 = reward_lists(ex, beams, beam_lp, r, cfg.rejected, cfg.reward_margin, cfg.disagreeing_only,
                          logged_beams(beam_ids, li, lvl))  # fmt: skip
    rows = np.full(li.shape, -1, np.int64)
    rows[li >= 0] = bundle.table.rows(li[li >= 0])
    item_lp = score_rows(model, ex, rows)
    phase2 = level_lists(ex, rows, lvl, item_lp, cfg.rejected, beams if cfg.beam_negatives else None, beam_lp,
                         cfg.disagreeing_only, ex.target)  # fmt: skip
    on_target = float(np.mean(phase1.items[:, 0] == phase1.examples.target)) if phase1.size else 0.0
    _log(f"lists: phase 1 (reward-ranked beams) {phase1.size} ({on_target:.0%} prefer the logged target), "
         f"phase 2 (levels) {phase2.size}")  # fmt: skip

    # ---- list-wise DPO against the frozen SFT model
    res = align(
        GeneratorBundle.load(sft_path).model,
        frozen_copy(model),
        [("phase1", phase1, cfg.phase1_steps), ("phase2", phase2, cfg.phase2_steps)],
        splits.train,
        splits.valid,
        bundle.trie,
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
    aligned = GeneratorBundle(res.model.cpu(), bundle.table, bundle.vocab, bundle.meta)
    aligned.save(
        out,
        extra={
            "aligned_from": str(Path(sft_path).resolve()),
            "align": asdict(cfg),
            "valid": res.best,
            "valid_sft": res.start,
            "align_minutes": res.minutes,
        },
    )
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


def output_dir(output: str | Path, ds_name: str, sft_path: str | Path, seed: int) -> Path:
    """Where the aligned bundle of ``sft_path`` goes: ``<output>/<dataset>/<SFT bundle name>-aligned-s<seed>``."""
    return Path(output) / ds_name / f"{Path(sft_path).name}-aligned-s{seed}"
