import numpy as np
import polars as pl
import pytest

from onesearch.tokenizer.embeddings import cf_embeddings, cooccurrence, fuse, item_texts


def _inter(seqs):
    rows = [(u, i, t, "purchase") for u, s in seqs.items() for t, i in enumerate(s)]
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "event"], orient="row")


def test_cooccurrence_counts_by_hand():
    m = cooccurrence(_inter({0: [10, 11, 12], 1: [12, 10]}), np.array([10, 11, 12, 13]), window=1).toarray()
    # window 1: user 0 pairs (10,11), (11,12); user 1 pair (12,10); symmetric; item 13 never seen
    want = np.zeros((4, 4))
    for a, b in [(0, 1), (1, 2), (2, 0)]:
        want[a, b] += 1
        want[b, a] += 1
    assert np.array_equal(m, want)


def test_cf_embeddings_group_items_bought_together():
    rng = np.random.default_rng(0)
    # two communities: users buy within {0..9} or within {10..19}; item 20 never bought
    seqs = {u: list(rng.choice(10, 6, replace=False) + (10 if u % 2 else 0)) for u in range(200)}
    emb = cf_embeddings(_inter(seqs), np.arange(21), dim=4)
    assert emb.shape == (21, 4) and np.allclose(emb[20], 0)
    sim = emb[:20] @ emb[:20].T
    within = (sim[:10, :10].mean() + sim[10:, 10:].mean()) / 2
    across = sim[:10, 10:].mean()
    assert within > across + 0.5


def test_fuse_has_unit_norm_and_keeps_text_for_cold_items():
    text = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    cf = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    out = fuse(text, cf, 0.2)
    assert np.allclose(np.linalg.norm(out, axis=1), 1)
    assert np.allclose(out[0], [np.sqrt(0.8), 0, 0, np.sqrt(0.2)])
    assert np.allclose(out[1], [0, 1, 0, 0])
    with pytest.raises(ValueError, match="cf_weight must be in"):
        fuse(text, cf, 2.0)


def test_item_texts_need_titles():
    items = pl.DataFrame(
        {"title": ["Glue Gel."], "brand": ["Acme"], "category_path": [["A", "B"]], "description": ["x y"]}
    )
    assert item_texts(items) == ["Glue Gel. Brand: Acme. Category: A > B. x y"]
    with pytest.raises(ValueError, match="no titles"):
        item_texts(items.with_columns(pl.lit(None, pl.String).alias("title")))
