"""Candidate sources of the classic cascade and the catalogue facts its ranker reads.

- :class:`Catalog`: per-item arrays the features need (row index, popularity, recent popularity, brand and
  category ids, category words).
- :class:`BM25Source`: BM25 (``bm25s``) over title, brand and category words; scores for every item per query.
- :class:`DenseSource`: cosine similarity of item embeddings (MiniLM text, or PPMI-SVD behaviour where the
  catalogue has no text) to the query's embedding and to the recency-weighted mean of the history's embeddings,
  searched with faiss.
- :class:`CovisitSource`: item-to-item co-purchase counts within 5 steps in training sequences, summed over the
  last history items with recency weights (the classic "customers who bought this also bought").
- :class:`Popularity`: the most bought items in training; also the ``popularity`` system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from onesearch.data import schema as S
from onesearch.data.search_set import STOP_WORDS, words
from onesearch.retrieval import Requests, Retrieved, top_k
from onesearch.tokenizer.embeddings import cooccurrence


def _tokens(text: str | None) -> list[str]:
    return [w for w in words(text) if w not in STOP_WORDS]


@dataclass
class Catalog:
    """Item facts, rows in ``item_ids`` order."""

    item_ids: np.ndarray
    row: dict[int, int]
    pop: np.ndarray
    """log1p(training purchases)."""
    recent_pop: np.ndarray
    """log1p(training purchases in the last 10% of training time)."""
    brand: np.ndarray
    """Brand id per item (-1 = none)."""
    leaf: np.ndarray
    """Leaf-category id per item (-1 = none)."""
    top: np.ndarray
    """Second-level category id per item (the first level below the root; -1 = none)."""
    cat_words: list[set[str]]
    texts: list[list[str]]
    """BM25 tokens per item: title, brand, category words."""

    @classmethod
    def build(cls, items: pl.DataFrame, train: pl.DataFrame) -> Catalog:
        ids = items[S.ITEM_ID].to_numpy()
        row = {int(i): r for r, i in enumerate(ids)}
        counts = np.zeros(len(ids))
        recent = np.zeros(len(ids))
        if train.height:
            unknown = set(train[S.ITEM_ID].to_list()) - row.keys()
            if unknown:
                raise ValueError(
                    f"Catalog: {len(unknown)} purchased item id(s) are not in the items table, e.g. "
                    f"{sorted(unknown)[:5]} (were the purchases taken from another dataset?)"
                )
            r = np.array([row[int(i)] for i in train[S.ITEM_ID].to_list()])
            np.add.at(counts, r, 1)
            ts = train[S.TIMESTAMP].to_numpy()
            cut = np.quantile(ts, 0.9)
            np.add.at(recent, r[ts >= cut], 1)

        def ids_of(values: list) -> np.ndarray:
            vocab: dict = {}
            return np.array([-1 if v is None else vocab.setdefault(v, len(vocab)) for v in values])

        brands = [b.lower() if b else None for b in items[S.BRAND].to_list()]
        paths = items[S.CATEGORY_PATH].to_list()
        leaf = [tuple(p) if p else None for p in paths]
        top = [p[1] if p and len(p) > 1 else (p[0] if p else None) for p in paths]
        cat_words = [set(_tokens(" ".join(p))) if p else set() for p in paths]
        texts = [
            _tokens(t) + _tokens(b) + sorted(cw)
            for t, b, cw in zip(items[S.TITLE].to_list(), items[S.BRAND].to_list(), cat_words, strict=True)
        ]
        return cls(ids, row, np.log1p(counts), np.log1p(recent), ids_of(brands), ids_of(leaf), ids_of(top),
                   cat_words, texts)  # fmt: skip

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of known item ids; unknown ids are dropped: the baselines read a history with items the catalogue
        no longer has as the history without them (the generator, whose inputs are IDs, refuses such requests)."""
        return np.array([self.row[int(i)] for i in ids if int(i) in self.row], dtype=np.int64)


class Popularity:
    """The ``popularity`` system: the same most-bought items for everyone."""

    name = "popularity"

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def scores(self, requests: Requests) -> np.ndarray:
        return np.broadcast_to(self.catalog.pop, (requests.size, self.catalog.n))

    def retrieve(self, requests: Requests, k: int) -> Retrieved:
        one = top_k(
            self.catalog.pop[None, :] + 1e-9 * self.catalog.recent_pop[None, :], k, self.catalog.item_ids
        )
        return Retrieved(np.repeat(one.items, requests.size, 0), np.repeat(one.scores, requests.size, 0))


class BM25Source:
    """BM25 over item text; (B, n) scores, zero rows for requests without a query or text."""

    def __init__(self, catalog: Catalog):
        import bm25s

        self.catalog = catalog
        self.has_text = any(catalog.texts)
        self.index = None
        self._cache: dict[str, np.ndarray] = {}
        if self.has_text:
            self.index = bm25s.BM25()
            self.index.index([t or ["<empty>"] for t in catalog.texts], show_progress=False)

    def query_scores(self, query: str | None) -> np.ndarray | None:
        if query is None or self.index is None:
            return None
        if query not in self._cache:
            vocab = self.index.vocab_dict
            ids = [vocab[t] for t in _tokens(query) if t in vocab]
            s = self.index.get_scores_from_ids(ids) if ids else np.zeros(self.catalog.n)
            self._cache[query] = np.asarray(s, dtype=np.float32)
        return self._cache[query]

    def scores(self, requests: Requests) -> np.ndarray:
        out = np.zeros((requests.size, self.catalog.n), dtype=np.float32)
        for i, q in enumerate(requests.query):
            s = self.query_scores(q)
            if s is not None:
                out[i] = s
        return out


def history_weights(n: int, decay: float = 0.8, last: int = 10) -> np.ndarray:
    """Weights of the last ``last`` of ``n`` history items, oldest first, ``decay**age``, summing to 1."""
    m = min(n, last)
    w = decay ** np.arange(m - 1, -1, -1, dtype=np.float64)
    return w / w.sum()


class DenseSource:
    """Cosine similarities to the query embedding and to the history embedding, with faiss for the top-N."""

    def __init__(self, catalog: Catalog, item_emb: np.ndarray, encode_query=None):
        import faiss

        emb = np.ascontiguousarray(item_emb, dtype=np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.catalog, self.emb, self.encode_query = catalog, emb, encode_query
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(emb)
        self._qcache: dict[str, np.ndarray] = {}

    def query_vectors(self, queries: list[str | None]) -> np.ndarray:
        out = np.zeros((len(queries), self.emb.shape[1]), dtype=np.float32)
        if self.encode_query is None:
            return out
        todo = sorted({q for q in queries if q is not None and q not in self._qcache})
        if todo:
            for q, v in zip(todo, self.encode_query(todo), strict=True):
                self._qcache[q] = np.asarray(v, dtype=np.float32)
        for i, q in enumerate(queries):
            if q is not None:
                out[i] = self._qcache[q]
        return out

    def history_vectors(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(histories), self.emb.shape[1]), dtype=np.float32)
        for i, h in enumerate(histories):
            rows = self.catalog.rows(h)
            if len(rows):
                w = history_weights(len(rows))
                v = (w[:, None] * self.emb[rows[-len(w) :]]).sum(0)
                out[i] = v / max(np.linalg.norm(v), 1e-12)
        return out

    def search(self, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item rows and similarities per vector (rows of zero vectors give similarity 0)."""
        sims, rows = self.index.search(
            np.ascontiguousarray(vectors, dtype=np.float32), min(n, self.catalog.n)
        )
        return rows, sims


class CovisitSource:
    """Co-purchase counts with the last history items, recency-weighted: (B, n) scores."""

    def __init__(self, catalog: Catalog, train: pl.DataFrame, window: int = 5):
        m = cooccurrence(train, catalog.item_ids, window).astype(np.float32)
        # normalise each row by the item's total so that hugely popular items do not dominate every list
        tot = np.asarray(m.sum(1)).ravel()
        self.m = sp.diags(1.0 / np.maximum(tot, 1.0)) @ m
        self.m = self.m.tocsr()
        self.catalog = catalog

    def scores(self, histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(histories), self.catalog.n), dtype=np.float32)
        for i, h in enumerate(histories):
            rows = self.catalog.rows(h)
            if len(rows):
                w = history_weights(len(rows), decay=0.7, last=5)
                out[i] = np.asarray(w @ self.m[rows[-len(w) :]].toarray()).ravel()
        return out
