import numpy as np
import pytest

from onesearch.metrics import ranking_metrics, target_ranks


def test_ranks_are_one_based_and_zero_when_missing():
    items = np.array([[5, 7, 9], [1, 2, 3], [4, 4, 8]])
    assert target_ranks(items, np.array([7, 0, 4])).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="items must be"):
        target_ranks(items, np.array([1, 2]))


def test_metrics_on_hand_computed_ranks():
    ranks = np.array([1, 2, 0, 11])
    m = ranking_metrics(ranks, ks=(1, 10), mrr_k=10)
    assert m["recall@1"] == 0.25
    assert m["recall@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 4)  # 1/log2(1+1) + 1/log2(2+1)
    assert m["ndcg@1"] == 0.25
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 4)
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics(np.array([]))
