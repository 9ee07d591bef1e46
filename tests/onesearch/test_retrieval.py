"""Side-by-side metrics, item buckets and the shared top-k on hand-made cases."""

import numpy as np
import pytest

from onesearch.retrieval import COLD, HEAD, TAIL, hr_curve, item_buckets, side_by_side_metrics, top_k


def test_buckets_head_is_the_top_fifth_of_purchased_items():
    items = np.array([1, 2, 3, 4, 5, 6])
    train = np.array([1, 1, 1, 2, 2, 3, 4, 5])  # counts 3, 2, 1, 1, 1; item 6 never bought
    assert item_buckets(items, train).tolist() == [HEAD, TAIL, TAIL, TAIL, TAIL, COLD]
    # ties in count are broken by the lower id, so the result does not depend on input order
    assert item_buckets(items, np.array([2, 1]), head_share=0.5).tolist() == [
        HEAD,
        TAIL,
        COLD,
        COLD,
        COLD,
        COLD,
    ]


def test_side_by_side_metrics_by_hand():
    items = np.array([1, 2, 3, 4, 5, 6])
    buckets = np.array([HEAD, TAIL, TAIL, TAIL, TAIL, COLD])
    pad = lambda row: row + [-1] * (50 - len(row))  # noqa: E731
    retrieved = np.array(
        [
            pad([2, 1]),  # target 1 (head) at rank 2; slots: tail, head
            pad([6, 3, 2]),  # target 6 (cold) at rank 1; slots: cold, tail, tail
            pad([1]),  # target 4 (tail) missing; slots: head
        ]
    )
    target = np.array([1, 6, 4])
    m = side_by_side_metrics(retrieved, target, buckets, items)
    assert m["hr@10"] == pytest.approx(2 / 3) and m["hr@50"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    assert m["mrr@10"] == pytest.approx((0.5 + 1) / 3)
    assert m["tail_hr@10"] == 0.0  # one tail target, missed
    assert m["cold_hr@10"] == 1.0
    assert m["tail_exposure@10"] == pytest.approx(4 / 6)  # 6 filled slots, 4 of them tail or cold
    # without the cold target: requests 1 (rank 2) and 3 (miss)
    assert m["cold_requests"] == 1
    assert m["warm_hr@10"] == pytest.approx(1 / 2) and m["warm_hr@50"] == pytest.approx(1 / 2)
    assert m["warm_ndcg@10"] == pytest.approx((1 / np.log2(3)) / 2)
    assert m["warm_mrr@10"] == pytest.approx(0.5 / 2)
    assert hr_curve(retrieved, target, max_k=3) == pytest.approx([1 / 3, 2 / 3, 2 / 3])


def test_bucket_without_targets_is_none():
    items = np.array([1, 2])
    m = side_by_side_metrics(np.array([[1] + [-1] * 49]), np.array([1]), np.array([HEAD, TAIL]), items)
    assert m["tail_hr@10"] is None and m["cold_hr@10"] is None
    only_cold = side_by_side_metrics(
        np.array([[9] + [-1] * 49]), np.array([9]), np.array([HEAD, TAIL]), items
    )
    assert only_cold["cold_requests"] == 1 and only_cold["warm_hr@10"] is None


def test_top_k_breaks_ties_by_position_and_pads():
    scores = np.array([[0.5, 0.9, 0.5, 0.1]])
    got = top_k(scores, 3, np.array([10, 11, 12, 13]))
    assert got.items.tolist() == [[11, 10, 12]]
    many = np.zeros((1, 1000))
    many[0, 700] = 1.0
    assert top_k(many, 4, np.arange(1000)).items.tolist() == [[700, 0, 1, 2]]  # zero-score ties: lowest first
    got = top_k(scores, 6, np.array([10, 11, 12, 13]))
    assert got.items.tolist() == [[11, 10, 12, 13, -1, -1]] and np.isinf(got.scores[0, 4:]).all()
