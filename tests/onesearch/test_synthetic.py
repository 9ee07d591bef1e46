"""Behaviour of the synthetic world: determinism, schema, popularity, cold start, hot words, queries, funnel."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.synthetic import PRESETS, WorldConfig, generate_world, query_vocabulary

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return generate_world("tiny")


@pytest.fixture(scope="module")
def small() -> Dataset:
    return generate_world("small")


def _search_events(ds: Dataset) -> pl.DataFrame:
    return ds.interactions.filter(pl.col(S.REQUEST_ID).is_not_null())


def _hot_pattern(words: tuple[str, ...]) -> str:
    return r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"


# -- determinism and identity -----------------------------------------------------------------------------


def test_same_seed_gives_identical_tables_and_another_seed_differs(tiny: Dataset) -> None:
    again = generate_world("tiny")
    for table in ("items", "interactions", "search_log"):
        assert_frame_equal(getattr(tiny, table), getattr(again, table))
    other = generate_world("tiny", seed=1)
    for table in ("items", "interactions", "search_log"):
        assert not getattr(tiny, table).equals(getattr(other, table)), table
    assert other.meta["world"]["seed"] == 1
    # a seed given explicitly equals the same seed inside the config
    assert_frame_equal(other.interactions, generate_world(replace(TINY, seed=1)).interactions)


def test_name_source_and_meta(tiny: Dataset) -> None:
    assert tiny.name == "synthetic-tiny"
    assert tiny.source == "synthetic"
    assert tiny.meta["preset"] == "tiny"
    assert tiny.meta["world"]["n_items"] == TINY.n_items
    assert WorldConfig(**{**tiny.meta["world"], "hot_words": tuple(tiny.meta["world"]["hot_words"])}) == TINY
    assert generate_world(replace(TINY, seed=7)).name == "synthetic-tiny"  # a preset up to its seed
    assert generate_world(replace(TINY, n_users=50)).name == "synthetic-custom"


def test_presets_are_ordered_by_size() -> None:
    assert list(PRESETS) == ["tiny", "small", "medium", "large"]
    sizes = [(p.n_items, p.n_users) for p in PRESETS.values()]
    assert sizes == sorted(sizes)
    assert PRESETS["large"].n_items == 1_000_000


# -- schema and referential checks --------------------------------------------------------------------------


def test_tables_follow_the_schema_and_targets_have_event_rows(tiny: Dataset) -> None:
    S.validate(tiny.items, S.ITEMS)
    S.validate(tiny.interactions, S.INTERACTIONS)
    S.validate(tiny.search_log, S.SEARCH_LOG)
    assert tiny.items[S.ITEM_ID].to_list() == list(range(TINY.n_items))
    assert tiny.interactions[S.USER_ID].n_unique() == TINY.n_users
    assert tiny.interactions[S.TIMESTAMP].is_sorted()  # the log is time-ordered
    log = tiny.search_log
    assert log.height > 0.8 * tiny.interactions[S.REQUEST_ID].n_unique()
    matched = log.join(tiny.interactions, on=[S.REQUEST_ID, S.ITEM_ID, S.EVENT, S.USER_ID], how="semi")
    assert matched.height == log.height


def test_search_log_target_is_the_strongest_event_and_position_counts_earlier_purchases(
    tiny: Dataset,
) -> None:
    rank = {e: i for i, e in enumerate(S.EVENTS)}
    ev = _search_events(tiny).with_columns(
        strength=pl.col(S.EVENT).replace_strict(rank, return_dtype=pl.Int64)
    )
    best = ev.group_by(S.REQUEST_ID).agg(pl.col("strength").max().alias("best"))
    clicked = best.filter(pl.col("best") >= rank["click"])
    log = tiny.search_log.with_columns(strength=pl.col(S.EVENT).replace_strict(rank, return_dtype=pl.Int64))
    assert sorted(log[S.REQUEST_ID].to_list()) == sorted(clicked[S.REQUEST_ID].to_list())
    joined = log.join(best, on=S.REQUEST_ID)
    assert (joined["strength"] == joined["best"]).all()
    # strongest event on the target item, not just anywhere in the request
    per_item = ev.group_by(S.REQUEST_ID, S.ITEM_ID).agg(pl.col("strength").max().alias("on_item"))
    on_target = log.join(per_item, on=[S.REQUEST_ID, S.ITEM_ID])
    assert (on_target["strength"] == on_target["on_item"]).all()
    assert (log[S.QUERY].str.strip_chars().str.len_chars() > 0).all()
    # position = the user's purchases strictly before the request
    buys = tiny.interactions.filter(pl.col(S.EVENT) == "purchase").select(
        S.USER_ID, pl.col(S.TIMESTAMP).alias("t")
    )
    want = (
        log.select(S.REQUEST_ID, S.USER_ID, S.TIMESTAMP)
        .join(buys, on=S.USER_ID)
        .group_by(S.REQUEST_ID)
        .agg((pl.col("t") < pl.col(S.TIMESTAMP)).sum().alias("want"))
    )
    got = log.join(want, on=S.REQUEST_ID)
    assert (got[S.POSITION] == got["want"]).all()
    assert got[S.POSITION].max() > 0


# -- popularity and cold start ---------------------------------------------------------------------------------


def _top20_share(ds: Dataset, event: str | None) -> float:
    inter = ds.interactions if event is None else ds.interactions.filter(pl.col(S.EVENT) == event)
    counts = np.sort(np.bincount(inter[S.ITEM_ID].to_numpy(), minlength=ds.items.height))[::-1]
    return counts[: ds.items.height // 5].sum() / counts.sum()


def test_popularity_is_skewed_and_unrelated_to_item_id(small: Dataset) -> None:
    # measured on seed 0: 0.86 of purchases and 0.78 of all events go to the top 20% of items
    assert _top20_share(small, "purchase") > 0.75
    assert _top20_share(small, None) > 0.70
    counts = np.bincount(small.interactions[S.ITEM_ID].to_numpy(), minlength=small.items.height)
    assert abs(np.corrcoef(np.arange(len(counts)), counts)[0, 1]) < 0.1
    top = np.argsort(counts)[::-1][:50]
    assert top.max() > small.items.height // 2  # the most popular items are spread over the id range


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_cold_start_share_items_never_appear(share: float) -> None:
    cfg = replace(TINY, cold_start_share=share)
    ds = generate_world(cfg)
    touched = set(ds.interactions[S.ITEM_ID].unique().to_list())
    cold = set(range(cfg.n_items)) - touched
    assert abs(len(cold) / cfg.n_items - share) <= 0.03
    assert not cold & set(ds.search_log[S.ITEM_ID].to_list())


def test_no_cold_items_when_share_is_zero() -> None:
    ds = generate_world(replace(TINY, cold_start_share=0.0))
    assert ds.interactions[S.ITEM_ID].n_unique() == TINY.n_items


# -- catalog ---------------------------------------------------------------------------------------------


def test_hot_words_cross_unrelated_categories(small: Dataset) -> None:
    cfg = PRESETS["small"]
    items = small.items.with_columns(
        leaf=pl.col(S.CATEGORY_PATH).list.last(),
        root=pl.col(S.CATEGORY_PATH).list.first(),
        hot=pl.col(S.TITLE).str.to_lowercase().str.contains(_hot_pattern(cfg.hot_words)),
    )
    hot = items.filter("hot")
    assert abs(hot.height / items.height - cfg.hot_word_rate) < 0.03
    assert hot["leaf"].n_unique() >= 0.9 * items["leaf"].n_unique()
    assert hot["root"].n_unique() == items["root"].n_unique()
    # every hot word shows up, each in several departments
    for word in cfg.hot_words:
        roots = items.filter(pl.col(S.TITLE).str.to_lowercase().str.contains(_hot_pattern((word,))))["root"]
        assert roots.n_unique() >= 3, word
    none = generate_world(replace(TINY, hot_word_rate=0.0)).items
    assert not none[S.TITLE].str.to_lowercase().str.contains(_hot_pattern(TINY.hot_words)).any()


def test_titles_and_attributes_describe_the_item(tiny: Dataset) -> None:
    items = tiny.items
    assert items[S.TITLE].null_count() == 0 and items[S.DESCRIPTION].null_count() == 0
    for row in items.head(100).iter_rows(named=True):
        attrs = {a["name"]: a["value"] for a in row[S.ATTRIBUTES]}
        assert set(attrs) == {"material", "color", "size"}
        title = row[S.TITLE].lower()
        assert attrs["material"] in title and attrs["color"] in title and attrs["size"].lower() in title
        assert row[S.BRAND] in row[S.TITLE]
        assert attrs["material"] in row[S.DESCRIPTION].lower()
        assert len(row[S.CATEGORY_PATH]) == TINY.category_depth and all(row[S.CATEGORY_PATH])
    assert items[S.CATEGORY_PATH].list.last().n_unique() == TINY.n_categories
    assert (items[S.PRICE] > 0).all()
    # prices differ between leaves far more than they would by chance
    medians = items.group_by(pl.col(S.CATEGORY_PATH).list.last()).agg(pl.col(S.PRICE).median())[S.PRICE]
    assert medians.max() / medians.min() > 2


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_category_depth_sets_the_path_length(depth: int) -> None:
    cfg = replace(TINY, n_items=60, n_users=20, category_depth=depth)
    paths = generate_world(cfg).items[S.CATEGORY_PATH]
    assert (paths.list.len() == depth).all()
    leaf = paths.list.last()
    assert leaf.n_unique() == cfg.n_categories
    if depth >= 2:  # several leaves share a root
        assert paths.list.first().n_unique() < cfg.n_categories


def test_brands_specialise_in_a_department(small: Dataset) -> None:
    per = small.items.group_by(S.BRAND, pl.col(S.CATEGORY_PATH).list.first().alias("root")).len()
    home = per.group_by(S.BRAND).agg(pl.col("len").max().alias("home"), pl.col("len").sum().alias("all"))
    assert home["home"].sum() / home["all"].sum() > 0.8  # brand_specialisation = 0.85


# -- queries ---------------------------------------------------------------------------------------------


def _oov_share(ds: Dataset, vocab: frozenset[str]) -> float:
    queries = ds.search_log[S.QUERY].to_list()
    return float(np.mean([any(tok not in vocab for tok in q.split()) for q in queries]))


def test_queries_carry_typos_and_hot_words_at_their_rates() -> None:
    cfg = replace(TINY, typo_rate=0.3, hot_word_query_rate=0.2)
    ds = generate_world(cfg)
    queries = ds.search_log[S.QUERY]
    assert (queries.str.strip_chars().str.len_chars() > 0).all()
    assert 0.22 < _oov_share(ds, query_vocabulary(cfg)) < 0.38
    hot = queries.str.contains(_hot_pattern(cfg.hot_words)).mean()
    assert 0.12 < hot < 0.3
    assert queries.n_unique() > 0.3 * queries.len()


def test_clean_queries_use_only_vocabulary_words(tiny: Dataset) -> None:
    cfg = replace(TINY, typo_rate=0.0, hot_word_query_rate=0.0)
    ds = generate_world(cfg)
    assert _oov_share(ds, query_vocabulary(cfg)) == 0.0
    assert not ds.search_log[S.QUERY].str.contains(_hot_pattern(cfg.hot_words)).any()
    # the default tiny world has typos (typo_rate 0.05) that fall outside the vocabulary
    assert 0.02 < _oov_share(tiny, query_vocabulary("tiny")) < 0.1


def test_queries_name_the_target_product(tiny: Dataset) -> None:
    cfg = replace(TINY, typo_rate=0.0, synonym_rate=0.0)
    log = generate_world(cfg).search_log.join(
        generate_world(cfg).items.select(S.ITEM_ID, pl.col(S.CATEGORY_PATH).list.last().alias("leaf")),
        on=S.ITEM_ID,
    )
    # the query holds the leaf's noun ("mug" for "Travel Mugs"): targets come mostly from the intent leaf
    hits = [
        any(
            word.startswith(tok)
            for tok in query.split()
            if len(tok) >= 3
            for word in leaf.lower().split()[-1:]
        )
        for query, leaf in zip(log[S.QUERY], log["leaf"], strict=True)
    ]
    assert np.mean(hits) > 0.7


# -- sessions and funnel ------------------------------------------------------------------------------------


def test_timestamps_increase_per_user_and_everyone_buys_three_times(tiny: Dataset) -> None:
    inter = tiny.interactions.sort(S.USER_ID, S.TIMESTAMP)
    gaps = inter.select(pl.col(S.TIMESTAMP).diff().over(S.USER_ID).alias("gap"))["gap"].drop_nulls()
    assert (gaps > 0).all()
    buys = inter.filter(pl.col(S.EVENT) == "purchase").group_by(S.USER_ID).len()
    assert buys.height == TINY.n_users and buys["len"].min() >= 3
    more = generate_world(replace(TINY, n_users=50, min_purchases_per_user=6)).interactions
    counts = more.filter(pl.col(S.EVENT) == "purchase").group_by(S.USER_ID).len()["len"]
    assert counts.len() == 50 and counts.min() >= 6


def test_event_funnel_holds_per_request(tiny: Dataset) -> None:
    ev = _search_events(tiny)
    counts = {e: ev.filter(pl.col(S.EVENT) == e).height for e in S.EVENTS}
    assert counts["impression"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    key = [S.REQUEST_ID, S.ITEM_ID, S.USER_ID]
    for weaker, stronger in zip(S.EVENTS, S.EVENTS[1:], strict=False):
        have = ev.filter(pl.col(S.EVENT) == stronger).select(key)
        below = ev.filter(pl.col(S.EVENT) == weaker).select(key)
        assert have.join(below, on=key, how="anti").height == 0, f"{stronger} without {weaker}"
        earlier = have.join(ev.filter(pl.col(S.EVENT) == weaker), on=key).join(
            ev.filter(pl.col(S.EVENT) == stronger), on=key, suffix="_s"
        )
        assert (earlier[S.TIMESTAMP] < earlier[f"{S.TIMESTAMP}_s"]).all()
    # one page per request: distinct items, about impressions_per_search of them
    pages = (
        ev.filter(pl.col(S.EVENT) == "impression")
        .group_by(S.REQUEST_ID)
        .agg(pl.len().alias("n"), pl.col(S.ITEM_ID).n_unique().alias("distinct"))
    )
    assert (pages["n"] == pages["distinct"]).all()
    assert 0.7 * TINY.impressions_per_search < pages["n"].mean() <= TINY.impressions_per_search + 1
    # clicks fall with display position: the first results get most of them
    assert (
        ev.filter(pl.col(S.EVENT) == "click").height < ev.filter(pl.col(S.EVENT) == "impression").height / 2
    )
    browse = tiny.interactions.filter(pl.col(S.REQUEST_ID).is_null())
    assert set(browse[S.EVENT].unique().to_list()) == {"purchase"}


def test_clicks_favour_top_positions(tiny: Dataset) -> None:
    ev = _search_events(tiny).sort(S.TIMESTAMP)
    shown = ev.filter(pl.col(S.EVENT) == "impression").with_columns(
        pos=pl.col(S.TIMESTAMP).rank("ordinal").over(S.REQUEST_ID) - 1
    )
    clicked = ev.filter(pl.col(S.EVENT) == "click").select(S.REQUEST_ID, S.ITEM_ID, clicked=pl.lit(1))
    ctr = (
        shown.join(clicked, on=[S.REQUEST_ID, S.ITEM_ID], how="left")
        .group_by("pos")
        .agg(pl.col("clicked").fill_null(0).mean().alias("ctr"))
        .sort("pos")
    )["ctr"].to_list()
    assert ctr[0] > 2 * ctr[5] and ctr[0] > ctr[2] > ctr[8]


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_items", -5),
        ("n_users", 0),
        ("n_brands", 0),
        ("n_categories", 10_000),
        ("category_depth", 5),
        ("cold_start_share", 1.0),
        ("cold_start_share", -0.1),
        ("typo_rate", 1.5),
        ("hot_word_rate", -0.2),
        ("sessions_per_user", 0.5),
        ("impressions_per_search", 0),
        ("click_rate", 0.0),
        ("preference_concentration", 0.0),
        ("seed", -1),
        ("hot_words", ("new", "")),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"WorldConfig\.{field}\b"):
        replace(TINY, **{field: value})


def test_more_leaves_than_items_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_categories"):
        WorldConfig(n_items=5, n_categories=6)


def test_unknown_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match="'huge'.*tiny"):
        generate_world("huge")
