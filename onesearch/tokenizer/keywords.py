"""Keyword enhancement: an item's core attributes, hot words down-weighted, embedded and fused with the item.

Items that share their core attributes (what the product *is*: category leaf, product type, brand, material,
key specifications) should share their leading semantic-ID codes; words that sellers put in any title
("new", "premium", "pack", "heavy duty", "2024") should not pull unrelated items together.

1. :func:`extract_keywords` lists each item's keywords with a prior weight per kind (:class:`KeywordConfig`):
   the category leaf and its parent, the product type (the head words of the title, before the first comma,
   dash, "with", "for" or "by", brand and numbers removed), the brand, materials (from a vocabulary or the
   item's ``material`` attribute) and size / unit specifications (``1/2-inch``, ``100 ml``, ``12v``).
2. :func:`hot_word_weights` measures how a title word spreads over the catalogue's top categories: the
   normalised entropy H of its distribution over them (0 = one category, 1 = spread evenly). A title-derived
   keyword's weight is multiplied by ``(1 - H) ** hot_word_power``, so hot words fade out. Category and
   brand keywords are structured fields and are not penalised; size / unit specifications keep their small
   flat prior weight.
3. :func:`keyword_embeddings` embeds each distinct keyword once (MiniLM) and averages an item's keyword vectors
   by weight; :func:`enhance` fuses it with the item embedding: ``normalize((1-w)·e + w·k)`` (w = 0.5 default).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.data.search_set import STOP_WORDS, words

MATERIALS = frozenset(
    "steel stainless aluminum aluminium brass copper bronze iron titanium zinc nickel chrome tungsten carbide "
    "plastic nylon rubber silicone ptfe teflon polypropylene polyethylene hdpe ldpe pvc vinyl acrylic "
    "polycarbonate abs polyester polyurethane epoxy glass borosilicate quartz ceramic porcelain wood bamboo "
    "cotton wool leather latex nitrile neoprene foam paper cardboard fiberglass carbon graphite kevlar".split()
)
"""Material words recognised in titles (and accepted from a ``material`` attribute)."""

_SPEC = re.compile(
    r"\b(\d+(?:[./]\d+)?(?:-|\s)?(?:mm|cm|m|ml|l|oz|in|inch|inches|ft|v|w|a|mah|awg|gauge|psi|lb|lbs|g|kg|"
    r"gallon|gal|pcs|pack|count|ct|micron|um|rpm|hz|amp|volt|watt))\b"
)
_HEAD_CUT = re.compile(r",|\s-\s|\(|\bwith\b|\bfor\b|\bby\b|\bin\b|\|", re.IGNORECASE)


@dataclass(frozen=True)
class KeywordConfig:
    """Prior weights of each kind of keyword and the hot-word penalty."""

    leaf_weight: float = 1.0
    """Weight of the category leaf (the most specific category)."""
    parent_weight: float = 0.5
    """Weight of the category level above the leaf."""
    product_type_weight: float = 1.0
    """Weight of the product type taken from the title's head words."""
    brand_weight: float = 0.3
    """Weight of the brand (kept low: brands span unrelated products)."""
    material_weight: float = 0.4
    """Weight of each material."""
    spec_weight: float = 0.15
    """Weight of each size / unit specification."""
    product_type_words: int = 2
    """How many head words make the product type."""
    hot_word_power: float = 2.0
    """Title keywords are weighted by (1 - normalised category entropy) ** power."""
    min_word_count: int = 3
    """Words seen fewer times than this get no entropy estimate (treated as specific, penalty 1)."""
    fuse_weight: float = 0.5
    """w in normalize((1 - w)·item + w·keywords)."""


def _top_category(path: list[str] | None, shared_root: bool) -> str | None:
    if not path:
        return None
    i = 1 if shared_root and len(path) > 1 else 0
    return path[i]


def hot_word_weights(items: pl.DataFrame, cfg: KeywordConfig | None = None) -> dict[str, float]:
    """Penalty in [0, 1] per title word: ``(1 - H_norm) ** power`` of its spread over top categories."""
    cfg = cfg or KeywordConfig()
    paths = items[S.CATEGORY_PATH].to_list()
    roots = {p[0] for p in paths if p}
    shared = len(roots) == 1
    counts: dict[str, Counter] = defaultdict(Counter)
    cats: set[str] = set()
    for title, path in zip(items[S.TITLE].to_list(), paths, strict=True):
        top = _top_category(path, shared)
        if top is None or not title:
            continue
        cats.add(top)
        for w in set(words(title)):
            counts[w][top] += 1
    n_cats = len(cats)
    out: dict[str, float] = {}
    if n_cats < 2:
        return out
    # normalise by each category's size so big categories do not look like "spread"
    size = Counter(_top_category(p, shared) for p in paths if p)
    log_k = math.log(n_cats)
    for w, c in counts.items():
        if sum(c.values()) < cfg.min_word_count:
            continue
        rates = np.array([c[k] / size[k] for k in c], dtype=np.float64)
        p = rates / rates.sum()
        h = float(-(p * np.log(p)).sum()) / log_k
        out[w] = max(0.0, 1.0 - h) ** cfg.hot_word_power
    return out


_UNITS = frozenset(
    "mm cm m ml l oz in inch inches ft feet v w a mah awg gauge psi lb lbs g kg gallon gal pcs pack count ct "
    "micron um rpm hz amp volt watt piece pieces set x".split()
)
"""Unit and quantity words that never name the product type."""


def _product_type(title: str, brand: str | None, n_words: int) -> str | None:
    head = _SPEC.sub(" ", _HEAD_CUT.split(title, maxsplit=1)[0].lower())
    brand_words = set(words(brand)) if brand else set()
    ws = [
        w
        for w in words(head)
        if w not in STOP_WORDS
        and w not in _UNITS
        and w not in brand_words
        and not any(ch.isdigit() for ch in w)
        and len(w) > 1
    ]
    return " ".join(ws[-n_words:]) if ws else None


def extract_keywords(items: pl.DataFrame, cfg: KeywordConfig | None = None) -> list[list[tuple[str, float]]]:
    """Per item, its (keyword, weight) list after the hot-word penalty; keywords are lower-case strings."""
    cfg = cfg or KeywordConfig()
    hot = hot_word_weights(items, cfg)

    def penalty(phrase: str) -> float:
        ws = phrase.split()
        return min((hot.get(w, 1.0) for w in ws), default=1.0) if ws else 1.0

    has_attr = S.ATTRIBUTES in items.columns
    out: list[list[tuple[str, float]]] = []
    cols = [S.TITLE, S.BRAND, S.CATEGORY_PATH] + ([S.ATTRIBUTES] if has_attr else [])
    for row in items.select(cols).iter_rows():
        title, brand, path = row[0], row[1], row[2]
        attrs = {a["name"]: a["value"] for a in (row[3] or [])} if has_attr and row[3] else {}
        kw: dict[str, float] = {}

        def add(k: str | None, w: float, kw=kw) -> None:
            if k and w > 0:
                k = k.lower().strip()
                kw[k] = max(kw.get(k, 0.0), w)

        if path:
            add(path[-1], cfg.leaf_weight)
            if len(path) > 2:  # the level above the leaf, unless it is the root
                add(path[-2], cfg.parent_weight)
        if title:
            pt = _product_type(title, brand, cfg.product_type_words)
            if pt:
                add(pt, cfg.product_type_weight * penalty(pt))
            tw = set(words(title))
            for m in sorted(tw & MATERIALS):
                add(m, cfg.material_weight * hot.get(m, 1.0))
            for spec in dict.fromkeys(s.replace(" ", "") for s in _SPEC.findall(title.lower())):
                add(spec, cfg.spec_weight)
        if brand:
            add(brand, cfg.brand_weight)
        if attrs.get("material"):
            add(attrs["material"], cfg.material_weight)
        out.append(sorted(kw.items(), key=lambda kv: -kv[1]))
    return out


def keyword_embeddings(
    keywords: list[list[tuple[str, float]]], embed, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of each item's keyword vectors, and a mask of items that had any keyword.

    ``embed(list[str]) -> (m, dim)`` embeds the distinct keywords (called once).
    """
    vocab = sorted({k for kws in keywords for k, _ in kws})
    out = np.zeros((len(keywords), dim), dtype=np.float32)
    has = np.zeros(len(keywords), dtype=bool)
    if not vocab:
        return out, has
    vecs = np.asarray(embed(vocab), dtype=np.float32)
    index = {k: i for i, k in enumerate(vocab)}
    for i, kws in enumerate(keywords):
        total = sum(w for _, w in kws)
        if total <= 0:
            continue
        out[i] = sum(w * vecs[index[k]] for k, w in kws) / total
        has[i] = True
    return out, has


def enhance(emb: np.ndarray, kw_emb: np.ndarray, has_kw: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``normalize((1-w)·normalize(e) + w·normalize(k))`` for items with keywords; others keep ``normalize(e)``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"enhance: weight must be in [0, 1], got {weight}")
    if kw_emb.shape != emb.shape:
        raise ValueError(
            f"enhance: keyword embeddings {kw_emb.shape} do not match item embeddings {emb.shape}"
        )
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    k = kw_emb / np.maximum(np.linalg.norm(kw_emb, axis=1, keepdims=True), 1e-12)
    mixed = np.where(has_kw[:, None], (1 - weight) * e + weight * k, e)
    return (mixed / np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)).astype(np.float32)
