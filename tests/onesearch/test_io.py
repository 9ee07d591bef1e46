"""Whole-or-nothing writes, and cleaning up after a writer that was killed."""

import os

import pytest

from onesearch.io import atomic_write, remove_temporaries


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "part-00001.parquet"
    path.write_text("old")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["part-00001.parquet"]
    atomic_write(path, lambda tmp: open(tmp, "w").write("new"))
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["part-00001.parquet"]


def test_remove_temporaries_deletes_only_what_a_killed_writer_left(tmp_path):
    for name in (
        ".part-00001.parquet.x1y2",
        ".manifest.json.ab12",
        "part-00000.parquet",
        ".keep",
        "notes.txt",
    ):
        (tmp_path / name).write_text("-")
    assert remove_temporaries(tmp_path, "part-*") == 1
    assert remove_temporaries(tmp_path) == 1  # the manifest's; a dotfile without a temporary suffix stays
    assert sorted(os.listdir(tmp_path)) == [".keep", "notes.txt", "part-00000.parquet"]
