"""The reward model: LightGBM click and purchase propensities plus query-item relevance, one reward per pair.

Inputs are the cascade ranker's features of a (request, item) pair (:data:`onesearch.cascade.ranker.FEATURES`,
computed by :meth:`onesearch.cascade.ranker.Cascade.pair_features` for any item, candidate or not). Two LightGBM
models learn, from the interaction levels of :mod:`onesearch.align.levels`:

- click propensity: label 1 for ``purchased`` and ``clicked`` items, 0 for ``shown``, ``same_category`` and
  ``random`` ones;
- purchase propensity: label 1 for ``purchased`` items, 0 for the same others and ``clicked``.

``purchased_elsewhere`` pairs carry no label for the request and are left out. By default each model learns with
LightGBM's lambdarank objective over each request's pairs (``objective="lambdarank"``): the reward's job is to order
the items of one request, the SFT model's beams, which are all plausible, so it learns the order within a request
(as the cascade's ranker does) rather than a probability across requests, which random other-category items would
dominate. ``objective="binary"`` learns classifiers and scores log-probabilities. The relevance score is the
``dense_query`` feature: the cosine of the MiniLM embeddings of the query and the item's text (0 for a text-free
catalogue). The reward of a pair is

    reward = s_purchase + click_weight · s_click + relevance_weight · relevance

with ``s`` the propensity score (the ranking score, or ``log P`` for ``binary``). The weights' defaults (0.5, 1.0)
were chosen for log-probabilities; with lambdarank scores they are on another scale, and only the order of the
reward within a request matters to the preference lists.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from onesearch.align.levels import CLICKED, PURCHASED, PURCHASED_ELSEWHERE
from onesearch.cascade.ranker import FEATURES

RELEVANCE = FEATURES.index("dense_query")
"""Column of the query-item text relevance among the features."""


class RewardData(NamedTuple):
    """Features and labels of levelled (request, item) pairs, grouped by request."""

    X: np.ndarray
    """(n, len(FEATURES)) float32 pair features, each request's pairs together."""
    click: np.ndarray
    """(n,) 0/1 clicked (purchases included)."""
    purchase: np.ndarray
    """(n,) 0/1 purchased from this request."""
    group: np.ndarray
    """(requests,) pairs per request, in row order (sums to n; what the ranking objective compares within)."""

    @classmethod
    def from_levels(cls, X: np.ndarray, levels: np.ndarray, group: np.ndarray) -> RewardData:
        """Labels from the levels; ``purchased_elsewhere`` pairs are dropped (no label for this request).
        ``group``: pairs per request, in row order."""
        levels = np.asarray(levels)
        if X.shape[0] != levels.shape[0]:
            raise ValueError(f"{X.shape[0]} feature rows for {levels.shape[0]} levels")
        group = np.asarray(group, dtype=np.int64)
        if group.sum() != X.shape[0] or (group < 0).any():
            raise ValueError(f"groups sum to {group.sum()} pairs for {X.shape[0]} feature rows")
        keep = levels != PURCHASED_ELSEWHERE
        req = np.repeat(np.arange(len(group)), group)
        lv = levels[keep]
        return cls(
            X[keep].astype(np.float32),
            ((lv == PURCHASED) | (lv == CLICKED)).astype(np.float32),
            (lv == PURCHASED).astype(np.float32),
            np.bincount(req[keep], minlength=len(group)).astype(np.int64),
        )


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties counted half); None when ``y`` has one class only."""
    y, score = np.asarray(y).astype(bool), np.asarray(score, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    order = np.argsort(score, kind="stable")
    s = score[order]
    ranks = np.empty(len(s))
    # average ranks over ties
    uniq, start, counts = np.unique(s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


OBJECTIVES = ("lambdarank", "binary")
"""How each propensity is learned: ``lambdarank`` ranks a request's pairs against each other (the score is an
unscaled ranking score, comparable within a request only), ``binary`` classifies every pair on its own (the score is
the log-probability)."""


def list_ndcg(y: np.ndarray, score: np.ndarray, group: np.ndarray, k: int = 10) -> float | None:
    """Mean over the requests (``group``: pairs per request, in row order) with a positive of the NDCG@k of their
    pairs ranked by ``score`` (binary gains; a positive tied with negatives ranks below them, so a constant score
    earns no credit); None when no request has a positive."""
    y, score = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out, start = [], 0
    for n in np.asarray(group, dtype=np.int64):
        yy, ss = y[start : start + n], score[start : start + n]
        start += n
        pos = int(yy.sum())
        if not pos:
            continue
        top = yy[np.lexsort((yy, -ss))[:k]]  # a tie with a positive ranks the positive last
        out.append(float((top * disc[: len(top)]).sum() / disc[: min(pos, k)].sum()))
    return float(np.mean(out)) if out else None


class RewardModel:
    """Click and purchase LightGBM propensity models over the pair features, combined into one reward."""

    def __init__(
        self,
        rounds: int = 200,
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        click_weight: float = 0.5,
        relevance_weight: float = 1.0,
        seed: int = 0,
        objective: str = "lambdarank",
    ):
        if rounds < 1:
            raise ValueError(f"reward rounds must be >= 1, got {rounds}")
        if objective not in OBJECTIVES:
            raise ValueError(f"reward objective must be one of {OBJECTIVES}, got {objective!r}")
        self.rounds, self.num_leaves, self.learning_rate = rounds, num_leaves, learning_rate
        self.click_weight, self.relevance_weight, self.seed = click_weight, relevance_weight, seed
        self.objective = objective
        self.click = self.purchase = None

    def _fit_one(self, X: np.ndarray, y: np.ndarray, group: np.ndarray):
        import lightgbm as lgb

        if y.min() == y.max():
            return float(np.log(np.clip(y[0], 1e-6, 1.0)))  # one class: a constant score
        kw = dict(
            n_estimators=self.rounds,
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            min_child_samples=20,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.9,
            random_state=self.seed,
            verbose=-1,
            n_jobs=1,
        )
        if self.objective == "binary":
            return lgb.LGBMClassifier(**kw).fit(X, y)
        return lgb.LGBMRanker(objective="lambdarank", **kw).fit(X, y, group=group[group > 0])

    def fit(self, data: RewardData) -> RewardModel:
        if data.X.shape[0] == 0:
            raise ValueError("the reward model has no levelled pairs to learn from")
        if data.X.shape[1] != len(FEATURES):
            raise ValueError(f"reward features must have {len(FEATURES)} columns, got {data.X.shape[1]}")
        self.click = self._fit_one(data.X, data.click, data.group)
        self.purchase = self._fit_one(data.X, data.purchase, data.group)
        return self

    def _score(self, m, X: np.ndarray) -> np.ndarray:
        if isinstance(m, float):
            return np.full(X.shape[0], m)
        if self.objective == "binary":
            return np.log(np.clip(m.predict_proba(X)[:, 1], 1e-6, 1.0))
        return m.predict(X)

    def propensities(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(click, purchase) propensity scores of each row of ``X``: log-probabilities (``binary``) or ranking
        scores (``lambdarank``); higher is likelier either way."""
        if self.click is None:
            raise RuntimeError("RewardModel.propensities before fit")
        return self._score(self.click, X), self._score(self.purchase, X)

    def reward(self, X: np.ndarray) -> np.ndarray:
        """The combined reward of each row of ``X`` (n, len(FEATURES)) (or of (…, len(FEATURES)) arrays)."""
        shape = X.shape[:-1]
        flat = X.reshape(-1, X.shape[-1])
        sc, sp = self.propensities(flat)
        r = sp + self.click_weight * sc + self.relevance_weight * flat[:, RELEVANCE]
        return r.reshape(shape).astype(np.float32)

    def evaluate(self, data: RewardData) -> dict[str, float | None]:
        """Held-out NDCG@10 of each request's purchase among its levelled pairs ranked by the reward, and the AUC of
        the click and purchase propensities and of the combined reward for both labels (over all pairs)."""
        pc, pp = self.propensities(data.X)
        r = self.reward(data.X)
        return {
            "purchase_ndcg@10": list_ndcg(data.purchase, r, data.group, 10),
            "click_auc": auc(data.click, pc),
            "purchase_auc": auc(data.purchase, pp),
            "reward_click_auc": auc(data.click, r),
            "reward_purchase_auc": auc(data.purchase, r),
            "pairs": int(data.X.shape[0]),
        }
