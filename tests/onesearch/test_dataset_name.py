"""A dataset's name becomes a folder under every job's --output: it must be one plain path component."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from onesearch.data import schema as S
from onesearch.data.dataset import Dataset, check_name
from onesearch.data.registry import load_dataset
from pipelines import prepare_data


@pytest.mark.parametrize("bad", ["../../ESCAPED", "..", ".", "a/b", "a\\b", "", "  ", "x\ny"])
def test_names_that_are_not_one_path_component_are_refused(bad):
    with pytest.raises(ValueError, match="not one plain path component"):
        check_name(bad)
    ds = load_dataset("synthetic-tiny")
    with pytest.raises(ValueError, match="not one plain path component"):
        Dataset(bad, ds.items, ds.interactions, ds.search_log)


def test_a_prepared_dataset_with_a_traversal_name_writes_nothing_outside(tmp_path):
    src = load_dataset("synthetic-tiny").save(tmp_path / "data" / "tiny")
    manifest = json.loads((src / "dataset.json").read_text())
    manifest["name"] = "../../ESCAPED"
    (src / "dataset.json").write_text(json.dumps(manifest))
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(S.SchemaError, match=r"dataset\.json.*not one plain path component"):
        prepare_data.main(replace(prepare_data.PRESETS["tiny"], dataset=str(src), output=str(out)))
    assert not (tmp_path / "a" / "ESCAPED").exists() and not list(tmp_path.rglob("ESCAPED"))
