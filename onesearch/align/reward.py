"""The reward model: LightGBM click and purchase propensities plus query-item relevance, one reward per pair.

Inputs are the cascade ranker's features of a (request, item) pair (:data:`onesearch.cascade.ranker.FEATURES`,
computed by :meth:`onesearch.cascade.ranker.Cascade.pair_features` for any item, candidate or not). Two binary
LightGBM models learn, from the interaction levels of :mod:`onesearch.align.levels`:

- click propensity: label 1 for ``purchased`` and ``clicked`` items, 0 for ``shown``, ``same_category`` and
  ``random`` ones;
- purchase propensity: label 1 for ``purchased`` items, 0 for the same others and ``clicked``.

``purchased_elsewhere`` pairs carry no label for the request and are left out. The relevance score is the
``dense_query`` feature: the cosine of the MiniLM embeddings of the query and the item's text (0 for a text-free
catalogue). The reward of a pair is

    reward = log P(purchase) + click_weight · log P(click) + relevance_weight · relevance
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from onesearch.align.levels import CLICKED, PURCHASED, PURCHASED_ELSEWHERE
from onesearch.cascade.ranker import FEATURES

RELEVANCE = FEATURES.index("dense_query")
"""Column of the query-item text relevance among the features."""


class RewardData(NamedTuple):
    """Features and labels of levelled (request, item) pairs."""

    X: np.ndarray
    """(n, len(FEATURES)) float32 pair features."""
    click: np.ndarray
    """(n,) 0/1 clicked (purchases included)."""
    purchase: np.ndarray
    """(n,) 0/1 purchased from this request."""

    @classmethod
    def from_levels(cls, X: np.ndarray, levels: np.ndarray) -> RewardData:
        """Labels from the levels; ``purchased_elsewhere`` pairs are dropped (no label for this request)."""
        levels = np.asarray(levels)
        if X.shape[0] != levels.shape[0]:
            raise ValueError(f"{X.shape[0]} feature rows for {levels.shape[0]} levels")
        keep = levels != PURCHASED_ELSEWHERE
        lv = levels[keep]
        return cls(
            X[keep].astype(np.float32),
            ((lv == PURCHASED) | (lv == CLICKED)).astype(np.float32),
            (lv == PURCHASED).astype(np.float32),
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


class RewardModel:
    """Click and purchase LightGBM classifiers over the pair features, combined into one reward."""

    def __init__(
        self,
        rounds: int = 200,
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        click_weight: float = 0.5,
        relevance_weight: float = 1.0,
        seed: int = 0,
    ):
        if rounds < 1:
            raise ValueError(f"reward rounds must be >= 1, got {rounds}")
        self.rounds, self.num_leaves, self.learning_rate = rounds, num_leaves, learning_rate
        self.click_weight, self.relevance_weight, self.seed = click_weight, relevance_weight, seed
        self.click = self.purchase = None

    def _fit_one(self, X: np.ndarray, y: np.ndarray):
        import lightgbm as lgb

        if y.min() == y.max():
            return float(y[0])  # one class: a constant propensity
        m = lgb.LGBMClassifier(
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
        return m.fit(X, y)

    def fit(self, data: RewardData) -> RewardModel:
        if data.X.shape[0] == 0:
            raise ValueError("the reward model has no levelled pairs to learn from")
        if data.X.shape[1] != len(FEATURES):
            raise ValueError(f"reward features must have {len(FEATURES)} columns, got {data.X.shape[1]}")
        self.click = self._fit_one(data.X, data.click)
        self.purchase = self._fit_one(data.X, data.purchase)
        return self

    @staticmethod
    def _proba(m, X: np.ndarray) -> np.ndarray:
        if isinstance(m, float):
            return np.full(X.shape[0], m)
        return m.predict_proba(X)[:, 1]

    def propensities(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(click), P(purchase)) of each row of ``X``."""
        if self.click is None:
            raise RuntimeError("RewardModel.propensities before fit")
        return self._proba(self.click, X), self._proba(self.purchase, X)

    def reward(self, X: np.ndarray) -> np.ndarray:
        """The combined reward of each row of ``X`` (n, len(FEATURES)) (or of (…, len(FEATURES)) arrays)."""
        shape = X.shape[:-1]
        flat = X.reshape(-1, X.shape[-1])
        pc, pp = self.propensities(flat)
        r = (
            np.log(np.clip(pp, 1e-6, 1.0))
            + self.click_weight * np.log(np.clip(pc, 1e-6, 1.0))
            + self.relevance_weight * flat[:, RELEVANCE]
        )
        return r.reshape(shape).astype(np.float32)

    def evaluate(self, data: RewardData) -> dict[str, float | None]:
        """Held-out AUC of the click and purchase propensities and of the combined reward for both labels."""
        pc, pp = self.propensities(data.X)
        r = self.reward(data.X)
        return {
            "click_auc": auc(data.click, pc),
            "purchase_auc": auc(data.purchase, pp),
            "reward_click_auc": auc(data.click, r),
            "reward_purchase_auc": auc(data.purchase, r),
            "pairs": int(data.X.shape[0]),
        }
