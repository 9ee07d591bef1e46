"""The notebooks are committed without outputs, write nothing into the checkout, and are documented and linked.

Running them is nbmake's job: ``--nbmake`` in pytest's addopts and ``notebooks`` in its testpaths make every
``notebooks/*.ipynb`` one test of the suite (a cell that errors fails it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; clear them before committing "
        "with `make notebooks-clear`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_writes_only_into_a_temporary_folder(path):
    first = "".join(json.loads(path.read_text())["cells"][1]["source"])
    assert "tempfile.TemporaryDirectory" in first
    assert 'os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{WORK}/mlflow.db"' in first
    assert (
        "ONESEARCH_CACHE" in first
    )  # the embedding cache defaults to artifacts/ under the working directory


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_described_and_linked(path):
    assert f"notebooks/{path.name}" in (ROOT / "README.md").read_text()
    assert f"`{path.name}`" in (ROOT / "docs" / "notebooks.md").read_text()


def test_readme_figures_exist_and_are_documented():
    from pipelines.figures import FIGURES

    readme = (ROOT / "README.md").read_text()
    doc = (ROOT / "docs" / "notebooks.md").read_text()
    for name in FIGURES:
        assert (ROOT / "docs" / "figures" / name).is_file(), name
        assert f"docs/figures/{name}" in readme and f"`{name}`" in doc, name
    assert "make figures" in readme
