import numpy as np
import polars as pl
import pytest

from onesearch.tokenizer.keywords import (
    KeywordConfig,
    enhance,
    extract_keywords,
    hot_word_weights,
    keyword_embeddings,
)


def _items(rows):
    return pl.DataFrame(
        rows,
        schema={"title": pl.String, "brand": pl.String, "category_path": pl.List(pl.String)},
        orient="row",
    )


CATALOG = _items(
    [
        ("Premium Glass Beaker 100 ml", "Pyrex", ["Root", "Lab", "Beakers"]),
        ("Premium Glass Beaker 250 ml", "Pyrex", ["Root", "Lab", "Beakers"]),
        ("Glass Beaker Set", "Kimble", ["Root", "Lab", "Beakers"]),
        ("Premium Steel Shovel", "Ames", ["Root", "Garden", "Shovels"]),
        ("Premium Steel Shovel Long", "Ames", ["Root", "Garden", "Shovels"]),
        ("Steel Shovel Short", "Fiskars", ["Root", "Garden", "Shovels"]),
    ]
)


def test_hot_word_weights_by_hand():
    hot = hot_word_weights(CATALOG, KeywordConfig(hot_word_power=1.0, min_word_count=2))
    # "premium": 2 of 3 Lab titles and 2 of 3 Garden titles -> even spread, H = 1 -> weight 0
    assert hot["premium"] == pytest.approx(0.0)
    # "beaker" / "shovel" live in one top category -> H = 0 -> weight 1
    assert hot["beaker"] == pytest.approx(1.0) and hot["shovel"] == pytest.approx(1.0)
    # "steel": 3 Garden titles, 0 Lab -> 1; "glass": 3 Lab -> 1
    assert hot["steel"] == pytest.approx(1.0)


def test_uneven_spread_by_hand():
    items = _items(
        [
            ("Red Cup", None, ["R", "A", "x"]),
            ("Red Cup", None, ["R", "A", "x"]),
            ("Red Pan", None, ["R", "B", "y"]),
            ("Blue Pan", None, ["R", "B", "y"]),
        ]
    )
    hot = hot_word_weights(items, KeywordConfig(hot_word_power=1.0, min_word_count=1))
    # "red": rate 2/2 in A and 1/2 in B -> p = (2/3, 1/3), H/log2 = 0.9183 -> weight 0.0817
    h = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)) / np.log(2)
    assert hot["red"] == pytest.approx(1 - h)


def test_extract_keywords_finds_core_attributes_and_drops_hot_words():
    kws = [dict(k) for k in extract_keywords(CATALOG, KeywordConfig(min_word_count=2))]
    first = kws[0]
    assert first["beakers"] == 1.0  # category leaf
    assert first["lab"] == 0.5  # its parent (the shared root is not used)
    assert first["pyrex"] == 0.3  # brand
    assert first["glass"] == pytest.approx(0.4)  # material, specific to Lab here
    assert first["100ml"] == 0.15  # size spec
    assert "premium" not in " ".join(first)  # the hot word is not part of any keyword
    assert first["glass beaker"] == 1.0  # product type: title head without brand, units, numbers
    fourth = kws[3]
    assert "steel shovel" in fourth and not any("premium" in k for k in fourth)


def test_keyword_embeddings_weighted_mean_and_enhance():
    kws = [[("a", 3.0), ("b", 1.0)], []]
    vecs = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
    kw, has = keyword_embeddings(kws, lambda v: np.array([vecs[k] for k in v]), 2)
    assert np.allclose(kw[0], [0.75, 0.25]) and has.tolist() == [True, False]
    e = np.array([[0.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    out = enhance(e, kw, has, 0.5)
    k = np.array([0.75, 0.25]) / np.linalg.norm([0.75, 0.25])
    want = 0.5 * np.array([0.0, 1.0]) + 0.5 * k
    assert np.allclose(out[0], want / np.linalg.norm(want), atol=1e-6)
    assert np.allclose(out[1], [0.6, 0.8])  # no keywords: the normalised item embedding
    with pytest.raises(ValueError, match="weight must be in"):
        enhance(e, kw, has, 1.5)
