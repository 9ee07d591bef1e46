import json

import polars as pl
import pytest

from onesearch.data import schema as S
from onesearch.data.amazon import DataFormatError, load_amazon
from onesearch.data.dataset import Dataset
from onesearch.data.registry import load_dataset
from tests.conftest import TOY_INTER, TOY_ITEMS, write_amazon_dir


def test_toy_directory_loads_into_the_schema(toy_amazon):
    ds = load_amazon(toy_amazon)
    assert ds.name == "toy"
    inter = ds.interactions
    assert inter.height == 9
    # user 0 bought [0, 1, 2, 0]: order becomes the timestamp, every event a purchase
    u0 = inter.filter(pl.col("user_id") == 0)
    assert u0["item_id"].to_list() == [0, 1, 2, 0]
    assert u0["timestamp"].to_list() == [0, 1, 2, 3]
    assert set(inter["event"]) == {"purchase"}
    items = ds.items.sort("item_id")
    # a comma followed by a space belongs to the category name
    assert items["category_path"][2].to_list() == [
        "Industrial & Scientific",
        "Tapes, Adhesives & Sealants",
        "Cyanoacrylate Adhesives",
    ]
    assert items["category_path"][3] is None  # empty categories -> null, not [""]
    assert items["brand"][2] is None and items["description"][1] is None  # empty strings -> null
    assert ds.has_text


def test_directory_without_item_file_is_text_free(tmp_path):
    d = write_amazon_dir(tmp_path / "b", {"0": [3, 1, 2], "1": [1, 3, 0]}, name="Beauty")
    (d / "p5_datamaps.json").write_text(json.dumps({"id2item": {"1": "A0", "2": "A1", "4": "A3"}}))
    ds = load_amazon(d)
    assert ds.items["item_id"].to_list() == [0, 1, 2, 3]
    assert not ds.has_text and ds.search_log is None
    asins = [a[0]["value"] if a is not None else None for a in ds.items["attributes"].to_list()]
    assert asins == ["A0", "A1", None, "A3"]  # the P5 maps are 1-based


def test_registry_accepts_a_path_and_a_prepared_dir(toy_amazon, tmp_path):
    ds = load_dataset(str(toy_amazon))
    saved = ds.save(tmp_path / "prepared")
    again = load_dataset(str(saved))
    assert again.interactions.equals(ds.interactions)
    assert again.items.equals(ds.items)
    assert again.search_log.equals(ds.search_log)


def test_save_refuses_to_replace_a_folder_it_did_not_write(toy_amazon, tmp_path):
    ds = load_amazon(toy_amazon)
    with pytest.raises(FileExistsError, match="is not an earlier output"):
        ds.save(toy_amazon)  # the raw source folder must survive a mistyped --output
    assert (toy_amazon / "Toy.inter.json").is_file()


def test_save_leaves_the_old_output_when_writing_fails(toy_amazon, tmp_path, monkeypatch):
    ds = load_amazon(toy_amazon)
    old = ds.save(tmp_path / "out" / "toy")
    before = sorted(p.name for p in old.iterdir())

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        ds.save(tmp_path / "out" / "toy")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["toy"]  # no temporary folder left behind
    assert sorted(p.name for p in old.iterdir()) == before
    monkeypatch.undo()
    assert Dataset.load(old).interactions.equals(ds.interactions)


@pytest.mark.parametrize(
    ("inter", "items", "raw", "message"),
    [
        (None, None, "{not json", r"Toy.inter.json: not valid JSON"),
        ([1, 2], None, None, r"expected a JSON object \{user_id: \[item_id, \.\.\.\]\}, got list"),
        ({}, None, None, r"no users"),
        ({"u1": [0]}, None, None, r"user key 'u1' is not an integer id"),
        ({"0": 5}, None, None, r"user '0': expected a non-empty list of item ids"),
        ({"0": []}, None, None, r"user '0': expected a non-empty list"),
        ({"0": [0, "x"]}, None, None, r"user '0', position 1: item id 'x' is not a non-negative integer"),
        ({"0": [0, -1]}, None, None, r"position 1: item id -1"),
        (
            {"0": [0, 7]},
            {"0": {"title": "t"}},
            None,
            r"1 item id\(s\) have no entry in Toy.item.json, e.g. \[7\]",
        ),
        ({"0": [0]}, {"0": {"brand": "b"}}, None, r"item '0': missing field 'title'"),
        ({"0": [0]}, {"0": {"title": 5}}, None, r"item '0': field 'title' must be a string, got int"),
        ({"0": [0]}, {"0": "oops"}, None, r"item '0': expected an object"),
        ({"0": [0]}, {}, None, r"Toy.item.json: no items"),
    ],
)
def test_malformed_files_get_clear_errors(tmp_path, inter, items, raw, message):
    d = write_amazon_dir(tmp_path / "bad", inter, items, raw_inter=raw)
    with pytest.raises(DataFormatError, match=message):
        load_amazon(d)


def test_missing_directory_and_missing_inter_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_amazon(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match=r"no <Name>.inter.json file"):
        load_amazon(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="empty string"):
        load_dataset("  ")


def test_two_inter_files_need_a_name(tmp_path):
    d = write_amazon_dir(tmp_path / "two", TOY_INTER, TOY_ITEMS, name="A")
    write_amazon_dir(d, TOY_INTER, name="B")
    with pytest.raises(DataFormatError, match=r"several \*.inter.json files \['A', 'B'\]"):
        load_amazon(d)
    assert load_amazon(d, name="B").name == "b"


def test_empty_tables_are_rejected():
    items = pl.DataFrame(
        {"item_id": [0], "title": ["t"], "description": [None], "brand": [None], "category_path": [None]},
        schema_overrides={"category_path": pl.List(pl.String)},
    )
    with pytest.raises(S.SchemaError, match="table 'interactions' is empty"):
        Dataset("x", items, S.empty(S.INTERACTIONS))


def test_vendored_slice_loads_without_shared_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ONESEARCH_SHARED_DATA", str(tmp_path))  # an empty folder: the named sets are absent
    ds = load_dataset("scientific-mini")
    st = ds.stats()
    assert (st["users"], st["items"], st["interactions"]) == (300, 1403, 2042)
    assert (ds.index_dir / "rqvae_native" / "Scientific.index.json").is_file()
    with pytest.raises(FileNotFoundError, match="amazon_scientific: no such directory"):
        load_dataset("scientific")


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "users", "items", "interactions"),
    [("scientific", 8317, 4344, 58492), ("beauty", 22363, 12101, 198502)],
)
def test_real_sets_match_the_published_counts(shared_data, name, users, items, interactions):
    ds = load_dataset(name)
    st = ds.stats()
    assert (st["users"], st["items"], st["interactions"]) == (users, items, interactions)
    variants = sorted(p.name for p in ds.index_dir.iterdir())
    assert "rqvae_native" in variants
    if name == "scientific":
        assert ds.has_text and ds.search_log is not None
        assert ds.items["title"].null_count() == 0
    else:
        assert not ds.has_text and ds.search_log is None
        assert ds.items["attributes"].null_count() == 0  # every Beauty item has its ASIN
