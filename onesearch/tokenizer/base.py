"""The quantizer protocol every tokenizer follows, and the checks on what goes into it.

A quantizer is fitted once on an item-embedding matrix and then maps any embedding to *semantic codes*
with its codebooks frozen, so new (cold-start) items get IDs without refitting. It is saved as
``quantizer.json`` (config + codebook sizes) and ``quantizer.safetensors`` (codebooks / weights).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np

from onesearch.io import atomic_write, sha256_file

QUANTIZER_CONFIG = "quantizer.json"
"""Artifact name of a quantizer's JSON config."""
QUANTIZER_WEIGHTS = "quantizer.safetensors"
"""Artifact name of a quantizer's codebooks / weights."""


@runtime_checkable
class Quantizer(Protocol):
    """Embeddings in, semantic codes out."""

    method: str
    """Name used in outputs (khqe, rqkmeans, rqvae)."""
    train_codes: np.ndarray | None
    """After ``fit``: the fitted items' codes (n, levels) as assigned while fitting (balanced levels included)."""
    train_residual: np.ndarray | None
    """After ``fit``: each fitted item's final residual norm (n,), which orders items sharing all codes."""

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per semantic level."""
        ...

    def fit(self, emb: np.ndarray, seed: int = 0) -> Self:
        """Learn the codebooks from ``emb`` (n, d) float; deterministic for a given seed."""
        ...

    def encode(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, levels) int64 and each item's final residual norm (n,) float (for disambiguation order)."""
        ...

    def save(self, directory: str) -> None: ...

    @classmethod
    def load(cls, directory: str) -> Self: ...


def check_embeddings(
    emb: object, n_items: int | None = None, dim: int | None = None, what: str = "embeddings"
) -> np.ndarray:
    """Return ``emb`` as a float32 (n, d) array or raise ValueError saying what is wrong and where."""
    arr = np.asarray(emb)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (items, dim) matrix, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{what}: expected numbers, got dtype {arr.dtype}")
    if n_items is not None and arr.shape[0] != n_items:
        raise ValueError(f"{what}: {arr.shape[0]} rows for {n_items} items")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what}: dimension {arr.shape[1]}, the quantizer was fitted on dimension {dim}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{what}: {rows.size} row(s) contain NaN or inf, first at row {rows[0]}")
    return arr.astype(np.float32, copy=False)


def save_quantizer_files(directory: str | Path, write_weights: Callable[[str], None], meta: dict) -> None:
    """Write the weights, then ``quantizer.json`` with the weights' sha256, each atomically.

    A crash between the two leaves a JSON whose hash does not match the weights, which
    :func:`read_quantizer_meta` refuses, instead of a silently mismatched pair."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / QUANTIZER_WEIGHTS, write_weights)
    meta = {**meta, "weights_sha256": sha256_file(d / QUANTIZER_WEIGHTS)}
    atomic_write(d / QUANTIZER_CONFIG, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))


def read_quantizer_meta(directory: str | Path) -> dict:
    """``quantizer.json`` of a saved quantizer, after checking both files exist and belong together."""
    d = Path(directory)
    for f in (QUANTIZER_CONFIG, QUANTIZER_WEIGHTS):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d}: {f} is missing (not a saved quantizer directory)")
    meta = json.loads((d / QUANTIZER_CONFIG).read_text())
    want = meta.get("weights_sha256")
    if want and sha256_file(d / QUANTIZER_WEIGHTS) != want:
        raise ValueError(
            f"{d}: {QUANTIZER_WEIGHTS} does not match {QUANTIZER_CONFIG} (written by different saves)"
        )
    return meta
