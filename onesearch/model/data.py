"""Training and evaluation examples for the generator, from a dataset's purchases and search log.

An example is one request (task, query, history) with one target item. Items are rows of the SID table; histories
are the user's purchases before the target, oldest first, cut to the most recent ``max_history`` and left-padded
with -1.

- ``recommend``: leave-one-out over each user's purchases (:func:`onesearch.data.splits.leave_one_out`). Training
  examples are every prefix of the training part (sliding window: items 1..t predict item t+1); validation predicts
  the validation item from the training items, test the test item from the training items plus the validation item.
- ``search``: the search log split the same way (by position, then time); a request's history is the user's first
  ``position`` purchases, its query the logged query. ``mix_recommend`` adds recommend examples (every prefix of
  the purchases before each user's held-out searches, :func:`onesearch.data.splits.training_purchases`) to the
  search training set (the task token tells them apart), so one model learns both.
- catalogue queries (:func:`catalogue_examples`, search only): for every item with text, a few queries made from
  its own attributes (its title; its category words; category words and title words) with an empty history, each
  with the item as target. Every catalogue item, bought or not, is then a training target: an item nobody has
  bought in the training period becomes reachable from its text (LC-Rec's and OneSearch's index-language
  alignment tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.search_set import STOP_WORDS, category_query, shared_root, words
from onesearch.data.splits import leave_one_out, training_purchases
from onesearch.model.generator import TASKS, Batch
from onesearch.model.text import QueryTokenizer
from onesearch.tokenizer.sid import SIDTable


class Examples(NamedTuple):
    """N examples as numpy arrays (kept on the CPU; :meth:`batch` makes tensors)."""

    task: np.ndarray
    """(N,) int64 index into TASKS."""
    query: np.ndarray
    """(N, Q) int64 query token ids, 0-padded."""
    history: np.ndarray
    """(N, H) int32 SID-table rows, most recent last, left-padded with -1."""
    target: np.ndarray
    """(N,) int64 SID-table row of the target item (-1 when unknown, e.g. at inference)."""

    @property
    def size(self) -> int:
        """Number of examples N."""
        return int(self.task.shape[0])

    def take(self, idx: np.ndarray) -> Examples:
        return Examples(self.task[idx], self.query[idx], self.history[idx], self.target[idx])

    def batch(self, idx: np.ndarray, item_codes: torch.Tensor | None = None, trim: bool = True) -> Batch:
        """Tensors of the examples ``idx``; ``item_codes`` (n_items, L) adds the target codes.

        ``trim`` drops the history columns that are padding in every row of the batch (and the query's trailing
        ones): the model's output is the same, and batches of short histories cost less.
        """
        t = torch.from_numpy(self.target[idx])
        target = None if item_codes is None else item_codes[t]
        hist, query = self.history[idx], self.query[idx]
        if trim and len(idx):
            real = (hist >= 0).any(0)
            first = int(real.argmax()) if real.any() else hist.shape[1] - 1
            hist = hist[:, first:]
            used = (query > 0).any(0)
            query = query[:, : int(np.flatnonzero(used)[-1]) + 1] if used.any() else query[:, :0]
        return Batch(
            torch.from_numpy(self.task[idx]),
            torch.from_numpy(np.ascontiguousarray(query)),
            torch.from_numpy(hist.astype(np.int64)),
            target,
            None if item_codes is None else t,
        )

    def history_lengths(self) -> np.ndarray:
        return (self.history >= 0).sum(1)

    @staticmethod
    def concat(parts: list[Examples]) -> Examples:
        return Examples(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


@dataclass
class Splits:
    """Examples of one task: train, valid, test."""

    task: str
    train: Examples
    valid: Examples
    test: Examples

    def sizes(self) -> dict[str, int]:
        return {"train": self.train.size, "valid": self.valid.size, "test": self.test.size}


def _pad_left(seqs: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(seqs), width), -1, dtype=np.int32)
    for i, s in enumerate(seqs):
        s = s[-width:]
        if len(s):
            out[i, width - len(s) :] = s
    return out


def _windows(seq: np.ndarray, width: int) -> np.ndarray:
    """(len(seq) - 1, width): row t holds seq[:t+1]'s last ``width`` items, i.e. the history before seq[t+1]."""
    padded = np.concatenate([np.full(width, -1, dtype=np.int32), seq.astype(np.int32)])
    return np.lib.stride_tricks.sliding_window_view(padded, width)[1 : len(seq)]


def purchases(ds: Dataset) -> pl.DataFrame:
    inter = ds.interactions
    return inter.filter(pl.col(S.EVENT) == "purchase")


def _rows(table: SIDTable, ids: np.ndarray, what: str) -> np.ndarray:
    try:
        return table.rows(ids)
    except KeyError as e:
        raise KeyError(f"{what}: {e.args[0]} (the SID table was built for another catalogue?)") from None


def window_examples(seqs: list[np.ndarray], max_history: int, query_width: int) -> Examples:
    """Recommend examples from every prefix of each sequence of SID-table rows (items 1..t predict item t+1)."""
    hist = [_windows(s, max_history) for s in seqs if len(s) >= 2]
    tgt = [s[1:] for s in seqs if len(s) >= 2]
    n = sum(len(t) for t in tgt)
    return Examples(
        np.full(n, TASKS.index("recommend"), dtype=np.int64),
        np.zeros((n, query_width), dtype=np.int64),
        np.concatenate(hist) if hist else np.zeros((0, max_history), np.int32),
        np.concatenate(tgt).astype(np.int64) if tgt else np.zeros(0, np.int64),
    )


def recommend_examples(ds: Dataset, table: SIDTable, max_history: int, query_width: int) -> Splits:
    split = leave_one_out(purchases(ds))
    split = split.with_columns(pl.Series("row", _rows(table, split[S.ITEM_ID].to_numpy(), "purchases")))
    per_user = split.group_by(S.USER_ID, maintain_order=True).agg(
        pl.col("row").filter(pl.col(S.SPLIT) == "train").alias("train"),
        pl.col("row").filter(pl.col(S.SPLIT) == "valid").first().alias("valid"),
        pl.col("row").filter(pl.col(S.SPLIT) == "test").first().alias("test"),
    )
    train_h, train_t, val_h, val_t, test_h, test_t = [], [], [], [], [], []
    for tr, va, te in per_user.select("train", "valid", "test").iter_rows():
        seq = np.asarray(tr, dtype=np.int32)
        if len(seq) >= 2:
            train_h.append(_windows(seq, max_history))
            train_t.append(seq[1:])
        if va is not None and te is not None and len(seq):
            val_h.append(seq)
            val_t.append(va)
            test_h.append(np.append(seq, va).astype(np.int32))
            test_t.append(te)
    rec = TASKS.index("recommend")

    def make(hist: np.ndarray, tgt: np.ndarray) -> Examples:
        n = len(tgt)
        return Examples(
            np.full(n, rec, dtype=np.int64),
            np.zeros((n, query_width), dtype=np.int64),
            hist,
            np.asarray(tgt, dtype=np.int64),
        )

    train = make(
        np.concatenate(train_h) if train_h else np.zeros((0, max_history), np.int32),
        np.concatenate(train_t) if train_t else np.zeros(0, np.int64),
    )
    return Splits(
        "recommend",
        train,
        make(_pad_left(val_h, max_history), np.asarray(val_t)),
        make(_pad_left(test_h, max_history), np.asarray(test_t)),
    )


def search_examples(
    ds: Dataset,
    table: SIDTable,
    vocab: QueryTokenizer,
    max_history: int,
    query_width: int,
    mix_recommend: bool = False,
) -> Splits:
    if ds.search_log is None:
        raise ValueError(f"dataset {ds.name!r} has no search log; use --task recommend")
    buys = purchases(ds).sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
    buys = buys.with_columns(pl.Series("row", _rows(table, buys[S.ITEM_ID].to_numpy(), "purchases")))
    seqs = {
        u: np.asarray(r, dtype=np.int32)
        for u, r in buys.group_by(S.USER_ID, maintain_order=True).agg("row").iter_rows()
    }
    log = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP))
    targets = _rows(table, log[S.ITEM_ID].to_numpy(), "search_log targets")
    queries = log[S.QUERY].to_list()
    uniq = sorted(set(queries))
    enc = vocab.encode(uniq, query_width)
    qidx = {q: i for i, q in enumerate(uniq)}
    q = enc[[qidx[x] for x in queries]]
    empty = seqs.get
    hist = _pad_left(
        [
            (empty(u, np.zeros(0, np.int32)))[:p]
            for u, p in zip(log[S.USER_ID].to_list(), log[S.POSITION].to_list(), strict=True)
        ],
        max_history,
    )
    task = np.full(log.height, TASKS.index("search"), dtype=np.int64)
    all_ex = Examples(task, q, hist, targets.astype(np.int64))
    split = log[S.SPLIT].to_numpy()
    train = all_ex.take(np.flatnonzero(split == "train"))
    if mix_recommend:  # every prefix of the purchases before each user's held-out searches
        early = training_purchases(purchases(ds), ds.search_log, "search")
        early = early.with_columns(pl.Series("row", _rows(table, early[S.ITEM_ID].to_numpy(), "purchases")))
        seqs = [
            np.asarray(r, dtype=np.int32)
            for r in early.group_by(S.USER_ID, maintain_order=True).agg("row")["row"]
        ]
        train = Examples.concat([train, window_examples(seqs, max_history, query_width)])
    return Splits(
        "search",
        train,
        all_ex.take(np.flatnonzero(split == "valid")),
        all_ex.take(np.flatnonzero(split == "test")),
    )


def catalogue_queries(items: pl.DataFrame, views: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Up to ``views`` distinct queries per item with text, made from the item's attributes alone: view 0 its
    title, view 1 its category words (the category path, words per level, stop words and repeats dropped, a root
    shared by every item dropped), views 2.. the category words and 1-3 title words drawn with ``seed``.
    Returns the item id of each query and the queries; items with neither title nor category give none."""
    if views < 0:
        raise ValueError(f"catalogue queries per item must be >= 0, got {views}")
    paths = items[S.CATEGORY_PATH].to_list()
    drop = 1 if shared_root(paths) else 0
    rng = np.random.default_rng(seed)
    ids_out: list[int] = []
    out: list[str] = []
    for iid, title, path in zip(items[S.ITEM_ID].to_list(), items[S.TITLE].to_list(), paths, strict=True):
        cat = category_query(path, drop)
        title_words = [w for w in dict.fromkeys(words(title)) if w not in STOP_WORDS and w not in cat]
        made: list[str] = []
        for v in range(views):
            if v == 0:
                q = " ".join(words(title))
            elif v == 1 or not title_words:
                q = " ".join(cat)
            else:
                k = int(rng.integers(1, min(3, len(title_words)) + 1))
                pick = sorted(rng.choice(len(title_words), size=k, replace=False))
                q = " ".join(cat + [title_words[i] for i in pick])
            if q and q not in made:
                made.append(q)
        ids_out += [int(iid)] * len(made)
        out += made
    return np.asarray(ids_out, dtype=np.int64), out


def catalogue_examples(
    items: pl.DataFrame,
    table: SIDTable,
    vocab: QueryTokenizer,
    views: int,
    max_history: int,
    query_width: int,
    seed: int = 0,
) -> Examples:
    """Search examples with an empty history: each of :func:`catalogue_queries`' queries → its item. Items of
    ``items`` missing from the SID table are an error naming them."""
    ids, queries = catalogue_queries(items, views, seed)
    n = len(queries)
    return Examples(
        np.full(n, TASKS.index("search"), dtype=np.int64),
        vocab.encode(queries, query_width) if n else np.zeros((0, query_width), np.int64),
        np.full((n, max_history), -1, dtype=np.int32),
        _rows(table, ids, "catalogue items").astype(np.int64),
    )


def _items_in_rows(items: pl.DataFrame, table: SIDTable) -> pl.DataFrame:
    """``items`` reordered to the SID table's rows; an item of the table missing from ``items`` is an error."""
    order = pl.DataFrame({S.ITEM_ID: table.item_ids, "_row": np.arange(table.n_items)})
    got = order.join(items, on=S.ITEM_ID, how="left", coalesce=True).sort("_row")
    have = set(items[S.ITEM_ID].to_list())
    missing = [int(i) for i in table.item_ids if int(i) not in have]
    if missing:
        raise ValueError(
            f"{len(missing)} items of the SID table are not in the catalogue, e.g. {missing[:5]}"
        )
    return got


def item_word_tokens(items: pl.DataFrame, table: SIDTable, vocab: QueryTokenizer, width: int) -> np.ndarray:
    """(n_items, width) query-vocabulary ids of each item's words, SID-table row order: its title's words, then
    its category words (the root shared by every item dropped), cut at ``width`` WordPiece tokens, 0-padded.
    An item with neither title nor category gets a row of padding."""
    rows = _items_in_rows(items, table)
    paths = rows[S.CATEGORY_PATH].to_list()
    drop = 1 if shared_root(paths) else 0
    texts = [
        " ".join(dict.fromkeys(words(t) + category_query(p, drop)))
        for t, p in zip(rows[S.TITLE].to_list(), paths, strict=True)
    ]
    return vocab.encode(texts, width)


def item_purchase_counts(ds: Dataset, table: SIDTable, task: str) -> np.ndarray:
    """(n_items,) purchases of each item that the task's training split reads (no held-out target among them;
    :func:`onesearch.data.splits.training_purchases`), SID-table row order; items outside the table are ignored."""
    buys = training_purchases(purchases(ds), ds.search_log, task)[S.ITEM_ID].to_numpy()
    buys = buys[np.isin(buys, table.item_ids)]
    return np.bincount(table.rows(buys), minlength=table.n_items).astype(np.int64)


def query_texts(ds: Dataset) -> list[str]:
    """Texts the query vocabulary is fitted on: training-period queries and item titles."""
    texts = ds.items[S.TITLE].drop_nulls().to_list()
    if ds.search_log is not None:
        log = leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP))
        texts += log.filter(pl.col(S.SPLIT) == "train")[S.QUERY].unique().to_list()
    return texts


def requests(
    table: SIDTable,
    vocab: QueryTokenizer | None,
    histories: list[list[int]],
    queries: list[str | None] | None,
    max_history: int,
    query_width: int,
) -> Examples:
    """Examples for inference from item ids and query strings (targets -1).

    A request with a query is a search, one without a recommendation. Raises ``KeyError`` naming the request and the
    unknown item ids, and ``ValueError`` for a query that is empty or blank, or one that the model cannot read.
    """
    n = len(histories)
    queries = [None] * n if queries is None else list(queries)
    if len(queries) != n:
        raise ValueError(f"{len(queries)} queries for {n} histories")
    rows = []
    for i, h in enumerate(histories):
        try:
            rows.append(table.rows(np.asarray(h, dtype=np.int64)).astype(np.int32))
        except KeyError as e:
            raise KeyError(f"request {i}: history has {e.args[0]}") from None
    task = np.full(n, TASKS.index("recommend"), dtype=np.int64)
    q = np.zeros((n, query_width), dtype=np.int64)
    has_q = [i for i, x in enumerate(queries) if x is not None]
    for i in has_q:
        if not str(queries[i]).strip():
            raise ValueError(f"request {i}: the query is empty (pass None for a recommendation request)")
    if has_q:
        if vocab is None:
            raise ValueError("this model was trained without queries; it serves recommendation requests only")
        q[has_q] = vocab.encode([str(queries[i]) for i in has_q], query_width)
        task[has_q] = TASKS.index("search")
    return Examples(task, q, _pad_left(rows, max_history), np.full(n, -1, dtype=np.int64))
