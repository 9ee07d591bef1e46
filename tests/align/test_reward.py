"""The reward model: its data, its held-out NDCG worked out by hand, and ranking within a request."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch.align.reward import RELEVANCE, RewardData, RewardModel, list_ndcg
from onesearch.cascade.ranker import FEATURES


def test_list_ndcg_by_hand():
    y = np.array([0, 1, 0, 0, 0, 1, 0])
    score = np.array([0.9, 0.5, 0.1, 0.3, 0.2, 0.2, 0.1])
    # request 1: the purchase ranked 2nd -> 1/log2(3); request 2 has no purchase (skipped); request 3: 1st -> 1
    assert list_ndcg(y, score, np.array([3, 2, 2]), k=10) == pytest.approx((1 / np.log2(3) + 1.0) / 2)
    assert list_ndcg(y, score, np.array([3, 2, 2]), k=1) == pytest.approx(0.5)  # only request 3's hit counts
    assert list_ndcg(np.zeros(3), np.zeros(3), np.array([3])) is None
    # ties: a constant score ranks the purchase last among its tied items, 1/log2(4), not first
    assert list_ndcg(np.array([1, 0, 0]), np.zeros(3), np.array([3])) == pytest.approx(0.5)


def test_reward_data_drops_purchased_elsewhere_and_keeps_the_groups():
    X = np.arange(5 * len(FEATURES), dtype=np.float32).reshape(5, -1)
    d = RewardData.from_levels(X, np.array([5, 4, 0, 3, 2]), np.array([3, 2]))
    assert d.group.tolist() == [2, 2] and d.X.shape == (4, len(FEATURES))
    assert d.purchase.tolist() == [1, 0, 0, 0] and d.click.tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="groups sum to 4 pairs for 5"):
        RewardData.from_levels(X, np.zeros(5), np.array([2, 2]))


def _requests(rng, n: int, m: int = 6):
    """n requests of m pairs (noise features): the purchase is the pair with the highest feature 0."""
    X = rng.normal(size=(n, m, len(FEATURES))).astype(np.float32)
    X[:, :, RELEVANCE] = 0.0
    levels = np.zeros((n, m), np.int64)
    levels[np.arange(n), X[:, :, 0].argmax(1)] = 5
    return RewardData.from_levels(X.reshape(n * m, -1), levels.ravel(), np.full(n, m))


def test_lambdarank_reward_orders_the_pairs_of_a_request():
    rng = np.random.default_rng(0)
    train, test = _requests(rng, 400), _requests(rng, 200)
    got = RewardModel(rounds=60, seed=0).fit(train).evaluate(test)
    assert got["purchase_ndcg@10"] > 0.9 and got["purchase_auc"] > 0.8  # chance: ndcg ~0.6, auc 0.5
    binary = RewardModel(rounds=60, seed=0, objective="binary").fit(train)
    assert binary.evaluate(test)["purchase_ndcg@10"] > 0.9
    # binary keeps the classifiers' reward: log P(purchase) + click_weight log P(click) + relevance_weight relevance
    X = test.X[:3].copy()
    X[:, RELEVANCE] = [0.2, -0.1, 0.5]
    pp = binary.purchase.predict_proba(X)[:, 1]
    pc = binary.click.predict_proba(X)[:, 1]
    want = np.log(pp) + 0.5 * np.log(pc) + 1.0 * X[:, RELEVANCE]
    assert binary.reward(X) == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="objective must be one of"):
        RewardModel(objective="softmax")


def test_a_request_whose_pairs_are_all_dropped_leaves_an_empty_group_that_fitting_skips():
    rng = np.random.default_rng(1)
    d = _requests(rng, 60)
    # a request of two purchased_elsewhere pairs (dropped: no label for the request) between two others
    X = np.concatenate([d.X[:6], rng.normal(size=(2, len(FEATURES))).astype(np.float32), d.X[6:]])
    lv = np.concatenate([np.where(d.purchase[:6] > 0, 5, 0), [4, 4], np.where(d.purchase[6:] > 0, 5, 0)])
    e = RewardData.from_levels(X, lv, np.array([6, 2, *[6] * 59]))
    assert e.group[:3].tolist() == [6, 0, 6] and e.X.shape[0] == 360
    assert RewardModel(rounds=20, seed=0).fit(e).evaluate(e)["purchase_ndcg@10"] > 0.5
