"""Make chosen catalogue items cold: they keep their text and lose every purchase a system could train on.

A benchmark of cold-start retrieval needs products that are in the catalogue, with their text, and that no
system has seen bought, yet that shoppers buy in the held-out requests. :func:`make_cold` picks ``n`` items at
random (seeded) among the purchased items with text and removes

- every purchase of them that a training split could read: the ones before each user's held-out purchases of the
  recommend split *and* of the search split (:func:`onesearch.data.splits.training_purchases`), so neither task
  trains on them, and every other event on them (views, carts: a cold product has no log);
- the search-log rows of the removed purchases; the other rows get their ``position`` (the number of the user's
  earlier purchases) recounted.

The held-out purchases (each user's last ones) stay, so the chosen items are targets of test requests. A user
whose purchases fall below the leave-one-out minimum has all of them in training; their purchases of chosen items
are removed too, repeated until no chosen item is bought in any training split (a test checks it).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.splits import leave_one_out, training_purchases

_KEYS = [S.USER_ID, S.ITEM_ID, S.TIMESTAMP]


def _trainable(buys: pl.DataFrame, log: pl.DataFrame | None) -> pl.DataFrame:
    """(user, item, timestamp) of the purchases that a training split reads (recommend and search)."""
    parts = [training_purchases(buys, log, "recommend")]
    if log is not None:
        parts.append(training_purchases(buys, log, "search"))
    return pl.concat([p.select(_KEYS) for p in parts]).unique()


def candidates(ds: Dataset) -> np.ndarray:
    """The items that can be made cold, sorted: purchased at least once, with a title."""
    text = ds.items.filter(pl.col(S.TITLE).is_not_null())[S.ITEM_ID].to_list()
    buys = ds.interactions.filter((pl.col(S.EVENT) == "purchase") & pl.col(S.ITEM_ID).is_in(text))
    return np.sort(buys[S.ITEM_ID].unique().to_numpy())


def make_cold(ds: Dataset, n: int, seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """``ds`` with ``n`` purchased items (with text, chosen with ``seed``) made cold; returns it and their ids.

    The new dataset is named ``<name>-cold<n>-s<seed>``. Raises ``ValueError`` when ``n`` is not in
    [1, number of purchased items with text).
    """
    buys0 = (
        ds.interactions.filter(pl.col(S.EVENT) == "purchase")
        .sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over(S.USER_ID).alias("_idx"))
    )
    pool = candidates(ds)
    if not 1 <= n < len(pool):
        raise ValueError(
            f"--cold-items: {n} items asked; {ds.name!r} has {len(pool)} purchased items with text (need 1 to "
            f"{len(pool) - 1})"
        )
    cold = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
    is_cold = pl.col(S.ITEM_ID).is_in(cold.tolist())
    removed = buys0.head(0).select(*_KEYS, "_idx")
    gone_requests: set[int] = set()
    buys, log = buys0, ds.search_log
    for _ in range(50):  # each round removes something, and a user's splits settle after a few
        new = _trainable(buys.drop("_idx"), log).filter(is_cold)
        new_rows = []
        if log is not None:
            split = leave_one_out(log, order_by=(S.POSITION, S.TIMESTAMP))
            new_rows = split.filter((pl.col(S.SPLIT) == "train") & is_cold)[S.REQUEST_ID].to_list()
        if new.height == 0 and not new_rows:
            break
        removed = pl.concat([removed, buys.join(new, on=_KEYS, how="semi").select(removed.columns)])
        buys = buys.join(new, on=_KEYS, how="anti")
        gone_requests.update(new_rows)
        if log is not None:
            log = _recount(ds.search_log.filter(~pl.col(S.REQUEST_ID).is_in(list(gone_requests))), removed)
    else:  # pragma: no cover
        raise RuntimeError("make_cold did not settle in 50 rounds")
    others = ds.interactions.filter((pl.col(S.EVENT) != "purchase") & ~is_cold)  # a cold item has no log
    inter = pl.concat([others, buys.drop("_idx").select(ds.interactions.columns)])
    inter = inter.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
    meta = dict(ds.meta) | {"cold_items": {"from": ds.name, "n": int(n), "seed": int(seed)}}
    out = Dataset(
        name=f"{ds.name}-cold{n}-s{seed}",
        items=ds.items,
        interactions=inter,
        search_log=log,
        index_dir=None,  # reference indexes were fitted on the full data
        source=ds.source,
        meta=meta,
    )
    return out, cold


def _recount(log: pl.DataFrame, removed: pl.DataFrame) -> pl.DataFrame:
    """``log`` with each row's ``position`` (the number of the user's purchases before the request, in the
    original table) less the removed purchases among those: ``removed`` holds their original index ``_idx``."""
    before = (
        log.select(S.REQUEST_ID, S.USER_ID, S.POSITION)
        .join(removed.select(S.USER_ID, "_idx"), on=S.USER_ID, how="inner")
        .filter(pl.col("_idx") < pl.col(S.POSITION))
        .group_by(S.REQUEST_ID)
        .len("_gone")
    )
    out = log.join(before, on=S.REQUEST_ID, how="left", maintain_order="left")
    out = out.with_columns((pl.col(S.POSITION) - pl.col("_gone").fill_null(0)).alias(S.POSITION))
    return out.select(log.columns)
