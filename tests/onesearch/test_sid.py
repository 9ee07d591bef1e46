import json

import numpy as np
import pytest

from onesearch.tokenizer import sid as SID


def test_disambiguation_ranks_within_groups_by_order_then_position():
    sem = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    assert SID.disambiguate(sem).tolist() == [0, 0, 1, 2, 0]
    # item 3 is closest to its centre, then item 0, then item 2
    assert SID.disambiguate(sem, order=np.array([0.5, 9.0, 0.7, 0.1, 0.0])).tolist() == [1, 0, 2, 0, 0]


def test_make_table_is_unique_and_reports_collisions():
    sem = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    t = SID.make_table(np.array([10, 11, 12, 13, 14]), sem, (2, 3), "toy")
    assert t.is_unique() and t.codebook_sizes == (2, 3, 3)
    assert SID.collision_rate(sem) == pytest.approx(3 / 5)
    assert SID.utilization(t.codes, t.codebook_sizes) == [
        1.0,
        1.0,
        1.0,
    ]  # codes {0,1}/2, {0,1,2}/3, {0,1,2}/3
    assert t.lookup([13, 10]).tolist() == [[1, 2, 2], [1, 2, 0]]
    with pytest.raises(KeyError, match=r"not in the SID table: \[99\]"):
        t.lookup([10, 99])


def test_extend_never_changes_existing_ids_and_fills_free_codes():
    t = SID.make_table(np.array([0, 1, 2]), np.array([[0, 0], [0, 0], [1, 1]]), (2, 2), "toy")
    grown = SID.extend_table(t, np.array([5, 6, 7]), np.array([[0, 0], [1, 0], [1, 1]]))
    assert np.array_equal(grown.lookup([0, 1, 2]), t.codes)
    assert grown.lookup([5, 6, 7]).tolist() == [[0, 0, 2], [1, 0, 0], [1, 1, 1]]
    assert grown.is_unique() and grown.codebook_sizes == (2, 2, 3)
    with pytest.raises(ValueError, match=r"already in the table: \[1\]"):
        SID.extend_table(t, np.array([1]), np.array([[0, 0]]))
    assert SID.extend_table(t, np.zeros(0, dtype=np.int64), np.zeros((0, 2))).n_items == 3  # nothing new
    with pytest.raises(ValueError, match="new codes have 3 levels, the table has 2"):
        SID.extend_table(t, np.array([9]), np.array([[0, 0, 0]]))


def test_save_load_round_trip_and_hash(tmp_path):
    t = SID.make_table(np.array([3, 1, 2]), np.array([[0, 1], [0, 1], [1, 0]]), (2, 2), "toy")
    back = SID.SIDTable.load(t.save(tmp_path / "sid"))
    assert np.array_equal(back.codes, t.codes) and back.content_hash() == t.content_hash()
    # the hash does not depend on row order, but does on any code
    perm = SID.SIDTable(t.item_ids[::-1], t.codes[::-1], t.codebook_sizes, "other")
    assert perm.content_hash() == t.content_hash()
    changed = SID.SIDTable(
        t.item_ids, t.codes + np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0]]), (2, 2, 2), "toy"
    )
    assert changed.content_hash() != t.content_hash()
    meta = json.loads((tmp_path / "sid" / "sid.json").read_text())
    meta["content_hash"] = "0" * 64
    (tmp_path / "sid" / "sid.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="content hash"):
        SID.SIDTable.load(tmp_path / "sid")
    with pytest.raises(FileNotFoundError, match="sid.parquet is missing"):
        SID.SIDTable.load(tmp_path)


def test_a_corrupt_table_names_the_file_it_could_not_read(tmp_path):
    t = SID.make_table(np.array([3, 1, 2]), np.array([[0, 1], [0, 1], [1, 0]]), (2, 2), "toy")
    d = t.save(tmp_path / "sid")
    data = (d / "sid.parquet").read_bytes()
    (d / "sid.parquet").write_bytes(data[: len(data) // 2])  # a torn copy
    with pytest.raises(ValueError, match=r"sid[/\\]sid\.parquet: not a readable parquet file"):
        SID.SIDTable.load(d)
    t.save(d)
    (d / "sid.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"sid\.json: not a SID table description"):
        SID.SIDTable.load(d)


def test_table_validation():
    with pytest.raises(ValueError, match="not unique"):
        SID.SIDTable(np.array([1, 1]), np.zeros((2, 2)), (1, 1), "x")
    with pytest.raises(ValueError, match="not below its level's codebook size"):
        SID.SIDTable(np.array([1, 2]), np.array([[0, 5], [0, 0]]), (1, 2), "x")


def test_category_labels_and_purity_by_hand():
    paths = [["A", "B", "C"]] * 3 + [["A", "B", "D"]] + [["A", "E"]] * 2 + [None]
    # with min_items=2: A>B>C has 3 items, A>B>D only 1 (falls back to A>B, 4 items), A>E has 2
    labels = SID.category_labels(paths, min_items=2)
    assert labels == ["A > B > C"] * 3 + ["A > B"] + ["A > E"] * 2 + [None]
    # cluster 0 = three C + one E (majority C: 3 right), cluster 1 = B-only + E (1 right), unlabelled ignored
    clusters = np.array([0, 0, 0, 1, 0, 1, 1])
    assert SID.purity(clusters, labels) == pytest.approx((3 + 1) / 6)
    assert SID.purity(np.array([0]), [None]) is None


def test_reference_index_parsing(tmp_path):
    p = tmp_path / "X.index.json"
    p.write_text(json.dumps({"0": ["<a_1>", "<b_2>"], "1": ["<a_1>", "<b_7>"]}))
    ids, codes = SID.load_reference_index(p)
    assert ids.tolist() == [0, 1] and codes.tolist() == [[1, 2], [1, 7]]
    with pytest.raises(ValueError, match=r"1 catalogue item\(s\) have no entry, e.g. \[5\]"):
        SID.load_reference_index(p, item_ids=np.array([0, 1, 5]))
    p.write_text(json.dumps({"0": ["<a_1>", "<c_2>"]}))
    with pytest.raises(ValueError, match=r"level 1: code '<c_2>' is not of the form <b_N>"):
        SID.load_reference_index(p)
    p.write_text(json.dumps({"0": ["<a_1>"], "1": ["<a_1>", "<b_2>"]}))
    with pytest.raises(ValueError, match="has 2 codes, the first item has 1"):
        SID.load_reference_index(p)


def test_rows_and_contains_find_ids_by_binary_search():
    ids = np.array([40, 10, 30, 20])  # not sorted: the table keeps its own order
    t = SID.make_table(ids, np.array([[0], [1], [0], [1]]), (2,), "toy")
    np.testing.assert_array_equal(t.rows([30, 40, 10]), [2, 0, 1])
    np.testing.assert_array_equal(t.contains([20, 25, 50, 5, 40]), [True, False, False, False, True])
    assert t.contains([]).shape == (0,) and t.rows([]).shape == (0,)
    with pytest.raises(KeyError, match=r"not in the SID table: \[25\]"):
        t.rows([10, 25])
