"""From a dataset to its semantic-ID table: embeddings, keyword enhancement, quantization, disambiguation.

Methods (same interface, same metrics):

``khqe``      keyword-enhanced hierarchical quantization: the item embedding is fused with the embedding of its
              core-attribute keywords (hot words down-weighted), then residual k-means with balanced residual
              levels and an OPQ level. Without item text the keyword step is skipped (and said so).
``rqkmeans``  plain residual k-means on the same embeddings (no keywords, no balancing, no OPQ).
``rqvae``     TIGER-style RQ-VAE on the same embeddings.
``index:<v>`` a reference tokenization read from ``<dataset>/indexes/<v>/*.index.json``.

Embedding sources: ``text`` (MiniLM over title, brand, category, description), ``cf`` (PPMI-SVD over the
training split's co-interactions), ``fused`` (both; the text-free datasets fall back to ``cf``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.splits import training_purchases
from onesearch.tokenizer import sid as SID
from onesearch.tokenizer.embeddings import cf_embeddings, fuse, item_texts, text_embeddings
from onesearch.tokenizer.keywords import KeywordConfig, enhance, extract_keywords, keyword_embeddings
from onesearch.tokenizer.kmeans import RQKMeansConfig, RQKMeansQuantizer

METHODS = ("khqe", "rqkmeans", "rqvae")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Where item embeddings come from."""

    source: str = "auto"
    """text, cf, fused, or auto (fused when items have text, cf otherwise)."""
    cf_weight: float = 0.2
    """Share of the behaviour part in a fused embedding."""
    cf_dim: int = 64
    """Dimension of the behaviour (PPMI-SVD) embedding."""
    cf_window: int = 5
    """Items within this many steps of each other in a user's sequence co-occur."""
    cache_dir: str = ""
    """Folder caching text embeddings by content hash ('' = $ONESEARCH_CACHE or artifacts/cache/embeddings,
    'none' = no cache)."""


@dataclass
class Embeddings:
    """Item embeddings in catalogue order, and what made them."""

    base: np.ndarray
    """Embedding without keywords (what rqkmeans / rqvae quantize)."""
    text: np.ndarray | None
    cf: np.ndarray | None
    source: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def training_interactions(ds: Dataset) -> pl.DataFrame:
    """Purchases before any held-out target of either task (held-out targets never shape the IDs)."""
    purchases = ds.interactions.filter(pl.col(S.EVENT) == "purchase")
    return training_purchases(purchases, ds.search_log, "both")


def build_embeddings(ds: Dataset, cfg: EmbeddingConfig | None = None) -> Embeddings:
    cfg = cfg or EmbeddingConfig()
    source = cfg.source
    if source == "auto":
        source = "fused" if ds.has_text else "cf"
    if source not in ("text", "cf", "fused"):
        raise ValueError(f"embedding source must be text, cf, fused or auto; got {cfg.source!r}")
    if source in ("text", "fused") and not ds.has_text:
        raise ValueError(f"dataset {ds.name!r} has no item text: use --embedding cf")
    item_ids = ds.items[S.ITEM_ID].to_numpy()
    text = cf = None
    seconds = 0.0
    if source in ("text", "fused"):
        text, seconds = text_embeddings(item_texts(ds.items), cache_dir=cfg.cache_dir)
    if source in ("cf", "fused"):
        t0 = time.perf_counter()
        cf = cf_embeddings(training_interactions(ds), item_ids, dim=cfg.cf_dim, window=cfg.cf_window)
        seconds += time.perf_counter() - t0
    base = fuse(text, cf, cfg.cf_weight) if source == "fused" else (text if text is not None else cf)
    return Embeddings(base, text, cf, source, seconds)


def keyword_enhanced(
    ds: Dataset, emb: Embeddings, ecfg: EmbeddingConfig, kcfg: KeywordConfig
) -> tuple[np.ndarray, float]:
    """The khqe input: keyword-enhanced text part, fused with the behaviour part as in ``emb``.

    Returns (embedding, seconds spent embedding keywords)."""
    if emb.text is None:
        why = "the items have no text" if not ds.has_text else f"the embedding source is {emb.source!r}"
        emb.notes.append(f"keyword enhancement skipped: {why}")
        return emb.base, 0.0
    kws = extract_keywords(ds.items, kcfg)
    t0 = time.perf_counter()
    kw, has = keyword_embeddings(
        kws, lambda v: text_embeddings(v, cache_dir=ecfg.cache_dir, progress=False)[0], emb.text.shape[1]
    )
    seconds = time.perf_counter() - t0
    enhanced = enhance(emb.text, kw, has, kcfg.fuse_weight)
    if emb.source == "fused":
        enhanced = fuse(enhanced, emb.cf, ecfg.cf_weight)
    return enhanced, seconds


KHQE_DEFAULT = RQKMeansConfig(
    codebook_sizes=(256, 256), balanced="residual", pq_subspaces=2, pq_codes=256, spread_collisions=True
)
RQKMEANS_DEFAULT = RQKMeansConfig(codebook_sizes=(256, 256, 256))
SMALL_CATALOGUE = 2000
"""Under this many items the learned methods default to two levels of 64 codes (and 64 codes per OPQ sub-vector):
256 codes a level would leave most codes with one item or none, so no prefix would be shared."""
SMALL_CODEBOOKS = (64, 64)


def catalogue_sizes(
    method: str, n_items: int, codebook_sizes: tuple[int, ...] | None, pq_codes: int | None
) -> tuple[tuple[int, ...] | None, int | None]:
    """The codebook sizes and PQ codes a learned ``method`` uses on ``n_items`` items: those given, else
    :data:`SMALL_CODEBOOKS` under :data:`SMALL_CATALOGUE` items (None = the method's own default)."""
    if n_items < SMALL_CATALOGUE and not method.startswith("index:"):
        return tuple(codebook_sizes or SMALL_CODEBOOKS), pq_codes or SMALL_CODEBOOKS[-1]
    return codebook_sizes, pq_codes


@dataclass
class TokenizeResult:
    table: SID.SIDTable
    quantizer: object | None
    metrics: dict


def make_quantizer(
    method: str,
    codebook_sizes: tuple[int, ...] | None,
    pq_subspaces: int | None,
    pq_codes: int | None,
    balanced: str | None,
    spread_collisions: bool | None = None,
    n_items: int | None = None,
):
    """The quantizer of ``method``, its defaults overridden by the non-None arguments. For a catalogue of
    ``n_items`` < :data:`SMALL_CATALOGUE` the default codebooks are :data:`SMALL_CODEBOOKS` (and 64 PQ codes)."""
    if n_items is not None:
        codebook_sizes, pq_codes = catalogue_sizes(method, n_items, codebook_sizes, pq_codes)
    if method in ("khqe", "rqkmeans"):
        base = KHQE_DEFAULT if method == "khqe" else RQKMEANS_DEFAULT
        over = {
            k: v
            for k, v in {
                "codebook_sizes": tuple(codebook_sizes) if codebook_sizes else None,
                "pq_subspaces": pq_subspaces,
                "pq_codes": pq_codes,
                "balanced": balanced,
                "spread_collisions": spread_collisions,
            }.items()
            if v is not None
        }
        return RQKMeansQuantizer(replace(base, **over), method=method)
    if method == "rqvae":
        from onesearch.tokenizer.rqvae import RQVAEConfig, RQVAEQuantizer

        cfg = RQVAEConfig()
        if codebook_sizes:
            cfg = replace(cfg, codebook_sizes=tuple(codebook_sizes))
        return RQVAEQuantizer(cfg)
    raise ValueError(f"unknown tokenizer method {method!r}; expected one of {[*METHODS, 'index:<variant>']}")


def quality(table: SID.SIDTable, ds: Dataset) -> dict:
    """collision_rate, unique_rate, utilization (per level), purity_l1 of a SID table over the catalogue."""
    items = ds.items.select(S.ITEM_ID, S.CATEGORY_PATH)
    order = pl.DataFrame({S.ITEM_ID: table.item_ids}).join(
        items, on=S.ITEM_ID, how="left", maintain_order="left"
    )
    labels = SID.category_labels(order[S.CATEGORY_PATH].to_list())
    semantic = table.codes[:, : table.semantic_levels]
    return {
        "collision_rate": SID.collision_rate(semantic),
        "unique_rate": len(np.unique(table.codes, axis=0)) / table.n_items,
        "utilization": SID.utilization(table.codes, table.codebook_sizes),
        "purity_l1": SID.purity(table.codes[:, 0], labels),
    }


def _log(msg: str) -> None:
    print(f"[tokenize] {msg}", file=sys.stderr, flush=True)


def tokenize(
    ds: Dataset,
    method: str,
    ecfg: EmbeddingConfig | None = None,
    kcfg: KeywordConfig | None = None,
    seed: int = 0,
    codebook_sizes: tuple[int, ...] | None = None,
    pq_subspaces: int | None = None,
    pq_codes: int | None = None,
    balanced: str | None = None,
    incremental_share: float = 0.0,
    spread_collisions: bool | None = None,
) -> TokenizeResult:
    """Tokenize every item of ``ds`` with ``method``; see the module docstring."""
    ecfg, kcfg = ecfg or EmbeddingConfig(), kcfg or KeywordConfig()
    item_ids = ds.items[S.ITEM_ID].to_numpy()
    if method.startswith("index:"):
        variant = method.partition(":")[2]
        if ds.index_dir is None:
            raise FileNotFoundError(f"dataset {ds.name!r} ships no reference indexes (no indexes/ folder)")
        files = sorted((Path(ds.index_dir) / variant).glob("*.index.json"))
        if not files:
            known = sorted(p.name for p in Path(ds.index_dir).iterdir() if p.is_dir())
            raise FileNotFoundError(f"no reference index {variant!r} in {ds.index_dir}; available: {known}")
        t0 = time.perf_counter()
        ids, codes = SID.load_reference_index(files[0], item_ids)
        keep = np.isin(ids, item_ids)
        ids, codes = ids[keep], codes[keep]
        sizes = tuple(int(max(256, codes[:, i].max() + 1)) for i in range(codes.shape[1]))
        table = SID.make_table(ids, codes, sizes, method)
        return TokenizeResult(
            table, None, {**quality(table, ds), "seconds": time.perf_counter() - t0, "embed_seconds": 0.0}
        )

    sizing = (method, codebook_sizes, pq_subspaces, pq_codes, balanced, spread_collisions, len(item_ids))
    quantizer = make_quantizer(*sizing)
    _log(f"embedding {len(item_ids)} items ({ecfg.source})")
    emb = build_embeddings(ds, ecfg)
    x, embed_seconds = emb.base, emb.seconds
    if method == "khqe":
        x, kw_seconds = keyword_enhanced(ds, emb, ecfg, kcfg)
        embed_seconds += kw_seconds
    incremental = None
    if incremental_share > 0:
        fresh = make_quantizer(*sizing)
        incremental = _incremental(fresh, x, item_ids, incremental_share, seed, ds)
    _log(f"fitting {method} on {x.shape}")
    t0 = time.perf_counter()
    quantizer.fit(x, seed=seed)
    table = SID.make_table(
        item_ids, quantizer.train_codes, quantizer.codebook_sizes, method, order=quantizer.train_residual
    )
    seconds = time.perf_counter() - t0
    metrics = {
        **quality(table, ds),
        "seconds": seconds,
        "embed_seconds": embed_seconds,
        "embedding": emb.source,
    }
    if emb.notes:
        metrics["notes"] = emb.notes
    if incremental:
        metrics["incremental"] = incremental
    return TokenizeResult(table, quantizer, metrics)


def _incremental(
    quantizer, x: np.ndarray, item_ids: np.ndarray, share: float, seed: int, ds: Dataset
) -> dict:
    """Fit on all but a random ``share`` of items, then encode those as new items with frozen codebooks."""
    if not 0 < share < 1:
        raise ValueError(f"incremental_share must be in (0, 1), got {share}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    new = rng.random(len(item_ids)) < share
    if not 0 < new.sum() < len(item_ids) - 1:
        raise ValueError(
            f"incremental_share {share} leaves {int(new.sum())} of {len(item_ids)} items as new; choose another"
        )
    quantizer.fit(x[~new], seed=seed)
    base = SID.make_table(
        item_ids[~new],
        quantizer.train_codes,
        quantizer.codebook_sizes,
        quantizer.method,
        order=quantizer.train_residual,
    )
    new_codes, _ = quantizer.encode(x[new])
    grown = SID.extend_table(base, item_ids[new], new_codes)
    unchanged = bool(np.array_equal(grown.lookup(base.item_ids), base.codes))
    before, after = quality(base, ds), quality(grown, ds)
    return {
        "new_items": int(new.sum()),
        "existing_ids_unchanged": unchanged,
        "collision_rate_before": before["collision_rate"],
        "collision_rate_after": after["collision_rate"],
        "utilization_before": before["utilization"],
        "utilization_after": after["utilization"],
        "unique_rate_after": after["unique_rate"],
        "seconds": time.perf_counter() - t0,
    }
