"""Semantic-ID tables: codes per item, the disambiguation code, quality metrics and reference indexes.

A semantic ID (SID) is a short tuple of codes, coarse to fine. A tokenizer produces the *semantic* codes
(levels 0..L-1); items whose semantic codes coincide are then told apart by a final *disambiguation* code
(0, 1, 2, ... within each group), so every item's full ID is unique.

:class:`SIDTable` holds the full IDs and is what every downstream step consumes; its :meth:`SIDTable.content_hash`
identifies it, and a generator records that hash so it refuses a table it was not trained with.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from onesearch.data import schema as S
from onesearch.io import atomic_write

SID_FILE = "sid.parquet"
"""Artifact name of the SID table (columns item_id, c0, c1, ...)."""
SID_META_FILE = "sid.json"
"""Artifact name of the table's metadata (method, codebook sizes, semantic levels, content hash)."""


def code_column(level: int) -> str:
    return f"c{level}"


@dataclass(frozen=True)
class SIDTable:
    """Full semantic IDs of a catalogue: ``codes[i]`` is the ID of ``item_ids[i]``.

    The last column of ``codes`` is the disambiguation code; the ones before it are the semantic levels.
    """

    item_ids: np.ndarray
    """(n,) int64 item ids, unique."""
    codes: np.ndarray
    """(n, levels) int64 codes; column ``semantic_levels`` (the last) is the disambiguation code."""
    codebook_sizes: tuple[int, ...]
    """Number of possible codes per level, the disambiguation level included."""
    method: str
    """Tokenizer that produced the semantic codes (khqe, rqkmeans, rqvae, index:<variant>)."""

    def __post_init__(self) -> None:
        ids = np.asarray(self.item_ids, dtype=np.int64)
        codes = np.asarray(self.codes, dtype=np.int64)
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "codes", codes)
        if codes.ndim != 2 or codes.shape[0] != ids.shape[0]:
            raise ValueError(
                f"SIDTable: codes must be (n_items, levels); got {codes.shape} for {ids.shape[0]} items"
            )
        if len(self.codebook_sizes) != codes.shape[1]:
            raise ValueError(
                f"SIDTable: {len(self.codebook_sizes)} codebook sizes for {codes.shape[1]} levels of codes"
            )
        if len(np.unique(ids)) != len(ids):
            raise ValueError("SIDTable: item ids are not unique")
        if codes.size and (codes.min() < 0 or (codes >= np.asarray(self.codebook_sizes)).any()):
            raise ValueError("SIDTable: a code is negative or not below its level's codebook size")

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def semantic_levels(self) -> int:
        return self.levels - 1

    def is_unique(self) -> bool:
        return len(np.unique(self.codes, axis=0)) == self.n_items

    def content_hash(self) -> str:
        """sha256 over item ids, codes, codebook sizes (not the method name): same IDs, same hash."""
        order = np.argsort(self.item_ids, kind="stable")
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.item_ids[order]).tobytes())
        h.update(np.ascontiguousarray(self.codes[order]).tobytes())
        h.update(json.dumps(list(map(int, self.codebook_sizes))).encode())
        return h.hexdigest()

    def rows(self, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """Row of each given item in this table; raises KeyError naming unknown ids."""
        ids = np.asarray(item_ids, dtype=np.int64)
        idx, found = self._find(ids)
        if not found.all():
            raise KeyError(f"item id(s) not in the SID table: {ids[~found][:5].tolist()}")
        return idx

    def contains(self, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """Which of the given item ids the table holds (bool, their shape): a binary search each, O(log n)."""
        return self._find(np.asarray(item_ids, dtype=np.int64))[1]

    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate row, found) of each id, by binary search in the sorted ids."""
        if ids.size == 0 or self.n_items == 0:
            return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
        order = self._order()
        pos = np.searchsorted(self.item_ids, ids, sorter=order)
        idx = order[np.clip(pos, 0, self.n_items - 1)]
        return idx, self.item_ids[idx] == ids

    def _order(self) -> np.ndarray:
        order = self.__dict__.get("_sorted")
        if order is None:
            order = np.argsort(self.item_ids, kind="stable")
            object.__setattr__(self, "_sorted", order)
        return order

    def lookup(self, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """Codes of the given items; raises KeyError naming unknown ids."""
        return self.codes[self.rows(item_ids)]

    def to_frame(self) -> pl.DataFrame:
        cols = {S.ITEM_ID: self.item_ids}
        cols.update({code_column(i): self.codes[:, i] for i in range(self.levels)})
        return pl.DataFrame(cols)

    def metadata(self) -> dict:
        return {
            "method": self.method,
            "codebook_sizes": list(map(int, self.codebook_sizes)),
            "semantic_levels": self.semantic_levels,
            "items": self.n_items,
            "content_hash": self.content_hash(),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``sid.parquet`` and ``sid.json`` into ``directory`` (each file atomically)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / SID_FILE, lambda p: self.to_frame().write_parquet(p))
        atomic_write(d / SID_META_FILE, lambda p: Path(p).write_text(json.dumps(self.metadata(), indent=2)))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SIDTable:
        d = Path(directory)
        for f in (SID_FILE, SID_META_FILE):
            if not (d / f).is_file():
                raise FileNotFoundError(f"{d}: {f} is missing (not a SID table directory)")
        try:
            meta = json.loads((d / SID_META_FILE).read_text())
            sizes, method = [int(v) for v in meta["codebook_sizes"]], str(meta["method"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{d / SID_META_FILE}: not a SID table description ({type(e).__name__}: {e})"
            ) from None
        try:
            df = pl.read_parquet(d / SID_FILE)
        except Exception as e:  # polars raises its own error types for a corrupt or foreign file
            raise ValueError(
                f"{d / SID_FILE}: not a readable parquet file ({type(e).__name__}: {e})"
            ) from None
        cols = [code_column(i) for i in range(len(sizes))]
        missing = [c for c in [S.ITEM_ID, *cols] if c not in df.columns]
        if missing:
            raise ValueError(f"{d / SID_FILE}: missing column(s) {missing}")
        table = cls(
            df[S.ITEM_ID].to_numpy(),
            df.select(cols).to_numpy(),
            tuple(sizes),
            method,
        )
        if meta.get("content_hash") and table.content_hash() != meta["content_hash"]:
            raise ValueError(
                f"{d}: content hash of {SID_FILE} does not match {SID_META_FILE} (files out of step)"
            )
        return table


# -- disambiguation -------------------------------------------------------------------------------------------


def disambiguate(semantic: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Disambiguation code per item: its rank (0, 1, ...) among items with the same semantic codes.

    ``order`` (optional, (n,) float) decides who gets 0 within a group (smallest first, e.g. the distance to the
    cluster centre); ties and the default keep the input order.
    """
    semantic = np.asarray(semantic, dtype=np.int64)
    n = semantic.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(semantic, axis=0, return_inverse=True)
    group = group.reshape(-1)
    key = np.zeros(n) if order is None else np.asarray(order, dtype=np.float64)
    idx = np.lexsort((np.arange(n), key, group))  # by group, then order, then input position
    g_sorted = group[idx]
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[idx] = np.arange(n) - run_start
    return rank


def make_table(
    item_ids: np.ndarray,
    semantic: np.ndarray,
    semantic_sizes: tuple[int, ...],
    method: str,
    order: np.ndarray | None = None,
) -> SIDTable:
    """Append the disambiguation code to ``semantic`` codes and build the :class:`SIDTable`."""
    semantic = np.asarray(semantic, dtype=np.int64)
    if semantic.ndim != 2 or semantic.shape[0] != len(item_ids):
        raise ValueError(f"make_table: expected ({len(item_ids)}, levels) codes, got shape {semantic.shape}")
    dis = disambiguate(semantic, order)
    size = int(dis.max()) + 1 if dis.size else 1
    return SIDTable(item_ids, np.column_stack([semantic, dis]), (*semantic_sizes, size), method)


def extend_table(table: SIDTable, new_item_ids: np.ndarray, new_semantic: np.ndarray) -> SIDTable:
    """Add new items (semantic codes from frozen codebooks) without changing any existing ID.

    Each new item takes the smallest disambiguation code not yet used by its semantic group; the
    disambiguation level's size grows when a group needs more codes.
    """
    new_ids = np.asarray(new_item_ids, dtype=np.int64)
    new_semantic = np.asarray(new_semantic, dtype=np.int64)
    if new_semantic.ndim != 2 or new_semantic.shape[0] != len(new_ids):
        raise ValueError(
            f"extend_table: expected ({len(new_ids)}, levels) codes, got shape {new_semantic.shape}"
        )
    if new_semantic.shape[1] != table.semantic_levels:
        raise ValueError(
            f"extend_table: new codes have {new_semantic.shape[1]} levels, the table has {table.semantic_levels}"
        )
    clash = np.intersect1d(new_ids, table.item_ids)
    if clash.size:
        raise ValueError(f"extend_table: item id(s) already in the table: {clash[:5].tolist()}")
    used: dict[tuple, set[int]] = {}
    for row in table.codes:
        used.setdefault(tuple(row[:-1]), set()).add(int(row[-1]))
    dis = np.empty(len(new_ids), dtype=np.int64)
    for i, row in enumerate(new_semantic):
        taken = used.setdefault(tuple(row), set())
        d = 0
        while d in taken:
            d += 1
        taken.add(d)
        dis[i] = d
    codes = np.vstack([table.codes, np.column_stack([new_semantic, dis])])
    sizes = (*table.codebook_sizes[:-1], max(table.codebook_sizes[-1], int(dis.max()) + 1 if dis.size else 1))
    return SIDTable(np.r_[table.item_ids, new_ids], codes, sizes, table.method)


# -- metrics --------------------------------------------------------------------------------------------------


def collision_rate(semantic: np.ndarray) -> float:
    """Share of items whose semantic codes (before disambiguation) are shared with at least one other item."""
    semantic = np.asarray(semantic)
    if semantic.shape[0] == 0:
        return 0.0
    _, inv, counts = np.unique(semantic, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inv.reshape(-1)] > 1).mean())


def utilization(codes: np.ndarray, sizes: tuple[int, ...]) -> list[float]:
    """Per level: distinct codes used / codebook size."""
    return [float(len(np.unique(codes[:, i])) / s) for i, s in enumerate(sizes)]


def category_labels(paths: list[list[str] | None], min_items: int = 20) -> list[str | None]:
    """Each item's category path cut at its deepest prefix that at least ``min_items`` items share.

    Items without a path get None (left out of purity).
    """
    counts: dict[tuple[str, ...], int] = {}
    for p in paths:
        if p:
            for d in range(1, len(p) + 1):
                counts[tuple(p[:d])] = counts.get(tuple(p[:d]), 0) + 1
    out: list[str | None] = []
    for p in paths:
        label = None
        if p:
            for d in range(len(p), 0, -1):
                if counts[tuple(p[:d])] >= min_items:
                    label = " > ".join(p[:d])
                    break
        out.append(label)
    return out


def purity(clusters: np.ndarray, labels: list[str | None]) -> float | None:
    """Share of labelled items whose cluster's majority label equals their own; None without labels."""
    df = pl.DataFrame(
        {"cluster": np.asarray(clusters), "label": pl.Series(labels, dtype=pl.String)}
    ).drop_nulls()
    if df.height == 0:
        return None
    per = df.group_by("cluster", "label").len()
    top = per.group_by("cluster").agg(pl.col("len").max())
    return float(top["len"].sum() / df.height)


# -- reference indexes ----------------------------------------------------------------------------------------

_CODE = re.compile(r"^<([a-z])_(\d+)>$")


def load_reference_index(
    path: str | os.PathLike, item_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``<item_id>: ["<a_70>", "<b_138>", ...]`` index file; return (item_ids, semantic codes).

    Every entry must have the same number of codes, each of the form ``<letter_number>`` with the letters in
    level order. When ``item_ids`` is given, every one of them must be in the index.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: reference index not found")
    raw = json.loads(p.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{p}: expected a non-empty object {{item_id: [code, ...]}}")
    ids, rows, width = [], [], None
    for key, codes in raw.items():
        if not isinstance(codes, list) or not codes:
            raise ValueError(f"{p}: item {key!r}: expected a list of codes, got {codes!r:.60}")
        if width is None:
            width = len(codes)
        if len(codes) != width:
            raise ValueError(f"{p}: item {key!r} has {len(codes)} codes, the first item has {width}")
        row = []
        for level, c in enumerate(codes):
            m = _CODE.match(c) if isinstance(c, str) else None
            if not m or ord(m.group(1)) - ord("a") != level:
                raise ValueError(
                    f"{p}: item {key!r}, level {level}: code {c!r} is not of the form <{chr(97 + level)}_N>"
                )
            row.append(int(m.group(2)))
        try:
            ids.append(int(key))
        except ValueError:
            raise ValueError(f"{p}: item key {key!r} is not an integer id") from None
        rows.append(row)
    out_ids, out_codes = np.asarray(ids, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    if item_ids is not None:
        missing = np.setdiff1d(np.asarray(item_ids, dtype=np.int64), out_ids)
        if missing.size:
            raise ValueError(
                f"{p}: {missing.size} catalogue item(s) have no entry, e.g. {missing[:5].tolist()}"
            )
    return out_ids, out_codes
