"""align: preference alignment of a search generator (reward model + list-wise DPO) from an SFT checkpoint.

Derives the interaction levels of the training search requests (:mod:`onesearch.align.levels`), trains the reward
model (LightGBM click and purchase propensities over the cascade ranker's features, plus query-item relevance) and
reports its held-out NDCG and AUCs on the validation requests, builds the preference lists (phase 1: the SFT
model's beams ranked by the reward; phase 2: the logged levels) and trains the list-wise DPO loss against the
frozen SFT model (:mod:`onesearch.align.dpo`). Writes an aligned bundle (same layout as train-generator's) that
``bench-generative``, ``bench-search --model`` and ``score`` accept. ``--model`` names the SFT bundle; without it
one is trained with the train-generator settings first. Prints ``{"model_uri", "sft_model_uri", "reward": {...},
"lists": {...}, "val_sft": {...}, "val_aligned": {...}, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from onesearch.align.dpo import PRESETS as ALIGN_PRESETS
from onesearch.align.dpo import AlignConfig
from onesearch.align.pipeline import align_bundle, output_dir
from onesearch.data.registry import load_dataset
from pipelines import tracking, train_generator

JOB = "align"


@dataclass(frozen=True)
class Config:
    """Settings of the align job."""

    model: str = ""
    """SFT generator bundle (folder or MLflow URI) to align; empty = train one with the trainer settings."""
    trainer: train_generator.Config = field(default_factory=lambda: train_generator.Config(task="search"))
    """Generator training settings (dataset and task apply to the alignment; search only)."""
    align: AlignConfig = field(default_factory=AlignConfig)
    """Alignment settings."""
    output: str = "artifacts/aligned"
    """Folder for <dataset>/<SFT bundle name>-aligned-s<align seed>/ (the aligned bundle)."""


PRESETS = {
    "base": Config(),
    "tiny": Config(
        trainer=replace(train_generator.PRESETS["tiny"], task="search"),
        align=ALIGN_PRESETS["tiny"],
    ),
}


def main(cfg: Config) -> dict:
    if cfg.trainer.task != "search":
        raise ValueError(
            f"align works on search requests: --trainer.task must be search, got {cfg.trainer.task!r}"
        )
    with tracking.job_run(JOB, cfg) as run:
        ds = load_dataset(cfg.trainer.dataset)
        path = (
            tracking.resolve_model(cfg.model)
            if cfg.model
            else train_generator.main_nested(cfg.trainer)["model_uri"]
        )
        out = output_dir(cfg.output, ds.name, path, cfg.align.seed)
        res = align_bundle(cfg.align, path, ds, out, on_eval=tracking.log_step_metrics)
        tracking.log_json(res, "align.json")
        tracking.log_artifacts(out, "generator")
        tracking.log_metrics(
            {k: res[k] for k in ("reward", "lists", "fit", "val_sft", "val_aligned", "align_minutes")}
        )
        res.pop("history")
        return {
            **res,
            "mlflow_model_uri": f"runs:/{run.info.run_id}/generator",
            "mlflow_run_id": run.info.run_id,
        }
