"""Resolve a ``--dataset`` argument to a :class:`Dataset`.

Accepted values:

``scientific`` / ``beauty``   the real Amazon sets in the shared data folder (see :func:`shared_data_dir`).
``scientific-mini``           a small slice of Scientific vendored in this package (works without the shared
                              folder; provenance in ``onesearch/data/vendored/scientific_mini/PROVENANCE.md``).
``synthetic`` / ``synthetic-<preset>``   the seeded synthetic world (presets: tiny, small, medium, large).
a path                        an Amazon-format directory (``<Name>.inter.json`` ...) or a directory written by
                              :meth:`Dataset.save` (it holds ``dataset.json``).
"""

from __future__ import annotations

import os
from pathlib import Path

from onesearch.data.amazon import DataFormatError, load_amazon
from onesearch.data.dataset import MANIFEST_FILE, Dataset
from onesearch.data.search_set import SearchSetConfig

SHARED_DATA_ENV = "ONESEARCH_SHARED_DATA"
"""Environment variable that points at the shared data folder (overrides the search below)."""

NAMED = {"scientific": "amazon_scientific", "beauty": "amazon_beauty"}
VENDORED = {"scientific-mini": Path(__file__).parent / "vendored" / "scientific_mini"}


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$ONESEARCH_SHARED_DATA``, else ``../shared/data`` beside the working directory
    or beside the project checkout this package was imported from; None when none exists."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise FileNotFoundError(f"${SHARED_DATA_ENV}={env!r} is not a directory")
        return p
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        p = root.parent / "shared" / "data"
        if p.is_dir():
            return p
    return None


def dataset_names() -> list[str]:
    return [*NAMED, *VENDORED, "synthetic", "synthetic-<preset>"]


def load_dataset(spec: str, *, search: SearchSetConfig | None = None, seed: int | None = None) -> Dataset:
    """Load the dataset named or located by ``spec`` (see the module docstring)."""
    if not spec or not spec.strip():
        raise ValueError(f"dataset must be one of {dataset_names()} or a path; got an empty string")
    spec = spec.strip()
    if spec in NAMED:
        root = shared_data_dir()
        if root is None:
            raise FileNotFoundError(
                f"dataset {spec!r} lives in the shared data folder, which was not found: set ${SHARED_DATA_ENV} "
                f"or run from a checkout beside ../shared/data (the vendored 'scientific-mini' slice works anywhere)"
            )
        return load_amazon(root / NAMED[spec], dataset_name=spec, search=search)
    if spec in VENDORED:
        return load_amazon(VENDORED[spec], dataset_name=spec, search=search)
    if spec == "synthetic" or spec.startswith("synthetic-"):
        from onesearch.data.synthetic import generate_world

        preset = spec.partition("-")[2] or "tiny"
        return generate_world(preset, seed=seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return Dataset.load(path)
        return load_amazon(path, search=search)
    if path.exists():
        raise DataFormatError(f"dataset path {path} is a file; expected a directory in the Amazon layout")
    raise FileNotFoundError(
        f"dataset {spec!r} is neither a known name ({dataset_names()}) nor an existing directory"
    )
