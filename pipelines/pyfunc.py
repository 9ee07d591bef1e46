"""The generator as one MLflow pyfunc model: bundle (checkpoint, SID table, trie, query vocabulary) + scoring.

``mlflow.pyfunc.load_model(uri).predict(df)`` takes the batch-scoring input columns (``request_id``, ``user_id``,
``query``, ``history``) and returns ``request_id, rank, item_id, score, sid, reason``: k rows per scored request,
and one row with rank 0, item_id −1 and the reason for every bad request (``onesearch.scoring``), so nothing is
dropped silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl

from onesearch.data.schema import ITEM_ID, REQUEST_ID
from onesearch.scoring import (
    INPUT_COLUMNS,
    OUTPUT_COLUMNS,
    RANK,
    REASON,
    SCORE,
    SID,
    Scorer,
    ScoreSettings,
    check_columns,
    output_schema,
)

MODEL_NAME = "generator-pyfunc"
"""Name of the pyfunc model inside its MLflow run."""


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a generator bundle."""

    def load_context(self, context) -> None:
        from onesearch.model.bundle import GeneratorBundle

        self.bundle = GeneratorBundle.load(context.artifacts["bundle"])
        self.settings = ScoreSettings(**json.loads(Path(context.artifacts["settings"]).read_text()))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        df = pl.from_pandas(pd.DataFrame(model_input))
        check_columns(df, "pyfunc input")
        out, err = Scorer(self.bundle, self.settings).score(df)
        # a bad row comes back as one row: rank 0, item -1, no score or SID, and its reason
        blank = {RANK: 0, ITEM_ID: -1, SCORE: None, SID: None}
        schema = output_schema(err.schema[REQUEST_ID])
        bad = err.select(
            REQUEST_ID, *(pl.lit(blank[c], dtype=schema[c]).alias(c) for c in OUTPUT_COLUMNS[1:]), REASON
        )
        good = out.with_columns(pl.lit(None, dtype=pl.String).alias(REASON))
        return pl.concat([good, bad.cast(good.schema)]).to_pandas()


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Raise the level of MLflow's loggers to ERROR inside the block: logging this model (a Python object, kept
    by cloudpickle) otherwise warns of the pickle on every run."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


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
        dict(zip(INPUT_COLUMNS, (["r1"], ["u1"], ["example query"], [[1, 2, 3]]), strict=True))
    )
    out_example = pd.DataFrame(
        dict(zip((*OUTPUT_COLUMNS, REASON), (["r1"], [1], [1], [-0.5], ["1-2-3"], [None]), strict=True))
    )
    with (
        warnings.catch_warnings()
    ):  # infer_signature's hint on integer columns: ids and ranks are never missing
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, out_example)
    with tmp, _quiet("mlflow.pyfunc"):
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=GeneratorModel(),
            artifacts={"bundle": str(bundle_dir), "settings": str(settings_path)},
            signature=signature,
            input_example=example,
            pip_requirements=["onesearch-toolkit"],
            registered_model_name=registered_name,
        )
