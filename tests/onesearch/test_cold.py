"""Cold items for the cold-start benchmark: no training split reads a purchase of them, the held-out ones stay."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from onesearch.data import schema as S
from onesearch.data.cold import make_cold
from onesearch.data.dataset import Dataset
from onesearch.data.registry import load_dataset
from onesearch.data.search_set import build_search_log
from onesearch.data.splits import leave_one_out, training_purchases
from onesearch.retrieval import split_requests


def hand_made() -> Dataset:
    """Four users with purchases of items 0-4 (times 1, 2, ...), a HEM search log built from them."""
    items = pl.DataFrame(
        {
            S.ITEM_ID: [0, 1, 2, 3, 4],
            S.TITLE: ["red pump", "blue valve", "green hose", "steel pipe", "brass tap"],
            S.DESCRIPTION: [None] * 5,
            S.BRAND: [None] * 5,
            S.CATEGORY_PATH: [["Tools", "Pumps"], ["Tools", "Valves"], ["Tools", "Hoses"], ["Tools", "Pipes"],
                              ["Tools", "Taps"]],
        }
    )  # fmt: skip
    seqs = {0: [0, 1, 2, 3], 1: [1, 2, 3, 0], 2: [2, 3, 4, 1], 3: [3, 0, 1, 2]}
    rows = [(u, i, t + 1) for u, seq in seqs.items() for t, i in enumerate(seq)]
    inter = pl.DataFrame(rows, schema=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP], orient="row").with_columns(
        pl.lit("purchase").alias(S.EVENT)
    )
    ds = Dataset("hand", items, inter)
    return Dataset("hand", ds.items, ds.interactions, build_search_log(ds.items, ds.interactions))


def test_a_cold_item_keeps_only_its_held_out_purchases_by_hand():
    ds = hand_made()
    # seed 11 picks item 0 of the five purchased ones
    cold, ids = make_cold(ds, 1, seed=11)
    assert ids.tolist() == [0] and cold.name == "hand-cold1-s11"
    got = (
        cold.interactions.sort(S.USER_ID, S.TIMESTAMP).group_by(S.USER_ID, maintain_order=True).agg(S.ITEM_ID)
    )
    # user 0 bought item 0 first (training): gone; user 1 bought it last (the test target): kept;
    # user 3 bought it second, a training purchase of both tasks: gone
    assert dict(got.iter_rows()) == {0: [1, 2, 3], 1: [1, 2, 3, 0], 2: [2, 3, 4, 1], 3: [3, 1, 2]}
    log = cold.search_log.sort(S.USER_ID, S.POSITION)
    # each request's position is the number of the user's (kept) purchases before it
    # user 0's request for item 1 now has no purchase before it
    assert log.filter(pl.col(S.USER_ID) == 0)[[S.ITEM_ID, S.POSITION]].rows() == [(1, 0), (2, 1), (3, 2)]
    # user 3's request for item 0 (a training target) is gone, the later ones count one purchase less
    assert log.filter(pl.col(S.USER_ID) == 3)[[S.ITEM_ID, S.POSITION]].rows() == [(1, 1), (2, 2)]
    assert log.filter(pl.col(S.USER_ID) == 1)[[S.ITEM_ID, S.POSITION]].rows() == [(2, 1), (3, 2), (0, 3)]


def test_cold_items_are_in_no_training_split_and_stay_test_targets():
    ds = load_dataset("synthetic-tiny")
    cold, ids = make_cold(ds, 15, seed=0)
    assert len(ids) == 15 and cold.items.equals(ds.items)
    buys = cold.interactions.filter(pl.col(S.EVENT) == "purchase")
    for scope in ("recommend", "search", "both"):
        assert not training_purchases(buys, cold.search_log, scope)[S.ITEM_ID].is_in(ids.tolist()).any(), (
            scope
        )
    train_rows = leave_one_out(cold.search_log, order_by=(S.POSITION, S.TIMESTAMP)).filter(
        pl.col(S.SPLIT) == "train"
    )
    assert not train_rows[S.ITEM_ID].is_in(ids.tolist()).any()
    # no other event on them either, and some test requests still ask for them
    assert not cold.interactions.filter(pl.col(S.EVENT) != "purchase")[S.ITEM_ID].is_in(ids.tolist()).any()
    for task in ("recommend", "search"):
        assert np.isin(split_requests(cold, task)["test"][1], ids).sum() > 0, task
    # the same seed picks the same items
    assert make_cold(ds, 15, seed=0)[1].tolist() == ids.tolist()
    assert make_cold(ds, 15, seed=1)[1].tolist() != ids.tolist()


def test_make_cold_refuses_impossible_counts():
    ds = hand_made()
    with pytest.raises(ValueError, match="5 purchased items with text"):
        make_cold(ds, 5)
    with pytest.raises(ValueError, match="--cold-items"):
        make_cold(ds, 0)
