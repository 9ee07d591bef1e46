"""The classic cascade: multi-source recall merged by reciprocal-rank fusion, then a LightGBM LambdaRank ranker.

Recall (``cascade_recall`` when used alone): per request the top ``per_source`` items of each source that applies
— BM25 and dense-query similarity (search requests), dense-history similarity and co-purchase (any history),
popularity (always, a short list) — merged by reciprocal-rank fusion ``Σ 1 / (rrf_k + rank)`` into at most
``candidates`` items.

Ranking (``cascade``): LightGBM LambdaRank over :data:`FEATURES` of each (request, candidate), trained on the
training requests whose target the recall stage found (label 1 for the target, 0 for the other candidates),
early-stopped on ndcg@10 of the validation requests.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from onesearch.cascade.sources import BM25Source, Catalog, CovisitSource, DenseSource, _tokens
from onesearch.retrieval import Requests, Retrieved

FEATURES = (
    "bm25",
    "dense_query",
    "dense_history",
    "covisit",
    "rrf",
    "recall_rank",
    "query_category_match",
    "history_leaf_share",
    "history_top_share",
    "history_brand_share",
    "popularity",
    "recent_popularity",
    "in_history",
    "steps_since_leaf",
    "history_length",
    "has_query",
)
"""Ranker features, in column order."""

BATCH_CELLS = 1 << 24
"""Most (request, item) cells of one batch's full score arrays (64 MiB each in float32): the batch of ``cfg.batch``
requests is cut to ``BATCH_CELLS // catalogue size`` (at least 1) on a catalogue too large for it. Each request's
candidates and features do not depend on the batch it is in."""


@dataclass(frozen=True)
class CascadeConfig:
    """Settings of the cascade."""

    per_source: int = 150
    """Candidates taken from each recall source."""
    candidates: int = 300
    """Candidates kept after fusion."""
    rrf_k: int = 60
    """Reciprocal-rank-fusion constant."""
    popular: int = 50
    """Most popular items added to every candidate list."""
    train_requests: int = 20000
    """Training requests the ranker learns from (a seeded sample when there are more)."""
    num_leaves: int = 31
    """LightGBM leaves per tree."""
    learning_rate: float = 0.05
    """LightGBM learning rate."""
    rounds: int = 500
    """Maximum boosting rounds."""
    early_stopping: int = 40
    """Rounds without a better validation ndcg@10 before stopping."""
    batch: int = 512
    """Requests per feature batch, at most: a batch holds several (requests × catalogue) score arrays, so on a
    large catalogue it is cut to keep each under :data:`BATCH_CELLS` cells (16 requests at 1M items)."""
    seed: int = 0
    """Seed of the request sample and of LightGBM."""


class Cascade:
    """Recall (``recall``) and recall + LightGBM (``retrieve``); see the module docstring."""

    name = "cascade"

    def __init__(
        self,
        catalog: Catalog,
        bm25: BM25Source,
        dense: DenseSource,
        covisit: CovisitSource,
        cfg: CascadeConfig,
    ):
        self.catalog, self.bm25, self.dense, self.covisit, self.cfg = catalog, bm25, dense, covisit, cfg
        self.model = None
        vocab: dict[str, int] = {}
        r, c = [], []
        for i, ws in enumerate(catalog.cat_words):
            for w in ws:
                r.append(i)
                c.append(vocab.setdefault(w, len(vocab)))
        self._cat_vocab = vocab
        self._cat = sp.csr_matrix(
            (np.ones(len(r), np.float32), (r, c)), shape=(catalog.n, max(len(vocab), 1))
        )
        self._popular = np.argsort(-catalog.pop, kind="stable")[: cfg.popular]
        self.best_iteration = 0
        self.batch = max(1, min(cfg.batch, BATCH_CELLS // max(catalog.n, 1)))
        """Requests per batch: ``cfg.batch``, cut on a large catalogue (:data:`BATCH_CELLS`)."""

    # ---------------------------------------------------------------- recall
    def _candidates(self, req: Requests) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Candidate rows (B, C) (-1 = none), their fused recall score, and the per-source full scores."""
        cfg, n, B = self.cfg, self.catalog.n, req.size
        N = min(cfg.per_source, n)
        bm25 = self.bm25.scores(req)
        qv = self.dense.query_vectors(req.query)
        hv = self.dense.history_vectors(req.history)
        cov = self.covisit.scores(req.history)
        acc = np.zeros((B, n), dtype=np.float32)
        ranks = 1.0 / (cfg.rrf_k + np.arange(1, N + 1, dtype=np.float32))
        has_q = np.array([q is not None for q in req.query])
        has_h = np.array([len(h) > 0 for h in req.history])

        def add(rows: np.ndarray, valid: np.ndarray, weight_ok: np.ndarray) -> None:
            w = np.where(valid, ranks[None, : rows.shape[1]], 0.0) * weight_ok[:, None]
            np.add.at(acc, (np.repeat(np.arange(B), rows.shape[1]), rows.ravel()), w.ravel())

        if has_q.any():
            top = np.argpartition(-bm25, N - 1, axis=1)[:, :N]
            order = np.take_along_axis(
                top, np.argsort(-np.take_along_axis(bm25, top, 1), 1, kind="stable"), 1
            )
            add(order, np.take_along_axis(bm25, order, 1) > 0, has_q)
            rows, _ = self.dense.search(qv, N)
            add(rows, rows >= 0, has_q & (np.abs(qv).sum(1) > 0))  # no query encoder: no dense-query source
        if has_h.any():
            rows, _ = self.dense.search(hv, N)
            add(rows, rows >= 0, has_h & (np.abs(hv).sum(1) > 0))
            top = np.argpartition(-cov, N - 1, axis=1)[:, :N]
            order = np.take_along_axis(top, np.argsort(-np.take_along_axis(cov, top, 1), 1, kind="stable"), 1)
            add(order, np.take_along_axis(cov, order, 1) > 0, has_h)
        add(np.broadcast_to(self._popular, (B, len(self._popular))), np.ones((B, len(self._popular)), bool),
            np.full(B, 0.5))  # fmt: skip
        C = min(cfg.candidates, n)
        top = np.argpartition(-acc, C - 1, axis=1)[:, :C]
        top = np.take_along_axis(top, np.lexsort((top, -np.take_along_axis(acc, top, 1)), axis=1), 1)
        fused = np.take_along_axis(acc, top, 1)
        top = np.where(fused > 0, top, -1)
        return top, fused, {"bm25": bm25, "covisit": cov, "qv": qv, "hv": hv, "acc": acc}

    def recall(self, req: Requests, k: int) -> Retrieved:
        """The recall stage alone, ranked by fused score (the ``cascade_recall`` system)."""
        items, scores = [], []
        for s in range(0, req.size, self.batch):
            part = req.take(range(s, min(s + self.batch, req.size)))
            rows, fused, _ = self._candidates(part)
            items.append(self._ids(rows[:, :k], k))
            scores.append(_pad(np.where(rows[:, :k] >= 0, fused[:, :k], -np.inf), k, -np.inf))
        return Retrieved(np.concatenate(items), np.concatenate(scores).astype(np.float32))

    def _ids(self, rows: np.ndarray, k: int) -> np.ndarray:
        ids = np.where(rows >= 0, self.catalog.item_ids[np.maximum(rows, 0)], -1)
        return _pad(ids, k, -1).astype(np.int64)

    # ---------------------------------------------------------------- features
    def features(self, req: Requests) -> tuple[np.ndarray, np.ndarray]:
        """Candidate rows (B, C) and their features (B, C, len(FEATURES))."""
        rows, fused, src = self._candidates(req)
        B, C = rows.shape
        rank = np.broadcast_to(np.arange(C, dtype=np.float32), (B, C))
        return rows, self._features(req, rows, fused, rank, src)

    def pair_features(self, req: Requests, rows: np.ndarray) -> np.ndarray:
        """Features (B, m, len(FEATURES)) of any catalogue rows (B, m) per request, candidates or not (the reward
        model of :mod:`onesearch.align` scores the generator's items with them). ``rrf`` is the item's fused
        recall score (0 when no source found it) and ``recall_rank`` its place in the fused list, ``candidates``
        for an item the recall stage would not keep; the other features are those :meth:`features` gives."""
        rows = np.asarray(rows)
        _, _, src = self._candidates(req)
        acc = src["acc"]
        B, n = acc.shape
        C = min(self.cfg.candidates, n)
        order = np.lexsort((np.broadcast_to(np.arange(n), (B, n)), -acc), axis=-1)  # as the candidate list
        place = np.empty_like(order)
        np.put_along_axis(place, order, np.broadcast_to(np.arange(n), (B, n)), axis=1)
        r = np.maximum(rows, 0)
        rrf = np.take_along_axis(acc, r, 1)
        rank = np.take_along_axis(place, r, 1).astype(np.float32)
        rank = np.where((rrf > 0) & (rank < C), rank, np.float32(C))
        return self._features(req, rows, rrf, rank, src)

    def _features(
        self, req: Requests, rows: np.ndarray, rrf: np.ndarray, rank: np.ndarray, src: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Features (B, C, len(FEATURES)) of the rows (B, C) given their fused score and recall rank."""
        cat = self.catalog
        B, C = rows.shape
        r = np.maximum(rows, 0)
        g = lambda full: np.take_along_axis(full, r, 1)  # noqa: E731
        emb = self.dense.emb
        dq = np.einsum("bcd,bd->bc", emb[r], src["qv"])
        dh = np.einsum("bcd,bd->bc", emb[r], src["hv"])
        # query words that name the candidate's category
        qrows, qcols = [], []
        qlen = np.zeros(B, np.float32)
        for i, q in enumerate(req.query):
            ws = {self._cat_vocab[w] for w in _tokens(q) if w in self._cat_vocab} if q else set()
            qlen[i] = len(_tokens(q)) if q else 0
            qrows += [i] * len(ws)
            qcols += list(ws)
        Q = sp.csr_matrix((np.ones(len(qrows), np.float32), (qrows, qcols)), shape=(B, self._cat.shape[1]))
        qmatch = np.asarray((Q @ self._cat.T).todense())
        qmatch = g(qmatch) / np.maximum(qlen, 1)[:, None]
        # history shares of leaf / top category / brand, repurchase, steps since the last same-leaf purchase
        leaf_share = np.zeros((B, C), np.float32)
        top_share = np.zeros((B, C), np.float32)
        brand_share = np.zeros((B, C), np.float32)
        in_hist = np.zeros((B, C), np.float32)
        since = np.full((B, C), 50.0, np.float32)
        hlen = np.zeros(B, np.float32)
        for i, h in enumerate(req.history):
            hr = cat.rows(h)[-50:]
            hlen[i] = len(hr)
            if not len(hr):
                continue
            for arr, out in ((cat.leaf, leaf_share), (cat.top, top_share), (cat.brand, brand_share)):
                vals = arr[hr]
                vals = vals[vals >= 0]
                if len(vals):
                    u, c = np.unique(vals, return_counts=True)
                    cand = arr[r[i]]
                    pos = np.searchsorted(u, cand).clip(0, len(u) - 1)
                    out[i] = np.where((u[pos] == cand) & (cand >= 0), c[pos] / len(hr), 0.0)
            in_hist[i] = np.isin(r[i], hr)
            leaves = cat.leaf[hr]
            last = {int(lf): len(hr) - 1 - j for j, lf in enumerate(leaves) if lf >= 0}
            since[i] = [last.get(int(lf), 50) for lf in cat.leaf[r[i]]]
        feats = np.stack(
            [
                g(src["bm25"]),
                dq,
                dh,
                g(src["covisit"]),
                rrf,
                rank,
                qmatch,
                leaf_share,
                top_share,
                brand_share,
                cat.pop[r],
                cat.recent_pop[r],
                in_hist,
                since,
                np.broadcast_to(hlen[:, None], (B, C)),
                np.broadcast_to((qlen > 0)[:, None].astype(np.float32), (B, C)),
            ],
            axis=2,
        ).astype(np.float32)
        return feats

    def _dataset(self, req: Requests, target: np.ndarray) -> tuple:
        """Features and labels of the requests whose target the recall stage finds (the others teach nothing)."""
        X, y, groups = [], [], []
        tr = np.array([self.catalog.row.get(int(t), -1) for t in target])
        found = 0
        for s in range(0, req.size, self.batch):
            idx = np.arange(s, min(s + self.batch, req.size))
            rows, f = self.features(req.take(idx))
            for j, i in enumerate(idx):
                ok = rows[j] >= 0
                lab = (rows[j][ok] == tr[i]).astype(np.float32)
                if not lab.any():
                    continue
                found += 1
                X.append(f[j][ok])
                y.append(lab)
                groups.append(int(ok.sum()))
        return np.concatenate(X), np.concatenate(y), np.array(groups), found

    def fit(
        self,
        train: Requests,
        train_target: np.ndarray,
        valid: Requests,
        valid_target: np.ndarray,
        features_from: Cascade | None = None,
    ) -> dict:
        """Train the ranker; returns the recall stage's coverage and the ranker's best round.

        ``features_from`` computes the training requests' features: a cascade whose sources were built from the
        purchases before those requests (:func:`onesearch.retrieval.holdout_fold`), so that no training feature
        counts its own target; validation features come from this cascade, as test features will.
        """
        import lightgbm as lgb

        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        if train.size > cfg.train_requests:
            pick = np.sort(rng.choice(train.size, cfg.train_requests, replace=False))
            train, train_target = train.take(pick), train_target[pick]
        Xt, yt, gt, found_t = (features_from or self)._dataset(train, train_target)
        Xv, yv, gv, found_v = self._dataset(valid, valid_target)
        if not len(gt) or not len(gv):
            raise ValueError(
                "the recall stage found no training or validation target; the ranker cannot learn"
            )
        self.model = lgb.LGBMRanker(
            objective="lambdarank",
            n_estimators=cfg.rounds,
            num_leaves=cfg.num_leaves,
            learning_rate=cfg.learning_rate,
            min_child_samples=20,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.9,
            random_state=cfg.seed,
            verbose=-1,
            n_jobs=2,
        )
        self.model.fit(
            Xt, yt, group=gt, eval_X=(Xv,), eval_y=(yv,), eval_group=[gv], eval_at=[10],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )  # fmt: skip
        self.best_iteration = int(self.model.best_iteration_ or cfg.rounds)
        print(
            f"[cascade] ranker: {len(gt)} training lists ({found_t / max(train.size, 1):.1%} of requests have "
            f"the target among candidates), best round {self.best_iteration}",
            file=sys.stderr,
            flush=True,
        )
        return {
            "recall_coverage_train": found_t / train.size,
            "recall_coverage_valid": found_v / valid.size,
            "best_iteration": self.best_iteration,
            "feature_importance": dict(zip(FEATURES, self.model.feature_importances_.tolist(), strict=True)),
        }

    def retrieve(self, req: Requests, k: int) -> Retrieved:
        if self.model is None:
            raise RuntimeError("Cascade.retrieve before fit: train the ranker first (or use recall())")
        items, scores = [], []
        for s in range(0, req.size, self.batch):
            part = req.take(range(s, min(s + self.batch, req.size)))
            rows, f = self.features(part)
            B, C, F = f.shape
            pred = self.model.predict(f.reshape(-1, F), num_iteration=self.best_iteration).reshape(B, C)
            pred = np.where(rows >= 0, pred, -np.inf)
            order = np.argsort(-pred, axis=1, kind="stable")[:, :k]
            items.append(self._ids(np.take_along_axis(rows, order, 1), k))
            scores.append(_pad(np.take_along_axis(pred, order, 1), k, -np.inf))
        return Retrieved(np.concatenate(items), np.concatenate(scores).astype(np.float32))


class CascadeRecall:
    """The ``cascade_recall`` system: the cascade's recall stage alone."""

    name = "cascade_recall"

    def __init__(self, cascade: Cascade):
        self.cascade = cascade

    def retrieve(self, req: Requests, k: int) -> Retrieved:
        return self.cascade.recall(req, k)


def _pad(a: np.ndarray, k: int, value) -> np.ndarray:
    if a.shape[1] >= k:
        return a[:, :k]
    return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=value)
