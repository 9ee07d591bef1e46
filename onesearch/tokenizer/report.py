"""What a semantic-ID table looks like: the code tree, items that share leading codes, and what keywords changed.

These are the numbers behind the tokenizer's figures (:func:`onesearch.plots.plot_code_tree`,
:func:`onesearch.plots.plot_keyword_effect`) and the notebook ``notebooks/01_catalog_and_semantic_ids.ipynb``.
A node of the code tree at depth d is a distinct prefix of d semantic codes; its size is the number of items whose
ID starts with it. The leaves at depth ``semantic_levels`` are the semantic IDs before disambiguation: a leaf with
more than one item is a collision, which the disambiguation code then tells apart.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.tokenizer import sid as SID


class CodeTree(NamedTuple):
    """Shape of a SID table's code tree."""

    node_sizes: list[np.ndarray]
    """Per semantic level d (0-based), items per node at depth d + 1, largest first."""
    utilization: list[float]
    """Per level, the disambiguation level included: distinct codes used / codebook size."""
    codebook_sizes: tuple[int, ...]
    """Codes per level, the disambiguation level included."""
    collision_rate: float
    """Share of items whose semantic ID (before disambiguation) is shared with another item."""

    @property
    def collision_sizes(self) -> np.ndarray:
        """Items per semantic ID (the leaves), largest first; entries above 1 are collisions."""
        return self.node_sizes[-1]


def code_tree(table: SID.SIDTable) -> CodeTree:
    """The node sizes per depth, the utilisation per level and the collision rate of ``table``."""
    semantic = table.codes[:, : table.semantic_levels]
    sizes = []
    for d in range(1, table.semantic_levels + 1):
        _, counts = np.unique(semantic[:, :d], axis=0, return_counts=True)
        sizes.append(np.sort(counts)[::-1])
    return CodeTree(
        sizes,
        SID.utilization(table.codes, table.codebook_sizes),
        tuple(table.codebook_sizes),
        SID.collision_rate(semantic),
    )


def sid_strings(table: SID.SIDTable) -> list[str]:
    """Each item's full ID written ``<a_12><b_3><c_0>`` (one letter per level, the disambiguation code last)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(f"<{letters[j]}_{c}>" for j, c in enumerate(row)) for row in table.codes.tolist()]


def _titles(table: SID.SIDTable, items: pl.DataFrame) -> pl.DataFrame:
    """The items of ``table`` in table order with their title and category leaf."""
    frame = pl.DataFrame({S.ITEM_ID: table.item_ids, "sid": sid_strings(table)})
    facts = items.select(S.ITEM_ID, S.TITLE, pl.col(S.CATEGORY_PATH).list.last().alias("category"))
    return frame.join(facts, on=S.ITEM_ID, how="left", maintain_order="left")


def shared_prefix_examples(
    table: SID.SIDTable, items: pl.DataFrame, depth: int = 2, groups: int = 3, per_group: int = 4
) -> pl.DataFrame:
    """Items of the ``groups`` largest nodes at ``depth`` (items sharing their first ``depth`` codes).

    Columns: ``prefix`` (the shared codes), ``sid``, ``item_id``, ``title``, ``category``; at most ``per_group``
    items per node, in table order.
    """
    if not 1 <= depth <= table.semantic_levels:
        raise ValueError(f"depth must be in [1, {table.semantic_levels}], got {depth}")
    frame = _titles(table, items).with_columns(
        pl.Series("prefix", ["-".join(map(str, r)) for r in table.codes[:, :depth].tolist()])
    )
    biggest = frame.group_by("prefix").len().sort(["len", "prefix"], descending=[True, False]).head(groups)
    out = frame.join(biggest.select("prefix", "len"), on="prefix").sort(
        ["len", "prefix"], descending=[True, False]
    )
    out = out.group_by("prefix", maintain_order=True).head(per_group)
    return out.select("prefix", "sid", S.ITEM_ID, S.TITLE, "category")


def _groups(codes: np.ndarray) -> list[set[int]]:
    """Per item, the indices of the other items with the same code."""
    members: dict[int, set[int]] = {}
    for i, c in enumerate(codes.tolist()):
        members.setdefault(c, set()).add(i)
    return [members[c] - {i} for i, c in enumerate(codes.tolist())]


class KeywordEffect(NamedTuple):
    """What keyword enhancement changed (:func:`keyword_effect`)."""

    metrics: pl.DataFrame
    """``metric``, ``without keywords``, ``with keywords``: purity of the level-1 and level-2 codes against the
    category leaf, the collision rate, and the level-1 codes in use."""
    moved_share: float
    """Share of items whose level-1 code-mates mostly changed (Jaccard overlap of the two groups below 0.5)."""
    examples: pl.DataFrame
    """A seeded sample of such items: title, top keywords, three level-1 code-mates without and with keywords."""


def keyword_effect(
    plain: SID.SIDTable,
    enhanced: SID.SIDTable,
    items: pl.DataFrame,
    keywords: list[list[tuple[str, float]]],
    examples: int = 4,
    seed: int = 0,
) -> KeywordEffect:
    """What keyword enhancement changed, from two tables of the same items (without and with keywords).

    ``keywords`` are the items' extracted keywords in ``items`` order
    (:func:`onesearch.tokenizer.keywords.extract_keywords`); ``examples`` items are shown.
    """
    if not np.array_equal(np.sort(plain.item_ids), np.sort(enhanced.item_ids)):
        raise ValueError("keyword_effect: the two tables must hold the same items")
    ids = items[S.ITEM_ID].to_numpy()
    if len(keywords) != len(ids):
        raise ValueError(f"keyword_effect: {len(keywords)} keyword lists for {len(ids)} items")
    leaf = items[S.CATEGORY_PATH].list.last().to_list()
    pos = {int(i): r for r, i in enumerate(ids)}
    rows, first = {}, {}
    for name, t in (("without keywords", plain), ("with keywords", enhanced)):
        codes = np.empty((len(ids), t.codes.shape[1]), dtype=np.int64)
        codes[[pos[int(i)] for i in t.item_ids]] = t.codes  # items order
        first[name] = codes[:, 0]
        second = codes[:, 0] * (int(t.codebook_sizes[1]) if t.semantic_levels > 1 else 1) + codes[:, 1]
        rows[name] = [
            SID.purity(codes[:, 0], leaf),
            SID.purity(second, leaf) if t.semantic_levels > 1 else None,
            SID.collision_rate(codes[:, : t.semantic_levels]),
            float(len(np.unique(codes[:, 0]))),
        ]
    before, after = (_groups(first[n]) for n in rows)
    jac = np.array([len(a & b) / max(len(a | b), 1) for a, b in zip(before, after, strict=True)])
    moved = np.flatnonzero(jac < 0.5)
    metrics = pl.DataFrame(
        {
            "metric": [
                "level-1 purity (category leaf)",
                "level-2 purity (category leaf)",
                "collision rate",
                "level-1 codes used",
            ],
            **rows,
        }
    )
    titles = items[S.TITLE].to_list()
    rng = np.random.default_rng(seed)
    pick = rng.choice(moved, min(examples, moved.size), replace=False) if moved.size else []
    mates = lambda g: " | ".join(titles[j] for j in sorted(g)[:3])  # noqa: E731
    ex = pl.DataFrame(
        {
            S.TITLE: [titles[i] for i in pick],
            "keywords": [", ".join(k for k, _ in keywords[i][:3]) for i in pick],
            "code-mates without keywords": [mates(before[i]) for i in pick],
            "code-mates with keywords": [mates(after[i]) for i in pick],
        },
        schema=dict.fromkeys([S.TITLE, "keywords", "code-mates without keywords", "code-mates with keywords"],
                             pl.String),
    )  # fmt: skip
    return KeywordEffect(metrics, float(moved.size / len(ids)), ex)
