import polars as pl
import pytest

from onesearch.data.sql import sql


def test_sql_over_frames_and_parquet_files(tmp_path):
    items = pl.DataFrame({"item_id": [1, 2, 3], "brand": ["a", "b", "a"]})
    inter = pl.DataFrame({"user_id": [0, 0, 1, 1, 1], "item_id": [1, 2, 1, 3, 3]})
    inter.write_parquet(tmp_path / "inter.parquet")
    q = "select brand, count(*)::bigint as n from inter join items using (item_id) group by brand order by brand"
    expected = [("a", 4), ("b", 1)]  # brand a: item 1 twice + item 3 twice; brand b: item 2 once
    assert sql(q, items=items, inter=inter).rows() == expected
    assert sql(q, items=items, inter=tmp_path / "inter.parquet").rows() == expected


def test_sql_bad_table_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"table 'inter': parquet file .*nope.parquet not found"):
        sql("select 1", inter=tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        sql("select 1", **{"bad name": pl.DataFrame({"a": [1]})})
