"""tokenize: give every item a unique semantic ID (khqe, rqkmeans, rqvae or a reference index) and measure it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from onesearch.data.registry import load_dataset
from onesearch.io import atomic_dir
from onesearch.tokenizer.keywords import KeywordConfig
from onesearch.tokenizer.pipeline import EmbeddingConfig, catalogue_sizes, tokenize
from pipelines import tracking

JOB = "tokenize"
FITTED_ON_FILE = "fitted_on.json"
"""What a tokenize output was fitted on: dataset name, its fingerprint, and the settings that shape the table."""


@dataclass(frozen=True)
class Config:
    """Settings of the tokenize job."""

    dataset: str = "scientific"
    """Dataset name or path (see prepare-data)."""
    method: str = "khqe"
    """khqe, rqkmeans, rqvae, or index:<variant> (a reference index shipped with the dataset)."""
    embedding: str = "auto"
    """Embedding source: text, cf, fused, or auto (fused with text, cf without)."""
    cf_weight: float = 0.2
    """Share of the behaviour embedding in a fused embedding."""
    keyword_weight: float = 0.5
    """khqe: w in normalize((1-w)·item + w·keywords)."""
    codebook_sizes: tuple[int, ...] | None = None
    """Codes per residual level (None = the method's default: khqe 256 256, rqkmeans / rqvae 256 256 256; 64 64 for
    a catalogue under 2,000 items)."""
    pq_subspaces: int | None = None
    """khqe / rqkmeans: OPQ sub-vectors after the residual levels (None = method default: khqe 2, rqkmeans 0)."""
    pq_codes: int | None = None
    """Codes per OPQ sub-vector (None = 256; 64 under 2,000 items)."""
    balanced: str | None = None
    """Balanced assignment: none, last, residual (None = method default: khqe residual, rqkmeans none)."""
    spread_collisions: bool | None = None
    """Give items that share all their codes the nearest free code of the last level (None = method default: khqe
    on, rqkmeans off)."""
    incremental_share: float = 0.0
    """Also fit on all but this share of items and encode the rest as new items; report the change (0 = off)."""
    seed: int = 0
    """Seed of every random choice in fitting."""
    output: str = "artifacts/tokenizers"
    """Folder for <dataset>/<method>/ with sid.parquet, sid.json, quantizer.* and metrics.json."""


PRESETS = {
    "default": Config(),
    "tiny": Config(dataset="synthetic-tiny", codebook_sizes=(16, 16), pq_codes=16),
}


def table_settings(cfg: Config, n_items: int) -> dict:
    """The settings that shape the SID table of a catalogue of ``n_items`` (not where it is written, nor the
    incremental report), with the codebook sizes the catalogue's size gives where the config leaves them None."""
    sizes, pq = catalogue_sizes(cfg.method, n_items, cfg.codebook_sizes, cfg.pq_codes)
    d = asdict(replace(cfg, codebook_sizes=sizes, pq_codes=pq))
    for k in ("output", "incremental_share", "dataset"):
        d.pop(k)
    return json.loads(json.dumps(d))  # tuples as lists, as the file holds them


def fitted_on(ds, cfg: Config) -> dict:
    """The record written beside a SID table (``fitted_on.json``)."""
    return {
        "dataset": ds.name,
        "data_fingerprint": ds.fingerprint(),
        "settings": table_settings(cfg, ds.items.height),
    }


def main(cfg: Config) -> dict:
    """Tokenize the dataset, save the SID table and quantizer, return the quality metrics."""
    with tracking.job_run(JOB, cfg) as run:
        ds = load_dataset(cfg.dataset)
        res = tokenize(
            ds,
            cfg.method,
            EmbeddingConfig(source=cfg.embedding, cf_weight=cfg.cf_weight),
            KeywordConfig(fuse_weight=cfg.keyword_weight),
            seed=cfg.seed,
            codebook_sizes=cfg.codebook_sizes,
            pq_subspaces=cfg.pq_subspaces,
            pq_codes=cfg.pq_codes,
            balanced=cfg.balanced,
            incremental_share=cfg.incremental_share,
            spread_collisions=cfg.spread_collisions,
        )
        table = res.table
        out = Path(cfg.output) / ds.name / cfg.method.replace(":", "_")
        result = {
            "dataset": ds.name,
            "method": cfg.method,
            "items": table.n_items,
            "levels": table.levels,
            "codebook_sizes": list(table.codebook_sizes),
            **res.metrics,
            "sid_hash": table.content_hash(),
            "output": str(out),
            "mlflow_run_id": run.info.run_id,
        }
        with atomic_dir(out, "sid.json") as tmp:
            table.save(tmp)
            if res.quantizer is not None:
                res.quantizer.save(tmp)
            tracking.write_json(result, tmp / "metrics.json")
            tracking.write_json(fitted_on(ds, cfg), tmp / FITTED_ON_FILE)
        tracking.log_metrics({k: v for k, v in result.items() if k not in ("codebook_sizes",)})
        tracking.log_artifacts(out)
        return result
