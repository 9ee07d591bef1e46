"""Interaction levels derived from a small hand-made log."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from onesearch.align.levels import LEVEL, LEVEL_NAMES, derive_levels, level_counts
from onesearch.data import schema as S

ITEMS = pl.DataFrame(
    {
        S.ITEM_ID: [0, 1, 2, 3, 4, 5, 6],
        S.CATEGORY_PATH: [["Home", "Mugs"]] * 4 + [["Home", "Pans"]] * 2 + [["Home", "Mugs"]],
    }
)
"""Items 0-3 and 6 are mugs, 4-5 pans."""


def _inter(rows):
    return pl.DataFrame(
        rows, schema=[S.USER_ID, S.ITEM_ID, S.EVENT, S.REQUEST_ID], orient="row"
    ).with_columns(pl.col(S.REQUEST_ID).cast(pl.Int64))


def _levels(df: pl.DataFrame, rid: int) -> dict[int, int]:
    part = df.filter(pl.col(S.REQUEST_ID) == rid)
    return dict(zip(part[S.ITEM_ID].to_list(), part[LEVEL].to_list(), strict=True))


def test_every_level_from_a_search_session():
    inter = _inter([
        (1, 0, "impression", 10), (1, 1, "impression", 10), (1, 2, "impression", 10),
        (1, 0, "click", 10), (1, 1, "click", 10), (1, 0, "cart", 10), (1, 0, "purchase", 10),
        (2, 3, "purchase", None),  # a mug bought outside the search
    ])  # fmt: skip
    log = pl.DataFrame({S.REQUEST_ID: [10], S.USER_ID: [1], S.ITEM_ID: [0], S.EVENT: ["purchase"]})
    got = derive_levels(ITEMS, inter, log, np.random.default_rng(0))
    # purchased 0; purchased elsewhere 3 (same leaf); clicked 1; shown 2; never-shown mug 6; pans at random
    assert _levels(got, 10) == {0: 5, 3: 4, 1: 3, 2: 2, 6: 1, 4: 0, 5: 0}
    assert got[LEVEL].to_list() == [5, 4, 3, 2, 1, 0, 0]  # strongest first
    assert level_counts(got) == dict(zip(LEVEL_NAMES.values(), [1, 1, 1, 1, 1, 2], strict=True))


def test_purchase_only_logs_derive_what_they_can():
    # Amazon-like: purchases only, no request ids; the request's target is its purchase
    inter = _inter([(1, 0, "purchase", None), (2, 3, "purchase", None), (2, 1, "purchase", None)])
    log = pl.DataFrame({S.REQUEST_ID: [20], S.USER_ID: [2], S.ITEM_ID: [1], S.EVENT: ["purchase"]})
    got = derive_levels(ITEMS, inter, log, np.random.default_rng(0), random=1)
    lv = _levels(got, 20)
    assert lv == {1: 5, 0: 4, 3: 4, 2: 1, 6: 1, **{k: 0 for k in lv if k in (4, 5)}}
    assert sorted(v for k, v in lv.items() if k in (4, 5)) == [0]  # one random pan
    assert level_counts(got)["clicked"] == level_counts(got)["shown"] == 0


def test_retrieved_items_stand_in_for_impressions_only_where_none_are_logged():
    inter = _inter([(1, 0, "purchase", None), (2, 3, "purchase", None), (2, 1, "purchase", None)])
    log = pl.DataFrame({S.REQUEST_ID: [20], S.USER_ID: [2], S.ITEM_ID: [1], S.EVENT: ["purchase"]})
    got = derive_levels(ITEMS, inter, log, np.random.default_rng(0), random=1,
                        retrieved={20: np.array([2, 4, -1, 1, 0])})  # fmt: skip
    # retrieved and not bought in this request: shown (0 too, though bought elsewhere); the purchase keeps level 5;
    # 3 is still sampled as bought elsewhere, 6 as an unshown mug, and the one random pan is 5 (4 is taken)
    assert _levels(got, 20) == {1: 5, 3: 4, 0: 2, 2: 2, 4: 2, 6: 1, 5: 0}
    # a request with logged impressions keeps its own: the retrieved pan 4 is not made "shown"
    inter = _inter([(1, 0, "impression", 10), (1, 2, "impression", 10), (1, 0, "purchase", 10)])
    log = pl.DataFrame({S.REQUEST_ID: [10], S.USER_ID: [1], S.ITEM_ID: [0], S.EVENT: ["purchase"]})
    got = derive_levels(ITEMS, inter, log, np.random.default_rng(0), retrieved={10: np.array([4])})
    assert _levels(got, 10)[2] == 2 and _levels(got, 10)[4] == 0


def test_bad_tables_are_refused_with_the_column_named():
    log = pl.DataFrame({S.REQUEST_ID: [20], S.USER_ID: [2], S.ITEM_ID: [1]})
    with pytest.raises(ValueError, match="category_path"):
        derive_levels(ITEMS.drop(S.CATEGORY_PATH), _inter([(1, 0, "purchase", None)]), log,
                      np.random.default_rng(0))  # fmt: skip
    with pytest.raises(ValueError, match="unknown value"):
        derive_levels(ITEMS, _inter([(1, 0, "like", None)]), log, np.random.default_rng(0))
