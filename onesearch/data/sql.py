"""DuckDB over the toolkit's tables: SQL where joins and group-bys read better than dataframe code.

``sql("select ... from items join interactions using (item_id)", items=df1, interactions=df2)`` runs the query
with each keyword argument visible as a table (polars frames are scanned in place through Arrow, parquet paths
are read by DuckDB directly) and returns a polars DataFrame.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl


def sql(query: str, **tables: pl.DataFrame | str | os.PathLike) -> pl.DataFrame:
    """Run ``query`` over the named tables (polars frames or parquet files) and return a polars frame."""
    con = duckdb.connect(database=":memory:")
    try:
        for name, table in tables.items():
            if not name.isidentifier():
                raise ValueError(f"table name {name!r} is not a valid SQL identifier")
            if isinstance(table, pl.DataFrame):
                con.register(name, table.to_arrow())
            else:
                path = Path(table)
                if not path.exists():
                    raise FileNotFoundError(f"table {name!r}: parquet file {path} not found")
                con.register(name, con.read_parquet(str(path)))
        return pl.from_arrow(con.sql(query).to_arrow_table())
    finally:
        con.close()
