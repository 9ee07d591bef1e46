"""Loader for Amazon review datasets in the ``<Name>.inter.json`` / ``<Name>.item.json`` / ``indexes/`` layout.

The layout (used by ``../shared/data/amazon_scientific`` and ``amazon_beauty``):

``<Name>.inter.json``  required. ``{"<user_id>": [item_id, ...]}``, each list in time order.
``<Name>.item.json``   optional. ``{"<item_id>": {"title", "description", "brand", "categories"}}`` where
                       ``categories`` is a comma-joined path (a comma followed by a space belongs to a name, as in
                       ``"Tapes, Adhesives & Sealants"``).
``indexes/<variant>/<Name>.index.json``  optional reference semantic IDs.
``p5_datamaps.json``   optional (Beauty): ``id2item`` gives each item's ASIN, stored as an ``asin`` attribute.

A review is the only event these sets record; it is taken as a purchase, and a user's review order is the
``timestamp`` (0, 1, 2, ...). Items that appear only in ``item.json`` are kept (they have no interactions).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset
from onesearch.data.search_set import SearchSetConfig, build_search_log_with_stats

_CATEGORY_SPLIT = re.compile(r",(?! )")


class DataFormatError(ValueError):
    """A source file is missing or does not have the documented layout; the message names file and entry."""


def _read_json(path: Path) -> object:
    try:
        with path.open() as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e


def _int_key(key: str, path: Path, what: str) -> int:
    try:
        v = int(key)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: {what} key {key!r} is not an integer id") from None
    if v < 0:
        raise DataFormatError(f"{path}: {what} key {key!r} is negative")
    return v


def find_name(directory: Path) -> str:
    """The ``<Name>`` of the single ``<Name>.inter.json`` in ``directory``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    found = sorted(p.name[: -len(".inter.json")] for p in directory.glob("*.inter.json"))
    if not found:
        raise DataFormatError(
            f"{directory}: no <Name>.inter.json file (the interaction sequences are required)"
        )
    if len(found) > 1:
        raise DataFormatError(f"{directory}: several *.inter.json files {found}; pass name= to choose one")
    return found[0]


def read_interactions(path: Path) -> pl.DataFrame:
    """Parse ``<Name>.inter.json`` into the interactions table (event = purchase, timestamp = order)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object {{user_id: [item_id, ...]}}, got {type(raw).__name__}"
        )
    if not raw:
        raise DataFormatError(f"{path}: no users (the file holds an empty object)")
    users: list[int] = []
    items: list[int] = []
    order: list[int] = []
    for key, seq in raw.items():
        uid = _int_key(key, path, "user")
        if not isinstance(seq, list) or not seq:
            raise DataFormatError(
                f"{path}: user {key!r}: expected a non-empty list of item ids, got {seq!r:.60}"
            )
        for pos, it in enumerate(seq):
            if isinstance(it, bool) or not isinstance(it, int) or it < 0:
                raise DataFormatError(
                    f"{path}: user {key!r}, position {pos}: item id {it!r} is not a non-negative integer"
                )
        users.extend([uid] * len(seq))
        items.extend(seq)
        order.extend(range(len(seq)))
    return pl.DataFrame(
        {S.USER_ID: users, S.ITEM_ID: items, S.TIMESTAMP: order, S.EVENT: ["purchase"] * len(items)},
        schema={S.USER_ID: pl.Int64, S.ITEM_ID: pl.Int64, S.TIMESTAMP: pl.Int64, S.EVENT: pl.String},
    )


def _clean_text(v: object, path: Path, key: str, field: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise DataFormatError(
            f"{path}: item {key!r}: field {field!r} must be a string, got {type(v).__name__}"
        )
    v = v.strip()
    return v or None


def read_items(path: Path) -> pl.DataFrame:
    """Parse ``<Name>.item.json`` into the items table."""
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object {{item_id: {{title, ...}}}}, got {type(raw).__name__}"
        )
    if not raw:
        raise DataFormatError(f"{path}: no items (the file holds an empty object)")
    rows: dict[str, list] = {S.ITEM_ID: [], S.TITLE: [], S.DESCRIPTION: [], S.BRAND: [], S.CATEGORY_PATH: []}
    for key, rec in raw.items():
        iid = _int_key(key, path, "item")
        if not isinstance(rec, dict):
            raise DataFormatError(
                f"{path}: item {key!r}: expected an object with title/description/brand/categories"
            )
        if "title" not in rec:
            raise DataFormatError(f"{path}: item {key!r}: missing field 'title'")
        cats = _clean_text(rec.get("categories"), path, key, "categories")
        path_list = [c.strip() for c in _CATEGORY_SPLIT.split(cats) if c.strip()] if cats else None
        rows[S.ITEM_ID].append(iid)
        rows[S.TITLE].append(_clean_text(rec.get("title"), path, key, "title"))
        rows[S.DESCRIPTION].append(_clean_text(rec.get("description"), path, key, "description"))
        rows[S.BRAND].append(_clean_text(rec.get("brand"), path, key, "brand"))
        rows[S.CATEGORY_PATH].append(path_list or None)
    return pl.DataFrame(
        rows,
        schema={
            S.ITEM_ID: pl.Int64,
            S.TITLE: pl.String,
            S.DESCRIPTION: pl.String,
            S.BRAND: pl.String,
            S.CATEGORY_PATH: pl.List(pl.String),
        },
    ).sort(S.ITEM_ID)


def _asin_attributes(datamaps: Path, item_ids: pl.Series) -> pl.Series:
    raw = _read_json(datamaps)
    if not isinstance(raw, dict) or not isinstance(raw.get("id2item"), dict):
        raise DataFormatError(f"{datamaps}: expected an object with an 'id2item' map")
    id2item = raw["id2item"]
    # The P5 maps are 1-based: item i here is item i + 1 there.
    out = []
    for i in item_ids.to_list():
        asin = id2item.get(str(i + 1))
        out.append([{"name": "asin", "value": asin}] if asin else None)
    return pl.Series(S.ATTRIBUTES, out, dtype=S.ATTRIBUTE_DTYPE)


def load_amazon(
    directory: str | Path,
    *,
    name: str | None = None,
    dataset_name: str | None = None,
    search: SearchSetConfig | None = None,
) -> Dataset:
    """Load an Amazon-format directory into a validated :class:`Dataset`.

    When items have category paths, the personalised product-search log is built from the purchases
    (see :mod:`onesearch.data.search_set`); ``search`` configures it.
    """
    directory = Path(directory)
    name = name or find_name(directory)
    inter_path = directory / f"{name}.inter.json"
    interactions = read_interactions(inter_path)
    item_path = directory / f"{name}.item.json"
    if item_path.is_file():
        items = read_items(item_path)
        unknown = (
            interactions.select(S.ITEM_ID).unique().join(items.select(S.ITEM_ID), on=S.ITEM_ID, how="anti")
        )
        if unknown.height:
            raise DataFormatError(
                f"{inter_path}: {unknown.height} item id(s) have no entry in {item_path.name}, "
                f"e.g. {sorted(unknown[S.ITEM_ID].to_list())[:5]}"
            )
    else:
        ids = interactions[S.ITEM_ID].unique().sort()
        items = pl.DataFrame({S.ITEM_ID: ids}).with_columns(
            pl.lit(None, pl.String).alias(S.TITLE),
            pl.lit(None, pl.String).alias(S.DESCRIPTION),
            pl.lit(None, pl.String).alias(S.BRAND),
            pl.lit(None, pl.List(pl.String)).alias(S.CATEGORY_PATH),
        )
    datamaps = directory / "p5_datamaps.json"
    if datamaps.is_file():
        items = items.with_columns(_asin_attributes(datamaps, items[S.ITEM_ID]))
    index_dir = directory / "indexes"
    search = search or SearchSetConfig()
    meta: dict = {"format": "amazon", "file_name": name, "search": search.as_dict()}
    search_log = None
    if items[S.CATEGORY_PATH].null_count() < items.height:
        search_log, meta["search_stats"] = build_search_log_with_stats(items, interactions, search)
    return Dataset(
        name=dataset_name or name.lower(),
        items=items,
        interactions=interactions,
        search_log=search_log,
        index_dir=index_dir if index_dir.is_dir() else None,
        source=str(directory),
        meta=meta,
    )
