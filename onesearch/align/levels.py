"""Interaction levels: how much a shopper preferred each item for one search request, from the logs.

Per request, strongest first (:data:`LEVEL_NAMES`):

=====  ======================  ==========================================================================
level  name                    items
=====  ======================  ==========================================================================
5      ``purchased``           purchased from this search (the request's own ``purchase`` events)
4      ``purchased_elsewhere`` items of the request's leaf category purchased by anyone outside this request
3      ``clicked``             clicked (or carted) in this search but not purchased
2      ``shown``               shown (``impression``) in this search but not clicked
1      ``same_category``       of the request's leaf category, never shown in this search nor purchased
0      ``random``              a random item of another leaf category
=====  ======================  ==========================================================================

The request's leaf category is the category path of its target (``search_log.item_id``). Levels 4, 1 and 0 are
samples (``same_category`` / ``random`` items per request, drawn with the generator passed in), the others are
every logged item. An item gets its strongest level only.

Where a dataset has no event of a kind, the levels that need it are derived where they can be and absent
otherwise: the Amazon sets log purchases only (no ``request_id`` on their interactions), so a request's
``purchased`` item is its target and level 3 never occurs; ``same_category`` then means "of the leaf, not purchased
anywhere in the log given", which is what "never shown" can be read as without impressions. For ``shown``, a
request with no impression events can be given ``retrieved`` items, what a search system would have shown for it
(the align job passes a sample of the cascade's recall candidates): those the request did not buy are ``shown``,
even when bought outside it, as a logged impression of them would be. They are the hard negatives of the reward
model: the items a ranker has to put below the purchase, not items of another category. The synthetic world logs impressions, clicks, carts and purchases per request, so it has every level
from its own log.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from onesearch.data import schema as S

PURCHASED, PURCHASED_ELSEWHERE, CLICKED, SHOWN, SAME_CATEGORY, RANDOM = 5, 4, 3, 2, 1, 0
LEVEL_NAMES = {
    PURCHASED: "purchased",
    PURCHASED_ELSEWHERE: "purchased_elsewhere",
    CLICKED: "clicked",
    SHOWN: "shown",
    SAME_CATEGORY: "same_category",
    RANDOM: "random",
}
"""Level -> name, strongest first."""
LEVEL = "level"
"""Column of the level in :func:`derive_levels`' output."""
_EVENT_LEVEL = {"purchase": PURCHASED, "cart": CLICKED, "click": CLICKED, "impression": SHOWN}


def _leaf_of(items: pl.DataFrame) -> dict[int, tuple]:
    return {
        int(i): (tuple(p) if p else None)
        for i, p in zip(items[S.ITEM_ID].to_list(), items[S.CATEGORY_PATH].to_list(), strict=True)
    }


def derive_levels(
    items: pl.DataFrame,
    interactions: pl.DataFrame,
    requests: pl.DataFrame,
    rng: np.random.Generator,
    *,
    same_category: int = 5,
    random: int = 5,
    purchased_elsewhere: int = 3,
    retrieved: dict[int, np.ndarray] | None = None,
) -> pl.DataFrame:
    """The levelled items of each request of ``requests`` (rows of a search log).

    ``interactions`` are the events the levels may read (pass the training period's only: a level never comes
    from a held-out event); purchases outside the request count for ``purchased_elsewhere`` and exclude an item
    from ``same_category``. ``retrieved`` maps a request id to items a search system retrieved for it; for a request
    without impression events, those not levelled higher by its own events are ``shown``. Returns
    ``(request_id, user_id, item_id, level)`` sorted by request, level (strongest first) and item. Raises ``ValueError`` naming the column when a table lacks one.
    """
    for name, df, cols in (
        ("items", items, (S.ITEM_ID, S.CATEGORY_PATH)),
        ("interactions", interactions, (S.USER_ID, S.ITEM_ID, S.EVENT)),
        ("search_log", requests, (S.REQUEST_ID, S.USER_ID, S.ITEM_ID)),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"derive_levels: table {name!r} has no column(s) {missing}")
    bad = set(interactions[S.EVENT].unique().to_list()) - set(S.EVENTS)
    if bad:
        raise ValueError(
            f"derive_levels: interactions.event has unknown value(s) {sorted(bad)}; expected {S.EVENTS}"
        )
    leaf = _leaf_of(items)
    by_leaf: dict[tuple, list[int]] = {}
    for i, lf in leaf.items():
        if lf is not None:
            by_leaf.setdefault(lf, []).append(i)
    all_ids = np.array(sorted(leaf), dtype=np.int64)

    # the request's own events, strongest level per item
    own: dict[int, dict[int, int]] = {}
    if S.REQUEST_ID in interactions.columns:
        ev = interactions.filter(pl.col(S.REQUEST_ID).is_not_null())
        ev = ev.filter(pl.col(S.REQUEST_ID).is_in(requests[S.REQUEST_ID].implode()))
        for rid, item, e in ev.select(S.REQUEST_ID, S.ITEM_ID, S.EVENT).iter_rows():
            d = own.setdefault(int(rid), {})
            d[int(item)] = max(d.get(int(item), -1), _EVENT_LEVEL[e])
    bought_by_leaf: dict[tuple, dict[int, None]] = {}  # leaf -> items purchased (ordered, unique)
    for item in interactions.filter(pl.col(S.EVENT) == "purchase")[S.ITEM_ID].to_list():
        lf = leaf.get(int(item))
        if lf is not None:
            bought_by_leaf.setdefault(lf, {})[int(item)] = None

    out_r, out_u, out_i, out_l = [], [], [], []
    ev_col = requests[S.EVENT].to_list() if S.EVENT in requests.columns else [None] * requests.height
    for rid, user, target, event in zip(
        requests[S.REQUEST_ID].to_list(),
        requests[S.USER_ID].to_list(),
        requests[S.ITEM_ID].to_list(),
        ev_col,
        strict=True,
    ):
        rid, target = int(rid), int(target)
        got = dict(own.get(rid, {}))
        if not got:  # a log without per-request events (Amazon): the target is what the shopper acted on
            got[target] = _EVENT_LEVEL.get(event or "purchase", PURCHASED)
        if retrieved is not None and SHOWN not in got.values():  # no impressions logged: what was retrieved
            for i in retrieved.get(rid, ()):
                if int(i) >= 0:
                    got.setdefault(int(i), SHOWN)
        lf = leaf.get(target)
        if lf is not None:
            bought = bought_by_leaf.get(lf, {})
            elsewhere = [i for i in bought if i not in got]
            if elsewhere and purchased_elsewhere:
                pick = rng.choice(len(elsewhere), min(purchased_elsewhere, len(elsewhere)), replace=False)
                for j in np.sort(pick):
                    got[elsewhere[j]] = PURCHASED_ELSEWHERE
            rest = [i for i in by_leaf[lf] if i not in got and i not in bought]
            if rest and same_category:
                pick = rng.choice(len(rest), min(same_category, len(rest)), replace=False)
                for j in np.sort(pick):
                    got[rest[j]] = SAME_CATEGORY
        if random:
            cand = all_ids[rng.choice(len(all_ids), min(4 * random, len(all_ids)), replace=False)]
            cand = [int(i) for i in cand if int(i) not in got and (lf is None or leaf[int(i)] != lf)]
            for i in cand[:random]:
                got[i] = RANDOM
        for i, lv in sorted(got.items(), key=lambda kv: (-kv[1], kv[0])):
            out_r.append(rid)
            out_u.append(int(user))
            out_i.append(i)
            out_l.append(lv)
    return pl.DataFrame(
        {S.REQUEST_ID: out_r, S.USER_ID: out_u, S.ITEM_ID: out_i, LEVEL: out_l},
        schema={S.REQUEST_ID: pl.Int64, S.USER_ID: pl.Int64, S.ITEM_ID: pl.Int64, LEVEL: pl.Int64},
    )


def level_counts(levels: pl.DataFrame) -> dict[str, int]:
    """How many (request, item) pairs each level has, by name (0 for an absent level)."""
    counts = dict(levels.group_by(LEVEL).len().iter_rows())
    return {name: int(counts.get(lv, 0)) for lv, name in LEVEL_NAMES.items()}
