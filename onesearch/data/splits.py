"""Leave-one-out splits per user: the last event is test, the one before it validation, the rest training.

This is the standard protocol of the Amazon generative-recommendation benchmarks (TIGER, P5, S3Rec). A user with
fewer than ``min_events`` events (3 by default) has no room for a validation and a test target; all of that
user's events stay in training and the count of such users is reported by :func:`split_counts`.
"""

from __future__ import annotations

import polars as pl

from onesearch.data import schema as S


def leave_one_out(
    df: pl.DataFrame,
    *,
    order_by: tuple[str, ...] = (S.TIMESTAMP,),
    min_events: int = 3,
) -> pl.DataFrame:
    """Return ``df`` with a ``split`` column (train | valid | test), ordered by user then ``order_by``.

    Works for the interactions table (filter it to the event you predict first, usually purchases) and for the
    search log (ordered by ``position`` / ``timestamp``). Ties in ``order_by`` keep the input order.
    """
    if min_events < 1:
        raise ValueError(f"min_events must be >= 1, got {min_events}")
    for col in (S.USER_ID, *order_by):
        if col not in df.columns:
            raise S.SchemaError(f"leave_one_out: column {col!r} is missing; has {df.columns}")
    ordered = df.sort([S.USER_ID, *order_by], maintain_order=True)
    rank_from_end = pl.int_range(pl.len(), 0, -1).over(S.USER_ID)  # n, n-1, ..., 1
    n = pl.len().over(S.USER_ID)
    split = (
        pl.when(n < min_events)
        .then(pl.lit("train"))
        .when(rank_from_end == 1)
        .then(pl.lit("test"))
        .when(rank_from_end == 2)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return ordered.with_columns(split.alias(S.SPLIT))


def split_counts(split_df: pl.DataFrame) -> dict:
    """Rows per split and the number of users with no test row (too short to be evaluated)."""
    counts = {s: 0 for s in S.SPLITS}
    for s, c in split_df.group_by(S.SPLIT).len().iter_rows():
        counts[s] = int(c)
    short = (
        split_df.group_by(S.USER_ID)
        .agg((pl.col(S.SPLIT) == "test").any().alias("t"))
        .filter(~pl.col("t"))
        .height
    )
    return {**counts, "users_train_only": short}


def user_sequences(split_df: pl.DataFrame) -> pl.DataFrame:
    """One row per evaluable user: ``history`` (training items, oldest first), ``valid_item``, ``test_item``.

    For the test target the model's input is ``history + [valid_item]``; for validation it is ``history``.
    """
    return (
        split_df.group_by(S.USER_ID, maintain_order=True)
        .agg(
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "train").alias("history"),
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "valid").first().alias("valid_item"),
            pl.col(S.ITEM_ID).filter(pl.col(S.SPLIT) == "test").first().alias("test_item"),
        )
        .filter(pl.col("test_item").is_not_null())
    )


TRAINING_SCOPES = ("recommend", "search", "both")


def training_purchases(purchases: pl.DataFrame, search_log: pl.DataFrame | None, scope: str) -> pl.DataFrame:
    """Each user's purchases that no held-out target of ``scope`` can be among, oldest first.

    - ``recommend``: the leave-one-out training part (all but the last two purchases of a user with three or more).
    - ``search``: the purchases before the user's validation search request (its ``position`` is how many came
      before it), or all of them for a user with no held-out request. The recommend split alone would not do: a
      user's last purchases need not be searches, so a held-out search target can sit in the recommend training
      part.
    - ``both``: the shorter of the two, for what serves both tasks (the semantic IDs' behaviour embedding).

    Popularity, co-purchase counts, behaviour embeddings, sequential models and item buckets read only these.
    """
    if scope not in TRAINING_SCOPES:
        raise ValueError(f"scope must be one of {TRAINING_SCOPES}, got {scope!r}")
    ordered = purchases.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
    idx = pl.int_range(pl.len()).over(S.USER_ID)
    n = pl.len().over(S.USER_ID)
    rec_cut = pl.when(n >= 3).then(n - 2).otherwise(n)
    if scope == "recommend" or search_log is None:
        if scope == "search":
            raise ValueError("scope 'search' needs a search log")
        return ordered.filter(idx < rec_cut)
    valid = leave_one_out(search_log, order_by=(S.POSITION, S.TIMESTAMP)).filter(pl.col(S.SPLIT) == "valid")
    cut = valid.select(S.USER_ID, pl.col(S.POSITION).alias("_search_cut"))
    out = ordered.join(cut, on=S.USER_ID, how="left", maintain_order="left")
    search_cut = pl.col("_search_cut").fill_null(n)
    limit = search_cut if scope == "search" else pl.min_horizontal(search_cut, rec_cut)
    return out.filter(idx < limit).drop("_search_cut")
