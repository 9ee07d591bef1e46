"""Cascade pieces on a hand-made catalogue: catalogue facts, sources, fusion, features, the ranker."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from onesearch.cascade.ranker import FEATURES, Cascade, CascadeConfig
from onesearch.cascade.sources import (
    BM25Source,
    Catalog,
    CovisitSource,
    DenseSource,
    Popularity,
    history_weights,
)
from onesearch.data import schema as S
from onesearch.retrieval import Requests


def catalog_and_train():
    items = pl.DataFrame(
        {
            S.ITEM_ID: [10, 11, 12, 13],
            S.TITLE: ["red steel screws", "blue super glue", "hot glue gun", "steel nails"],
            S.DESCRIPTION: [None] * 4,
            S.BRAND: ["Acme", "Bondo", "Bondo", None],
            S.CATEGORY_PATH: [
                ["Tools", "Fasteners", "Screws"],
                ["Tools", "Adhesives", "Glue"],
                ["Tools", "Adhesives", "Glue Guns"],
                ["Tools", "Fasteners", "Nails"],
            ],
        }  # fmt: skip
    )
    train = pl.DataFrame(
        {
            S.USER_ID: [0, 0, 1, 1, 2, 2],
            S.ITEM_ID: [11, 12, 11, 12, 11, 10],
            S.TIMESTAMP: [0, 1, 0, 1, 0, 1],
            S.EVENT: ["purchase"] * 6,
        }
    )
    return items, train, Catalog.build(items, train)


def test_catalog_facts():
    _, _, cat = catalog_and_train()
    assert cat.pop.tolist() == pytest.approx(np.log1p([1, 3, 2, 0]).tolist())
    assert cat.brand[1] == cat.brand[2] != cat.brand[0] and cat.brand[3] == -1
    assert cat.top[1] == cat.top[2] != cat.top[0]  # "Adhesives" vs "Fasteners"
    assert cat.leaf[1] != cat.leaf[2]
    assert "glue" in cat.cat_words[1] and "tools" in cat.cat_words[0]
    assert cat.rows(np.array([12, 99, 10])).tolist() == [2, 0]  # unknown ids dropped


def test_history_weights_are_recency_decays_summing_to_one():
    w = history_weights(5, decay=0.5, last=3)
    assert w.tolist() == pytest.approx([0.25 / 1.75, 0.5 / 1.75, 1 / 1.75])


def test_sources_bm25_covisit_popularity():
    _, train, cat = catalog_and_train()
    bm = BM25Source(cat).scores(Requests(["glue gun", None], [np.array([]), np.array([])]))
    assert bm[0].argmax() == 2 and bm[0, 1] > 0 and bm[0, 0] == 0 and not bm[1].any()
    cov = CovisitSource(cat, train).scores([np.array([11])])
    # 11 co-occurs with 12 twice and with 10 once; row-normalised by 11's total (3)
    assert cov[0].tolist() == pytest.approx([1 / 3, 0, 2 / 3, 0])
    pop = Popularity(cat).retrieve(Requests([None], [np.array([])]), 3)
    assert pop.items.tolist() == [[11, 12, 10]]


def test_recall_features_and_ranker():
    _, train, cat = catalog_and_train()
    emb = np.eye(4, dtype=np.float32) + 0.1
    casc = Cascade(cat, BM25Source(cat), DenseSource(cat, emb), CovisitSource(cat, train),
                   CascadeConfig(per_source=4, candidates=4, popular=1, rounds=5, early_stopping=5))  # fmt: skip
    req = Requests(["steel nails", None], [np.array([], dtype=np.int64), np.array([11])])
    rec = casc.recall(req, 4)
    assert rec.items[0, 0] == 13  # BM25 first (1/61) beats the half-weighted popularity list (0.5/61)
    assert set(rec.items[1][rec.items[1] >= 0]) >= {12, 10}  # co-purchased with 11
    rows, f = casc.features(req)
    assert f.shape == (2, 4, len(FEATURES))
    col = {n: i for i, n in enumerate(FEATURES)}
    j = list(rows[0]).index(cat.row[13])
    assert f[0, j, col["query_category_match"]] == 0.5  # "nails" names the category, "steel" does not
    assert f[0, j, col["history_length"]] == 0.0
    k = list(rows[1]).index(cat.row[12])
    assert f[1, k, col["history_top_share"]] == 1.0  # the history (glue) shares "Adhesives" with the glue gun
    assert f[1, k, col["history_leaf_share"]] == 0.0 and f[1, k, col["history_brand_share"]] == 1.0
    assert f[1, k, col["covisit"]] == pytest.approx(2 / 3)
    assert f[1, :, col["has_query"]].max() == 0.0
    with pytest.raises(RuntimeError, match="before fit"):
        casc.retrieve(req, 2)


def test_a_large_catalogue_cuts_the_batch_and_recall_is_the_same(monkeypatch):
    _, train, cat = catalog_and_train()
    emb = np.eye(4, dtype=np.float32) + 0.1
    cfg = CascadeConfig(per_source=4, candidates=4, popular=1)
    req = Requests(["steel nails", None, "glue", "hot glue"],
                   [np.array([], dtype=np.int64), np.array([11]), np.array([10, 12]), np.array([13])])  # fmt: skip
    whole = Cascade(cat, BM25Source(cat), DenseSource(cat, emb), CovisitSource(cat, train), cfg)
    assert whole.batch == cfg.batch  # 4 items: 512 requests a batch fit
    monkeypatch.setattr(
        "onesearch.cascade.ranker.BATCH_CELLS", 9
    )  # as if the catalogue were huge: 9 // 4 = 2
    cut = Cascade(cat, BM25Source(cat), DenseSource(cat, emb), CovisitSource(cat, train), cfg)
    assert cut.batch == 2
    a, b = whole.recall(req, 4), cut.recall(req, 4)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)
    monkeypatch.setattr("onesearch.cascade.ranker.BATCH_CELLS", 1)  # never below one request a batch
    assert Cascade(cat, BM25Source(cat), DenseSource(cat, emb), CovisitSource(cat, train), cfg).batch == 1
