"""Every job is one MLflow run.

The tracking store defaults to an embedded SQLite file, ``mlflow.db`` in the working directory, with artifacts
in ``mlartifacts/`` beside it; ``MLFLOW_TRACKING_URI`` overrides it (any MLflow store or server). Each job logs to
the experiment named after the job (``prepare-data``, ``quickstart``, ...), with

- params: the job's config, flattened (``search.title_words``),
- metrics: the job's figures,
- artifacts: under the fixed names documented in ``docs/architecture.md``.

A job started while another run is active (the quickstart runs other jobs) becomes its nested child.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import flatten

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


# MLflow's "Downloading artifacts" bars on every model load clutter the jobs' logs (set it to true to see them)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri() -> str:
    """The tracking URI in force: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _artifact_location(uri: str, experiment: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / DEFAULT_ARTIFACTS / experiment).resolve().as_uri()
    return None  # let the server / store decide


def ui_command() -> str:
    """The command that opens the MLflow UI on the store in force (bound to loopback). It runs MLflow through this
    interpreter, so it works as printed without the virtual environment activated."""
    import shlex

    return (
        f"{shlex.quote(os.path.abspath(sys.executable))} -m mlflow ui --backend-store-uri {shlex.quote(tracking_uri())} "
        "--host 127.0.0.1 --port 5000"
    )


@contextlib.contextmanager
def job_run(job: str, cfg: Any, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Open the MLflow run of one job, log its flattened config as params and yield the run."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(job)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(job, _artifact_location(uri, job))
    nested = mlflow.active_run() is not None
    with mlflow.start_run(
        experiment_id=exp_id, run_name=job, nested=nested, tags={"job": job, **(tags or {})}
    ) as run:
        params = {k: ("" if v is None else v) for k, v in flatten(cfg).items()}
        if params:
            mlflow.log_params(params)
        yield run


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON to ``path`` (numpy scalars and paths as plain values)."""
    p = Path(path)
    p.write_text(json.dumps(obj, indent=2, default=json_default))
    return p


def json_default(v: Any) -> Any:
    """JSON fallback: numpy scalars and arrays as plain numbers and lists, anything else as a string."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def log_json(obj: Any, name: str) -> None:
    """Log ``obj`` as the JSON artifact ``name`` of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as d:
        mlflow.log_artifact(str(write_json(obj, Path(d) / name)))


def log_artifacts(directory: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Log every file of ``directory`` as an artifact of the active run (under ``artifact_path`` if given)."""
    import mlflow

    mlflow.log_artifacts(str(directory), artifact_path)


def log_file(path: str | os.PathLike) -> None:
    """Log one file (a figure, a table) as an artifact of the active run."""
    import mlflow

    mlflow.log_artifact(str(path))


def log_text(text: str, name: str) -> None:
    """Log ``text`` as the artifact ``name`` of the active run."""
    import mlflow

    mlflow.log_text(text, name)


def metric_name(key: str) -> str:
    """MLflow's form of a metric key: ``recall@10`` → ``recall_at_10`` (MLflow names allow no ``@``)."""
    return key.replace("@", "_at_")


def log_step_metrics(entry: dict) -> None:
    """Log one progress entry (``{"step": n, ...numbers}``, e.g. a validation of the alignment) at its step; keys
    that are not numbers (``phase``) are left out."""
    log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    """Log every numeric entry of ``metrics`` (nested dicts flattened, lists as ``key.0``, ``key.1``, ...;
    non-numbers skipped), at ``step`` when given (training curves)."""
    import mlflow

    flat = {}
    for k, v in flatten(metrics).items():
        values = enumerate(v) if isinstance(v, list | tuple) else [(None, v)]
        for i, x in values:
            if isinstance(x, int | float) and not isinstance(x, bool):
                flat[metric_name(k if i is None else f"{k}.{i}")] = float(x)
    if flat:
        mlflow.log_metrics(flat, step=step)


def resolve_model(uri: str) -> str:
    """A local folder for a model given as a path or an MLflow artifact URI (``runs:/<run id>/generator``)."""
    if "://" in uri or uri.startswith(("runs:/", "models:/")):
        import mlflow

        mlflow.set_tracking_uri(tracking_uri())
        return mlflow.artifacts.download_artifacts(artifact_uri=uri)
    if not Path(uri).exists():
        raise FileNotFoundError(f"model {uri!r}: no such folder (pass a bundle folder or an MLflow URI)")
    return uri
