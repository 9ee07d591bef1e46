"""Examples for the generator: sliding windows, leave-one-out targets, search histories, request errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.model.data import recommend_examples, requests, search_examples
from onesearch.model.generator import TASKS
from onesearch.model.text import QueryTokenizer
from onesearch.tokenizer.sid import SIDTable


def toy() -> tuple[Dataset, SIDTable]:
    items = pl.DataFrame(
        {
            S.ITEM_ID: [10, 11, 12, 13, 14],
            S.TITLE: ["red screws", "blue glue", "glue gun", "steel nails", "tape"],
            S.DESCRIPTION: [None] * 5,
            S.BRAND: [None] * 5,
            S.CATEGORY_PATH: [None] * 5,
        },
        schema_overrides={S.DESCRIPTION: pl.String, S.BRAND: pl.String, S.CATEGORY_PATH: pl.List(pl.String)},
    )
    # user 0 buys 10, 11, 12, 13, 14 in that order; user 1 buys 12, 10 (too short: training only)
    inter = pl.DataFrame(
        {
            S.USER_ID: [0, 0, 0, 0, 0, 1, 1],
            S.ITEM_ID: [10, 11, 12, 13, 14, 12, 10],
            S.TIMESTAMP: [0, 1, 2, 3, 4, 0, 1],
            S.EVENT: ["purchase"] * 7,
        }
    )
    log = pl.DataFrame(
        {
            S.REQUEST_ID: [0, 1, 2, 3],
            S.USER_ID: [0, 0, 0, 0],
            S.POSITION: [1, 2, 3, 4],
            S.TIMESTAMP: [1, 2, 3, 4],
            S.QUERY: ["red screws", "blue glue", "glue gun", "steel nails"],
            S.ITEM_ID: [11, 12, 13, 14],
            S.EVENT: ["purchase"] * 4,
        }
    )
    ds = Dataset("toy", items, inter, log)
    # SID rows in another order than the item ids, to catch id/row confusion
    table = SIDTable(
        np.array([14, 13, 12, 11, 10]), np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0]]), (3, 2), "t"
    )
    return ds, table


def rows(table, ids):
    return table.rows(np.array(ids)).tolist()


def test_recommend_examples_are_sliding_windows_of_the_training_prefix():
    ds, table = toy()
    sp = recommend_examples(ds, table, max_history=3, query_width=0)
    # user 0: train 10 11 12, valid 13, test 14; user 1: train 12 10 (no valid/test)
    r = lambda ids: rows(table, ids)  # noqa: E731
    assert sp.train.target.tolist() == r([11, 12]) + r([10])
    assert sp.train.history.tolist() == [[-1, -1, *r([10])], [-1, *r([10, 11])], [-1, -1, *r([12])]]
    assert sp.valid.history.tolist() == [r([10, 11, 12])] and sp.valid.target.tolist() == r([13])
    assert sp.test.history.tolist() == [r([11, 12, 13])] and sp.test.target.tolist() == r([14])  # cut to 3
    assert (sp.train.task == TASKS.index("recommend")).all()


def test_search_examples_use_the_purchases_before_the_request():
    ds, table = toy()
    vocab = QueryTokenizer.fit(["red screws", "blue glue", "glue gun"])
    sp = search_examples(ds, table, vocab, max_history=4, query_width=4)
    r = lambda ids: rows(table, ids)  # noqa: E731
    # requests by position 1..4: train = positions 1, 2; valid = 3; test = 4
    assert sp.train.target.tolist() == r([11, 12])
    assert sp.train.history.tolist() == [[-1, -1, -1, *r([10])], [-1, -1, *r([10, 11])]]
    assert sp.test.history.tolist() == [r([10, 11, 12, 13])] and sp.test.target.tolist() == r([14])
    assert (sp.test.task == TASKS.index("search")).all()
    assert (sp.train.query[:, 0] > 1).all()  # known pieces
    assert sp.test.query[0, 0] > 0  # "steel nails": pieces unseen by the vocabulary map to UNK (1)
    mixed = search_examples(ds, table, vocab, 4, 4, mix_recommend=True)
    assert mixed.train.size == sp.train.size + 3


def test_query_tokenizer_round_trip_and_unknown_pieces(tmp_path):
    vocab = QueryTokenizer.fit(["glue gun", "red screws"])
    a = vocab.encode(["glue gun", "zebra"], width=3)
    assert a.shape == (2, 3) and (a[0, :2] > 1).all() and a[0, 2] == 0
    assert a[1, 0] == 1  # unknown piece
    vocab.save(tmp_path)
    again = QueryTokenizer.load(tmp_path)
    assert again.content_hash() == vocab.content_hash()
    assert np.array_equal(again.encode(["glue gun"], 3), a[:1])


def test_requests_errors_name_the_request():
    ds, table = toy()
    vocab = QueryTokenizer.fit(["glue"])
    ex = requests(table, vocab, [[10, 11], []], ["glue", None], max_history=3, query_width=2)
    assert ex.task.tolist() == [TASKS.index("search"), TASKS.index("recommend")]
    assert ex.history.tolist() == [[-1, *rows(table, [10, 11])], [-1, -1, -1]]
    with pytest.raises(KeyError, match=r"request 1: history has item id\(s\) not in the SID table: \[99\]"):
        requests(table, vocab, [[10], [99]], None, 3, 2)
    with pytest.raises(ValueError, match="request 0: the query is empty"):
        requests(table, vocab, [[10]], ["  "], 3, 2)
    with pytest.raises(ValueError, match="recommendation requests only"):
        requests(table, None, [[10]], ["glue"], 3, 2)


def test_catalogue_examples_make_every_item_with_text_a_target():
    from onesearch.model.data import catalogue_examples, catalogue_queries

    ds, table = toy()
    items = ds.items.with_columns(
        pl.Series(
            S.CATEGORY_PATH,
            [["Shop", "Fasteners", "Screws"], ["Shop", "Adhesives"], ["Shop", "Adhesives", "Glue Guns"],
             ["Shop", "Fasteners", "Nails"], None],
        )
    )  # fmt: skip
    items = items.with_columns(
        pl.when(pl.col(S.ITEM_ID) == 14).then(None).otherwise(pl.col(S.TITLE)).alias(S.TITLE)
    )
    ids, queries = catalogue_queries(items, 3, seed=0)
    by_item: dict[int, list[str]] = {}
    for i, q in zip(ids.tolist(), queries, strict=True):
        by_item.setdefault(i, []).append(q)
    # view 0 the title, view 1 the category words (the shared root "Shop" dropped), view 2 category + title words
    # not already in the query (1 to 3 of them, drawn); item 12's title adds only "gun" ("glue" is a category word)
    assert by_item[10][:2] == ["red screws", "fasteners screws"] and by_item[10][2] == "fasteners screws red"
    assert by_item[11][:2] == ["blue glue", "adhesives"] and by_item[11][2] in (
        "adhesives blue",
        "adhesives glue",
        "adhesives blue glue",
    )
    assert by_item[12] == ["glue gun", "adhesives glue guns", "adhesives glue guns gun"]
    assert by_item[13][:2] == ["steel nails", "fasteners nails"]
    assert 14 not in by_item  # no title, no category: nothing to query it by
    vocab = QueryTokenizer.fit(queries)
    ex = catalogue_examples(items, table, vocab, 3, max_history=4, query_width=6)
    assert ex.size == len(queries)
    assert (ex.task == TASKS.index("search")).all() and (ex.history == -1).all()  # empty history
    assert ex.target.tolist() == rows(table, ids.tolist())  # SID-table rows of the items, not their ids
    np.testing.assert_array_equal(ex.query, vocab.encode(queries, 6))
    assert catalogue_queries(items, 3, seed=0)[1] == queries  # seeded
    with pytest.raises(ValueError, match=">= 0"):
        catalogue_queries(items, -1)
    unknown = items.with_columns(pl.lit(99, dtype=pl.Int64).alias(S.ITEM_ID))
    with pytest.raises(KeyError, match="catalogue items"):
        catalogue_examples(unknown, table, vocab, 1, 4, 6)
