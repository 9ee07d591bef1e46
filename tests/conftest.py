"""Shared fixtures: an isolated MLflow store for the whole session, the shared data folder, tiny Amazon dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path

# OpenMP threads that spin while waiting stall small numpy / LightGBM / torch jobs when another process holds the
# cores (30 LightGBM rounds: 0.27 s passive, 31 s spinning, on a shared 2-core machine); set before any of them load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from onesearch.data.registry import shared_data_dir


@pytest.fixture(autouse=True, scope="session")
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """Point MLflow and the embedding cache at a temporary folder so no test writes into the checkout."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("mlflow")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("ONESEARCH_CACHE", str(root / "embedding-cache"))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, or skip when it is absent (a user's machine has none)."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("../shared/data is not present (set ONESEARCH_SHARED_DATA to run the real-data tests)")
    return root


def write_amazon_dir(
    root: Path,
    inter: object,
    items: object | None = None,
    name: str = "Toy",
    raw_inter: str | None = None,
) -> Path:
    """Write an Amazon-layout directory (``<name>.inter.json`` and optionally ``<name>.item.json``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.inter.json").write_text(raw_inter if raw_inter is not None else json.dumps(inter))
    if items is not None:
        (root / f"{name}.item.json").write_text(json.dumps(items))
    return root


TOY_ITEMS = {
    "0": {
        "title": "Steel Wood Screws 100 pack",
        "description": "Zinc plated.",
        "brand": "Acme",
        "categories": "Industrial & Scientific,Fasteners,Screws,Wood Screws",
    },
    "1": {
        "title": "Stanley Staples 1/2 inch",
        "description": "",
        "brand": "Stanley",
        "categories": "Industrial & Scientific,Fasteners,Collated Fasteners,Staples",
    },
    "2": {
        "title": "Super Glue Gel",
        "description": "Fast.",
        "brand": "",
        "categories": "Industrial & Scientific,Tapes, Adhesives & Sealants,Cyanoacrylate Adhesives",
    },
    "3": {"title": "Mystery Box", "description": "No category.", "brand": "Nobody", "categories": ""},
}
"""Four items: two share the Fasteners branch, one has a comma inside a category name, one has no category."""

TOY_INTER = {"0": [0, 1, 2, 0], "1": [2, 3, 1], "2": [1, 0]}
"""Three users: 4, 3 and 2 purchases (the last one too short for leave-one-out)."""


@pytest.fixture
def toy_amazon(tmp_path: Path) -> Path:
    return write_amazon_dir(tmp_path / "toy", TOY_INTER, TOY_ITEMS)
