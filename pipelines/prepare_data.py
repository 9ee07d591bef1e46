"""prepare-data: load a named dataset (or a path), validate it, write its parquet tables and log its stats."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onesearch.data import schema as S
from onesearch.data.registry import load_dataset
from onesearch.data.search_set import SearchSetConfig
from onesearch.data.splits import leave_one_out, split_counts
from onesearch.data.sql import sql
from pipelines import tracking

JOB = "prepare-data"


@dataclass(frozen=True)
class Config:
    """Settings of the prepare-data job."""

    dataset: str = "scientific"
    """Dataset: scientific, beauty, scientific-mini, synthetic-<tiny|small|medium|large>, or a directory."""
    output: str = "artifacts/data"
    """Folder under which the tables are written, as <output>/<dataset name>/*.parquet."""
    title_words: int = 0
    """Title keywords appended to each category query of the search set (0 = pure HEM category query)."""
    search_seed: int = 0
    """Seed for choosing those title keywords."""
    seed: int | None = None
    """Seed of the synthetic world (None = the preset's own seed); ignored for the Amazon sets."""


PRESETS = {"default": Config(), "tiny": Config(dataset="synthetic-tiny")}


def sequence_stats(interactions) -> dict:
    """Per-user purchase-sequence lengths (min, median, p90, max), computed in DuckDB."""
    row = sql(
        """
        with seq as (select user_id, count(*) as n from interactions where event = 'purchase' group by user_id)
        select min(n) as min, median(n) as median, quantile_cont(n, 0.9) as p90, max(n) as max from seq
        """,
        interactions=interactions,
    ).row(0, named=True)
    return {k: (float(v) if v is not None else None) for k, v in row.items()}


def main(cfg: Config) -> dict:
    """Load, validate and save the dataset; return its stats (users, items, interactions, splits...)."""
    with tracking.job_run(JOB, cfg) as run:
        ds = load_dataset(
            cfg.dataset,
            search=SearchSetConfig(title_words=cfg.title_words, seed=cfg.search_seed),
            seed=cfg.seed,
        )
        out_dir = ds.save(Path(cfg.output) / ds.name)
        purchases = ds.interactions.filter(ds.interactions[S.EVENT] == "purchase")
        result = {
            **ds.stats(),
            "splits": split_counts(leave_one_out(purchases)),
            "sequence_length": sequence_stats(ds.interactions),
            "search_stats": ds.meta.get("search_stats"),
            "output": str(out_dir),
            "mlflow_run_id": run.info.run_id,
        }
        if ds.search_log is not None:
            result["search_splits"] = split_counts(
                leave_one_out(ds.search_log, order_by=(S.POSITION, S.TIMESTAMP))
            )
        tracking.log_metrics(
            {k: result[k] for k in ("users", "items", "interactions", "splits", "sequence_length")}
        )
        tracking.log_json(result, "stats.json")
        return result
