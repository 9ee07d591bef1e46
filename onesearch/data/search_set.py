"""Personalised product-search requests built from purchases (the HEM protocol, Ai et al., SIGIR 2017).

No public log of real queries with user histories fits the Amazon sets, so the established protocol builds one:
for every purchase after a user's first, the *query* is made from the purchased item's category path, and the
user's earlier purchases are the *history*. Construction, step by step:

1. Each level of the item's category path is lower-cased and cut into alphanumeric words; stop words
   (``and``, ``&``, ``for``, ``of``, ...) are dropped, and a word already used by a higher level is dropped
   (HEM: "remove stopwords and duplicated words").
2. A root level shared by every categorised item (``Industrial & Scientific`` in Scientific) says nothing about
   the product and is dropped when ``drop_shared_root`` is set (default).
3. With ``title_words = k > 0``, up to k words of the item's title (no stop words, no pure numbers, none already
   in the query) are appended, chosen at random per request from a generator seeded with ``seed``. A query never
   contains every (non-stop) word of the item's title: appended words are dropped until it does not, and a
   purchase whose category words alone cover its title is skipped (counted as ``skipped_title_query``).
4. Purchases of items without a category path cannot make a query and are skipped; their count is returned in
   the log's metadata by :func:`build_search_log_with_stats`.

A request's ``position`` is the number of the user's purchases before it, i.e. the length of its history, so the
last request of each user is the leave-one-out test target and the one before it the validation target.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from onesearch.data import schema as S

STOP_WORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or the to with without & amp etc other others "
    "misc miscellaneous accessories products supplies".split()
)
"""Words dropped from category and title queries. Generic catalogue words (accessories, products, supplies)
appear in hundreds of unrelated category names and carry no intent."""

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True)
class SearchSetConfig:
    """How queries are built from purchases."""

    title_words: int = 0
    """How many title keywords to append to the category query (0 = pure HEM category query)."""
    seed: int = 0
    """Seed for the choice of title keywords."""
    drop_shared_root: bool = True
    """Drop a first category level that every categorised item shares (it carries no information)."""
    min_position: int = 1
    """Smallest history length that makes a request (1 = every purchase after the first)."""

    def __post_init__(self) -> None:
        if self.title_words < 0:
            raise ValueError(f"SearchSetConfig.title_words must be >= 0, got {self.title_words}")
        if self.min_position < 0:
            raise ValueError(f"SearchSetConfig.min_position must be >= 0, got {self.min_position}")

    def as_dict(self) -> dict:
        return asdict(self)


def words(text: str | None) -> list[str]:
    """Lower-cased alphanumeric words of ``text`` (hyphenated words kept whole)."""
    return _WORD.findall(text.lower()) if text else []


def category_query(path: list[str] | None, drop_levels: int = 0) -> list[str]:
    """Query words of one category path: words per level, stop words and repeats removed, root first."""
    if not path:
        return []
    seen: set[str] = set()
    out: list[str] = []
    for level in path[drop_levels:]:
        for w in words(level):
            if w in STOP_WORDS or w in seen:
                continue
            seen.add(w)
            out.append(w)
    return out


def shared_root(paths: list[list[str] | None]) -> bool:
    """True when every categorised item's path starts with the same root level (and goes deeper)."""
    roots = {p[0] for p in paths if p}
    return len(roots) == 1 and all(len(p) > 1 for p in paths if p)


def build_search_log_with_stats(
    items: pl.DataFrame, interactions: pl.DataFrame, cfg: SearchSetConfig | None = None
) -> tuple[pl.DataFrame, dict]:
    """Build the ``search_log`` table and return it with construction counts (requests, skipped purchases)."""
    cfg = cfg or SearchSetConfig()
    paths = items[S.CATEGORY_PATH].to_list()
    drop = 1 if cfg.drop_shared_root and shared_root(paths) else 0
    item_ids = items[S.ITEM_ID].to_list()
    base = {iid: category_query(p, drop) for iid, p in zip(item_ids, paths, strict=True)}
    titles = dict(zip(item_ids, items[S.TITLE].to_list(), strict=True))

    purchases = (
        interactions.filter(pl.col(S.EVENT) == "purchase")
        .select(S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.EVENT)
        .sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over(S.USER_ID).alias(S.POSITION))
        .filter(pl.col(S.POSITION) >= cfg.min_position)
    )
    rng = np.random.default_rng(cfg.seed)
    queries: list[str | None] = []
    no_category = 0
    for iid in purchases[S.ITEM_ID].to_list():
        q = base.get(iid) or []
        if not q:
            no_category += 1
            queries.append(None)
            continue
        q = list(q)
        title_set = {w for w in words(titles.get(iid)) if w not in STOP_WORDS}
        if cfg.title_words:
            title = words(titles.get(iid))
            cands = list(
                dict.fromkeys(w for w in title if w not in STOP_WORDS and not w.isdigit() and w not in q)
            )
            if cands:
                k = min(cfg.title_words, len(cands))
                pick = sorted(rng.choice(len(cands), size=k, replace=False))
                extra = [cands[i] for i in pick]
                while extra and title_set <= set(q + extra):
                    extra = extra[:-1]
                q += extra
        if title_set and title_set <= set(q):  # the category alone spells the whole title: not a fair query
            queries.append(None)
            continue
        queries.append(" ".join(q))
    log = purchases.with_columns(pl.Series(S.QUERY, queries, dtype=pl.String))
    skipped = log[S.QUERY].null_count()
    log = (
        log.filter(pl.col(S.QUERY).is_not_null())
        .with_row_index(S.REQUEST_ID)
        .with_columns(pl.col(S.REQUEST_ID).cast(pl.Int64))
        .select(S.SEARCH_LOG.names)
    )
    stats = {
        "requests": log.height,
        "skipped_no_category": no_category,
        "skipped_title_query": int(skipped) - no_category,
        "dropped_shared_root": bool(drop),
        "distinct_queries": log[S.QUERY].n_unique(),
    }
    return log, stats


def build_search_log(
    items: pl.DataFrame, interactions: pl.DataFrame, cfg: SearchSetConfig | None = None
) -> pl.DataFrame:
    """The ``search_log`` table of :func:`build_search_log_with_stats`, without the counts."""
    return build_search_log_with_stats(items, interactions, cfg)[0]
