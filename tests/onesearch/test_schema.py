import polars as pl
import pytest

from onesearch.data import schema as S


def _items(**over):
    base = {
        "item_id": [0, 1],
        "title": ["a", "b"],
        "description": [None, "d"],
        "brand": ["x", None],
        "category_path": [["A", "B"], None],
    }
    base.update(over)
    return pl.DataFrame(base)


def test_conform_orders_columns_widens_ints_and_adds_optional_columns():
    df = (
        _items()
        .with_columns(pl.col("item_id").cast(pl.Int32))
        .select(["title", "item_id", "description", "brand", "category_path"])
    )
    out = S.conform(df, S.ITEMS)
    assert out.columns == S.ITEMS.names
    assert out.schema["item_id"] == pl.Int64
    assert out["price"].null_count() == 2 and out.schema["attributes"] == S.ATTRIBUTE_DTYPE


def test_missing_required_column_is_named():
    with pytest.raises(
        S.SchemaError, match=r"items.*\(from catalog.json\).*missing required column.*'brand'"
    ):
        S.conform(_items().drop("brand"), S.ITEMS, "catalog.json")


def test_wrong_type_names_column_and_expected_type():
    df = _items(item_id=["0", "1"])
    with pytest.raises(S.SchemaError, match=r"column 'item_id' has type String, expected Int64"):
        S.conform(df, S.ITEMS)


def test_null_in_non_nullable_column_reports_first_row():
    df = pl.DataFrame(
        {"user_id": [1, 2, None], "item_id": [0, 0, 1], "timestamp": [0, 1, 2], "event": ["click"] * 3}
    )
    with pytest.raises(S.SchemaError, match=r"'user_id' has 1 null value\(s\), first at row 2"):
        S.conform(df, S.INTERACTIONS)


def test_unknown_event_value_is_rejected():
    df = pl.DataFrame({"user_id": [1], "item_id": [0], "timestamp": [0], "event": ["purchased"]})
    with pytest.raises(S.SchemaError, match=r"'event' has value 'purchased'.*expected one of"):
        S.conform(df, S.INTERACTIONS)


def test_duplicate_key_is_rejected():
    with pytest.raises(S.SchemaError, match=r"key \['item_id'\] is not unique, e.g. \(1,\) appears 2 times"):
        S.conform(_items(item_id=[1, 1]), S.ITEMS)


def test_empty_query_is_rejected():
    df = pl.DataFrame(
        {
            "request_id": [7],
            "user_id": [1],
            "position": [0],
            "timestamp": [0],
            "query": ["  "],
            "item_id": [0],
            "event": ["purchase"],
        }
    )
    with pytest.raises(S.SchemaError, match=r"empty query string\(s\), first request_id 7"):
        S.conform(df, S.SEARCH_LOG)


def test_unknown_item_reference_is_rejected():
    inter = S.conform(
        pl.DataFrame({"user_id": [0], "item_id": [9], "timestamp": [0], "event": ["purchase"]}),
        S.INTERACTIONS,
    )
    with pytest.raises(S.SchemaError, match=r"1 item_id value\(s\) not in items, e.g. \[9\]"):
        S.check_references(S.conform(_items(), S.ITEMS), inter, "interactions")


def test_empty_table_has_schema_and_validates():
    e = S.empty(S.INTERACTIONS)
    assert e.height == 0 and e.columns == S.INTERACTIONS.names
    S.validate(e, S.INTERACTIONS)


def test_not_a_dataframe():
    with pytest.raises(S.SchemaError, match="expected a polars DataFrame, got dict"):
        S.conform({"item_id": [1]}, S.ITEMS)
