"""The generator as one MLflow pyfunc model: bundle (checkpoint, SID table, trie, query vocabulary) + scoring.

``mlflow.pyfunc.load_model(uri).predict(df)`` takes the batch-scoring input columns (``request_id``, ``user_id``,
``query``, ``history``) and returns ``request_id, rank, item_id, score, sid, reason``: k rows per scored request,
and one row with rank 0, item_id −1 and the reason for every bad request (``onesearch.scoring``), so nothing is
dropped silently.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl

from onesearch.scoring import ScoreSettings

MODEL_NAME = "generator-pyfunc"
"""Name of the pyfunc model inside its MLflow run."""


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a generator bundle."""

    def load_context(self, context) -> None:
        from onesearch.model.bundle import GeneratorBundle

        self.bundle = GeneratorBundle.load(context.artifacts["bundle"])
        self.settings = ScoreSettings(**json.loads(Path(context.artifacts["settings"]).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from onesearch.scoring import Scorer, check_columns

        df = pl.from_pandas(pd.DataFrame(model_input))
        check_columns(df, "pyfunc input")
        out, err = Scorer(self.bundle, self.settings).score(df)
        bad = err.select(
            "request_id",
            pl.lit(0, dtype=pl.Int16).alias("rank"),
            pl.lit(-1, dtype=pl.Int64).alias("item_id"),
            pl.lit(None, dtype=pl.Float32).alias("score"),
            pl.lit(None, dtype=pl.String).alias("sid"),
            "reason",
        )
        good = out.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
        return pl.concat([good, bad.cast(good.schema)]).to_pandas()


def log_generator_model(
    bundle_dir: str | Path, settings: ScoreSettings | None = None, registered_name: str | None = None
):
    """Log the bundle as a pyfunc model in the active MLflow run (registering it when a name is given)."""
    from mlflow.models import infer_signature

    settings = settings or ScoreSettings()
    bundle_dir = Path(bundle_dir)
    tmp = tempfile.TemporaryDirectory()
    settings_path = Path(tmp.name) / "score_settings.json"
    settings_path.write_text(json.dumps(asdict(settings)))
    example = pd.DataFrame(
        {"request_id": ["r1"], "user_id": ["u1"], "query": ["example query"], "history": [[1, 2, 3]]}
    )
    out_example = pd.DataFrame(
        {
            "request_id": ["r1"],
            "rank": [1],
            "item_id": [1],
            "score": [-0.5],
            "sid": ["1-2-3"],
            "reason": [None],
        }
    )
    with tmp:
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=GeneratorModel(),
            artifacts={"bundle": str(bundle_dir), "settings": str(settings_path)},
            signature=infer_signature(example, out_example),
            pip_requirements=["onesearch-toolkit"],
            registered_model_name=registered_name,
        )
