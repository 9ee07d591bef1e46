"""A dataset is the three tables of :mod:`onesearch.data.schema` plus where they came from."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from onesearch.data import schema as S
from onesearch.io import atomic_dir

TABLE_FILES = {
    "items": "items.parquet",
    "interactions": "interactions.parquet",
    "search_log": "search_log.parquet",
}
"""Artifact names of the tables inside a prepared dataset directory."""
MANIFEST_FILE = "dataset.json"


def check_name(name: object) -> str:
    """A dataset's name is one plain path component (jobs write to ``<output>/<name>/``): a non-empty string
    without a path separator, not ``.`` or ``..``, no control characters. Raises ``ValueError`` otherwise."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 for c in name)
    ):
        raise ValueError(
            f"dataset name {name!r} is not one plain path component (no '/', '\\', '.', '..', control characters)"
        )
    return name


@dataclass
class Dataset:
    """Validated tables of one dataset.

    ``search_log`` is None where the dataset has no search requests (Beauty); ``index_dir`` points at the
    reference semantic-ID indexes (``<index_dir>/<variant>/*.index.json``) when the source ships them.
    """

    name: str
    items: pl.DataFrame
    interactions: pl.DataFrame
    search_log: pl.DataFrame | None = None
    index_dir: Path | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        for table in ("items", "interactions"):
            df = getattr(self, table)
            if isinstance(df, pl.DataFrame) and df.height == 0:
                raise S.SchemaError(f"dataset {self.name!r}: table {table!r} is empty")
        if isinstance(self.search_log, pl.DataFrame) and self.search_log.height == 0:
            raise S.SchemaError(
                f"dataset {self.name!r}: table 'search_log' is empty (pass None when there is none)"
            )
        self.items = S.conform(self.items, S.ITEMS, f"{self.name}: items")
        self.interactions = S.conform(self.interactions, S.INTERACTIONS, f"{self.name}: interactions")
        S.check_references(self.items, self.interactions, "interactions", self.name)
        if self.search_log is not None:
            self.search_log = S.conform(self.search_log, S.SEARCH_LOG, f"{self.name}: search_log")
            S.check_references(self.items, self.search_log, "search_log", self.name)

    @property
    def has_text(self) -> bool:
        """True when items carry titles (the text-free path is needed otherwise)."""
        return self.items[S.TITLE].null_count() < self.items.height

    def stats(self) -> dict:
        """Counts that identify the dataset: users, items, interactions, events, search requests, cold items."""
        inter = self.interactions
        n_items = self.items.height
        touched = inter[S.ITEM_ID].n_unique()
        out = {
            "dataset": self.name,
            "users": inter[S.USER_ID].n_unique(),
            "items": n_items,
            "interactions": inter.height,
            "events": {e: int(c) for e, c in inter.group_by(S.EVENT).len().sort(S.EVENT).iter_rows()},
            "items_without_interactions": n_items - touched,
            "has_text": self.has_text,
        }
        if self.search_log is not None:
            out["search_requests"] = self.search_log.height
            out["distinct_queries"] = self.search_log[S.QUERY].n_unique()
        return out

    def fingerprint(self) -> str:
        """A hash of the three tables' rows (in their stored order): equal fingerprints mean the same data, so
        an artifact fitted on a dataset (semantic IDs, ...) can record it and be refused beside other data. Stable
        within one polars version (it hashes the tables' uncompressed Arrow IPC bytes)."""
        h = hashlib.sha256(self.name.encode())
        for key in TABLE_FILES:
            df = getattr(self, key)
            if df is None:
                h.update(b"none")
                continue
            h.update(f"{key}:{df.height}:{','.join(df.columns)}".encode())
            buf = io.BytesIO()
            df.rechunk().write_ipc(buf, compression="uncompressed")
            h.update(buf.getvalue())
        return h.hexdigest()

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the tables as parquet plus ``dataset.json``; the directory appears whole or not at all."""
        out = Path(out_dir)
        with atomic_dir(out, MANIFEST_FILE) as tmp:
            self.items.write_parquet(tmp / TABLE_FILES["items"])
            self.interactions.write_parquet(tmp / TABLE_FILES["interactions"])
            if self.search_log is not None:
                self.search_log.write_parquet(tmp / TABLE_FILES["search_log"])
            manifest = {
                "name": self.name,
                "source": self.source,
                "index_dir": str(self.index_dir) if self.index_dir else None,
                "stats": self.stats(),
                "meta": self.meta,
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dataset:
        """Read a directory written by :meth:`save`."""
        p = Path(path)
        mf = p / MANIFEST_FILE
        if not mf.is_file():
            raise FileNotFoundError(f"{p} is not a prepared dataset: {MANIFEST_FILE} is missing")
        manifest = json.loads(mf.read_text())
        if not isinstance(manifest, dict) or not manifest.get("name"):
            raise S.SchemaError(f"{mf}: expected an object with a 'name' (is this a prepared dataset?)")
        try:
            check_name(manifest["name"])
        except ValueError as e:
            raise S.SchemaError(f"{mf}: {e}") from None
        tables = {}
        for key, fname in TABLE_FILES.items():
            f = p / fname
            if f.is_file():
                tables[key] = pl.read_parquet(f)
            elif key != "search_log":
                raise FileNotFoundError(f"prepared dataset {p}: {fname} is missing")
        return cls(
            name=manifest["name"],
            items=tables["items"],
            interactions=tables["interactions"],
            search_log=tables.get("search_log"),
            index_dir=Path(manifest["index_dir"]) if manifest.get("index_dir") else None,
            source=manifest.get("source", ""),
            meta=manifest.get("meta", {}),
        )
