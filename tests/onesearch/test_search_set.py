import polars as pl
import pytest

from onesearch.data.amazon import load_amazon
from onesearch.data.search_set import SearchSetConfig, build_search_log_with_stats, category_query, words


def test_category_query_drops_stop_words_and_repeats_by_hand():
    path = [
        "Industrial & Scientific",
        "Tapes, Adhesives & Sealants",
        "Adhesives",
        "Glue Sticks and Glue Guns",
    ]
    assert category_query(path) == [
        "industrial",
        "scientific",
        "tapes",
        "adhesives",
        "sealants",
        "glue",
        "sticks",
        "guns",
    ]
    assert category_query(path, drop_levels=1) == ["tapes", "adhesives", "sealants", "glue", "sticks", "guns"]
    assert category_query(None) == [] and category_query([]) == []
    assert words("1/2-Inch HD Stainless-Steel") == ["1", "2-inch", "hd", "stainless-steel"]


def test_search_log_from_the_toy_purchases(toy_amazon):
    ds = load_amazon(toy_amazon)
    log, st = build_search_log_with_stats(ds.items, ds.interactions)
    # purchases after each user's first: u0 -> items 1, 2, 0 (positions 1..3); u1 -> 3, 1; u2 -> 0.
    # item 3 has no category, so u1's purchase at position 1 is skipped.
    assert st == {
        "requests": 5,
        "skipped_no_category": 1,
        "skipped_title_query": 0,
        "dropped_shared_root": True,
        "distinct_queries": 3,
    }
    assert log.select("user_id", "position", "item_id", "query").rows() == [
        (0, 1, 1, "fasteners collated staples"),
        (0, 2, 2, "tapes adhesives sealants cyanoacrylate"),
        (0, 3, 0, "fasteners screws wood"),
        (1, 2, 1, "fasteners collated staples"),
        (2, 1, 0, "fasteners screws wood"),
    ]
    assert log["request_id"].to_list() == [0, 1, 2, 3, 4]
    assert set(log["event"]) == {"purchase"}
    # position = number of earlier purchases = the timestamp in these order-only sets
    assert (log["position"] == log["timestamp"]).all()


def test_title_words_are_seeded_and_never_the_title_verbatim(toy_amazon):
    ds = load_amazon(toy_amazon)
    cfg = SearchSetConfig(title_words=2, seed=3)
    a, _ = build_search_log_with_stats(ds.items, ds.interactions, cfg)
    b, _ = build_search_log_with_stats(ds.items, ds.interactions, cfg)
    assert a.equals(b)
    titles = dict(zip(ds.items["item_id"], ds.items["title"], strict=True))
    for q, iid in a.select("query", "item_id").iter_rows():
        extra = q.split()[
            len(category_query(ds.items.filter(pl.col("item_id") == iid)["category_path"][0].to_list(), 1)) :
        ]
        assert 1 <= len(extra) <= 2
        assert set(extra) <= set(words(titles[iid]))
        assert q != " ".join(words(titles[iid]))


def test_whole_title_is_never_spelled_out():
    # the category says "glue" and the title is "Glue Gel": appending "gel" would spell the title, so it is dropped
    items = pl.DataFrame(
        {"item_id": [0, 1], "title": ["Glue Gel", "X"], "category_path": [["Root", "Glue"], ["Root", "X"]]}
    )
    inter = pl.DataFrame(
        {"user_id": [0, 0], "item_id": [1, 0], "timestamp": [0, 1], "event": ["purchase"] * 2}
    )
    log, _ = build_search_log_with_stats(items, inter, SearchSetConfig(title_words=3, drop_shared_root=True))
    assert log["query"].to_list() == ["glue"]


def test_a_query_never_holds_every_title_word():
    # "Lab Gloves" under category Lab > Gloves: the category words alone spell the title -> skipped;
    # "Nitrile Gloves" under Gloves: appending "nitrile" would cover the title in another order -> dropped
    items = pl.DataFrame(
        {
            "item_id": [0, 1, 2],
            "title": ["Lab Gloves", "Nitrile Gloves", "X"],
            "category_path": [["Root", "Lab", "Gloves"], ["Root", "Gloves"], ["Root", "X"]],
        }
    )
    inter = pl.DataFrame(
        {"user_id": [0, 0, 0], "item_id": [2, 0, 1], "timestamp": [0, 1, 2], "event": ["purchase"] * 3}
    )
    log, st = build_search_log_with_stats(items, inter, SearchSetConfig(title_words=2))
    assert log.select("item_id", "query").rows() == [(1, "gloves")]
    assert st["skipped_title_query"] == 1


def test_config_validation():
    with pytest.raises(ValueError, match="title_words must be >= 0"):
        SearchSetConfig(title_words=-1)
