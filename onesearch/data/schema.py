"""The one place where the toolkit's tables are defined.

Every table is a polars DataFrame (stored as parquet). A table schema lists its columns, their polars dtypes,
whether they may hold nulls, and whether the column must be present at all. :func:`validate` checks a frame
against a schema and raises :class:`SchemaError` naming the table, the column and what was expected, so that
bad input never travels further than the loader that read it.

Tables
------
``items``         one row per product.
``interactions``  one row per (user, item, event), time-ordered by ``timestamp``.
``search_log``    one row per search request with the item the shopper acted on (the retrieval target).

See ``docs/data.md`` for the meaning of every column and for how each dataset fills them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# -- column names (use these constants, never string literals, across packages) -------------------------
ITEM_ID = "item_id"
USER_ID = "user_id"
TITLE = "title"
DESCRIPTION = "description"
BRAND = "brand"
CATEGORY_PATH = "category_path"
PRICE = "price"
ATTRIBUTES = "attributes"
TIMESTAMP = "timestamp"
EVENT = "event"
REQUEST_ID = "request_id"
POSITION = "position"
QUERY = "query"
SPLIT = "split"

# -- events, weakest to strongest --------------------------------------------------------------------------
EVENTS: tuple[str, ...] = ("impression", "click", "cart", "purchase")
"""Allowed values of the ``event`` column, ordered from weakest to strongest signal."""

SPLITS: tuple[str, ...] = ("train", "valid", "test")

ATTRIBUTE_DTYPE = pl.List(pl.Struct({"name": pl.String, "value": pl.String}))


@dataclass(frozen=True)
class Column:
    """One column of a table schema."""

    name: str
    """Column name."""
    dtype: pl.DataType
    """Polars dtype the column must have (integer widths are normalised to Int64 by :func:`conform`)."""
    nullable: bool
    """Whether null values are allowed."""
    required: bool = True
    """Whether the column must be present; optional columns are added as all-null by :func:`conform`."""
    doc: str = ""
    """One line on what the column holds."""


@dataclass(frozen=True)
class TableSchema:
    """An ordered set of columns plus the key that must be unique (if any)."""

    name: str
    columns: tuple[Column, ...]
    unique_key: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


ITEMS = TableSchema(
    "items",
    (
        Column(ITEM_ID, pl.Int64, False, doc="Non-negative integer product id."),
        Column(TITLE, pl.String, True, doc="Product title; null where the dataset has no text (Beauty)."),
        Column(DESCRIPTION, pl.String, True, doc="Free-text description."),
        Column(BRAND, pl.String, True, doc="Brand name."),
        Column(CATEGORY_PATH, pl.List(pl.String), True, doc="Category path, root first."),
        Column(PRICE, pl.Float64, True, required=False, doc="Price in the catalog's currency."),
        Column(
            ATTRIBUTES,
            ATTRIBUTE_DTYPE,
            True,
            required=False,
            doc="(name, value) pairs: material, colour, asin...",
        ),
    ),
    unique_key=(ITEM_ID,),
)

INTERACTIONS = TableSchema(
    "interactions",
    (
        Column(USER_ID, pl.Int64, False, doc="Non-negative integer user id."),
        Column(ITEM_ID, pl.Int64, False, doc="Product the event is about; must exist in items."),
        Column(
            TIMESTAMP,
            pl.Int64,
            False,
            doc="Event time (seconds) or, where the source has none, the order index.",
        ),
        Column(EVENT, pl.String, False, doc="One of impression, click, cart, purchase."),
        Column(
            REQUEST_ID, pl.Int64, True, required=False, doc="Search request that led to the event, if any."
        ),
    ),
)

SEARCH_LOG = TableSchema(
    "search_log",
    (
        Column(REQUEST_ID, pl.Int64, False, doc="Unique id of the search request."),
        Column(USER_ID, pl.Int64, False, doc="Shopper who searched."),
        Column(
            POSITION,
            pl.Int64,
            False,
            doc="How many of the user's purchases came before this request (history length).",
        ),
        Column(TIMESTAMP, pl.Int64, False, doc="Request time, on the interactions' clock."),
        Column(QUERY, pl.String, False, doc="Query text as typed (never empty)."),
        Column(
            ITEM_ID, pl.Int64, False, doc="Target item: the product the shopper acted on after this query."
        ),
        Column(EVENT, pl.String, False, doc="Strongest event on the target item (click, cart or purchase)."),
    ),
    unique_key=(REQUEST_ID,),
)

SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (ITEMS, INTERACTIONS, SEARCH_LOG)}

_INTS = {pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64}


class SchemaError(ValueError):
    """A table does not match its schema; the message names the table, the column and the problem."""


def _where(source: str | None) -> str:
    return f" (from {source})" if source else ""


def conform(df: pl.DataFrame, schema: TableSchema, source: str | None = None) -> pl.DataFrame:
    """Return ``df`` with the schema's column order, integer widths widened to Int64, optional columns added.

    Raises :class:`SchemaError` for anything :func:`validate` would reject.
    """
    where = _where(source)
    if not isinstance(df, pl.DataFrame):
        raise SchemaError(
            f"table {schema.name!r}{where}: expected a polars DataFrame, got {type(df).__name__}"
        )
    missing = [c.name for c in schema.columns if c.required and c.name not in df.columns]
    if missing:
        raise SchemaError(
            f"table {schema.name!r}{where}: missing required column(s) {missing}; has {df.columns}"
        )
    exprs = []
    for c in schema.columns:
        if c.name not in df.columns:
            exprs.append(pl.lit(None, dtype=c.dtype).alias(c.name))
            continue
        have = df.schema[c.name]
        if c.dtype == pl.Int64 and have in _INTS:
            exprs.append(pl.col(c.name).cast(pl.Int64))
        elif c.dtype == pl.Float64 and (have in _INTS or have in (pl.Float32, pl.Float64)):
            exprs.append(pl.col(c.name).cast(pl.Float64))
        elif have == pl.Null:
            exprs.append(pl.col(c.name).cast(c.dtype))
        else:
            exprs.append(pl.col(c.name))
    out = df.select(exprs)
    validate(out, schema, source)
    return out


def validate(df: pl.DataFrame, schema: TableSchema, source: str | None = None) -> None:
    """Check dtypes, nulls, event values and key uniqueness; raise :class:`SchemaError` on the first problem."""
    where = _where(source)
    for c in schema.columns:
        if c.name not in df.columns:
            if c.required:
                raise SchemaError(f"table {schema.name!r}{where}: missing required column {c.name!r}")
            continue
        have = df.schema[c.name]
        if have != c.dtype:
            raise SchemaError(
                f"table {schema.name!r}{where}: column {c.name!r} has type {have}, expected {c.dtype}"
            )
        if not c.nullable:
            n_null = df[c.name].null_count()
            if n_null:
                row = df.with_row_index("_row").filter(pl.col(c.name).is_null())["_row"][0]
                raise SchemaError(
                    f"table {schema.name!r}{where}: column {c.name!r} has {n_null} null value(s), first at row {row}"
                )
    if EVENT in schema.names and EVENT in df.columns and df.height:
        bad = df.filter(~pl.col(EVENT).is_in(list(EVENTS)))
        if bad.height:
            raise SchemaError(
                f"table {schema.name!r}{where}: column 'event' has value {bad[EVENT][0]!r} "
                f"({bad.height} row(s)); expected one of {list(EVENTS)}"
            )
    for col in (ITEM_ID, USER_ID):
        if col in schema.names and col in df.columns and df.height:
            neg = df.filter(pl.col(col) < 0)
            if neg.height:
                raise SchemaError(
                    f"table {schema.name!r}{where}: column {col!r} has {neg.height} negative id(s), e.g. {neg[col][0]}"
                )
    if schema.name == "search_log" and df.height:
        shown = df.filter(pl.col(EVENT) == "impression")
        if shown.height:
            raise SchemaError(
                f"table 'search_log'{where}: the target's event must be click, cart or purchase; "
                f"request_id {shown[REQUEST_ID][0]} has 'impression'"
            )
        empty = df.filter(pl.col(QUERY).str.strip_chars() == "")
        if empty.height:
            raise SchemaError(
                f"table 'search_log'{where}: {empty.height} empty query string(s), first request_id "
                f"{empty[REQUEST_ID][0]}"
            )
    if schema.unique_key and df.height:
        dup = df.group_by(list(schema.unique_key)).len().filter(pl.col("len") > 1)
        if dup.height:
            key = dup.row(0)[:-1]
            raise SchemaError(
                f"table {schema.name!r}{where}: key {list(schema.unique_key)} is not unique, e.g. {key} "
                f"appears {dup['len'][0]} times"
            )


def check_references(
    items: pl.DataFrame, table: pl.DataFrame, table_name: str, source: str | None = None
) -> None:
    """Every ``item_id`` in ``table`` must exist in ``items``; raise :class:`SchemaError` otherwise."""
    unknown = table.select(ITEM_ID).unique().join(items.select(ITEM_ID), on=ITEM_ID, how="anti")
    if unknown.height:
        raise SchemaError(
            f"table {table_name!r}{_where(source)}: {unknown.height} item_id value(s) not in items, "
            f"e.g. {sorted(unknown[ITEM_ID].to_list())[:5]}"
        )


def empty(schema: TableSchema) -> pl.DataFrame:
    """An empty frame with the schema's columns and dtypes."""
    return pl.DataFrame(schema={c.name: c.dtype for c in schema.columns})
