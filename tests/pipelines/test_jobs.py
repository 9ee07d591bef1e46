"""The jobs in-process (as tests and notebooks call them) and through the command line."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest

from pipelines import prepare_data, quickstart

ROOT = Path(__file__).resolve().parents[2]


def _run_cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_prepare_data_in_process_writes_tables_and_logs_a_run(tmp_path):
    res = prepare_data.main(prepare_data.Config(dataset="scientific-mini", output=str(tmp_path)))
    assert (res["users"], res["items"], res["interactions"]) == (300, 1403, 2042)
    assert res["splits"] == {"train": 2042 - 600, "valid": 300, "test": 300, "users_train_only": 0}
    assert res["sequence_length"]["min"] >= 5
    out = Path(res["output"])
    for f in ("items.parquet", "interactions.parquet", "search_log.parquet", "dataset.json"):
        assert (out / f).is_file(), f
    assert pl.read_parquet(out / "interactions.parquet").height == 2042
    run = mlflow.get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "scientific-mini"
    assert run.data.metrics["users"] == 300
    stats = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="stats.json", dst_path=str(tmp_path / "dl")
            )
        ).read_text()
    )
    assert stats["items"] == 1403


def test_cli_lists_jobs_and_prints_json_last(tmp_path):
    r = _run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "prepare-data" in r.stdout and "quickstart" in r.stdout
    r = _run_cli("prepare-data", "--preset", "tiny", "--output", str(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["dataset"].startswith("synthetic") and last["users"] > 0 and last["interactions"] > 0


def test_cli_error_is_one_clear_line(tmp_path):
    r = _run_cli("prepare-data", "--dataset", str(tmp_path / "missing"), cwd=tmp_path)
    assert r.returncode == 1
    assert "error: prepare-data: dataset" in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "synthetic-tiny").mkdir()
    (tmp_path / "synthetic-tiny" / "precious.txt").write_text("keep me")
    r = _run_cli("prepare-data", "--preset", "tiny", "--output", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "is not an earlier output" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "synthetic-tiny" / "precious.txt").read_text() == "keep me"


def test_default_store_is_sqlite_in_the_working_directory(tmp_path):
    env = {"MLFLOW_TRACKING_URI": ""}
    r = _run_cli("prepare-data", "--preset", "tiny", "--output", "data", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "data").is_dir()


def test_quickstart_tiny(tmp_path, capsys):
    res = quickstart.main(quickstart.Config(output=str(tmp_path)))  # the default: tiny world, vendored slice
    out = capsys.readouterr().out
    assert set(res["datasets"]) == {"synthetic-tiny", "scientific-mini"}
    assert res["datasets"]["scientific-mini"]["users"] == 300
    assert "| scientific-mini |" in out and "-m mlflow ui --backend-store-uri" in out
    assert set(res["bidders"]) == {"pid", "dt"} and re.search(r"\|\s+dt \|", out)
    assert res["bidders"]["dt"]["train_minutes"] > 0
    steps = res["step_seconds"]  # every step timed, and printed
    assert "preparing scientific-mini" in steps and "scoring a small batch of search requests" in steps
    assert steps["total"] >= sum(v for k, v in steps.items() if k != "total") and "Time per step" in out
    sc = res["scores"]
    assert sc["rows_in"] > 0 and sc["rows_scored"] + sc["rows_failed"] == sc["rows_in"]
    assert "ranked items in" in out
    children = mlflow.search_runs(
        experiment_names=["prepare-data"], filter_string=f"tags.mlflow.parentRunId = '{res['mlflow_run_id']}'"
    )
    assert len(children) == 2


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "counts"), [("scientific", (8317, 4344, 58492)), ("beauty", (22363, 12101, 198502))]
)
def test_prepare_data_cli_on_the_real_sets(shared_data, tmp_path, name, counts):
    r = _run_cli("prepare-data", "--dataset", name, "--output", str(tmp_path), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert (last["users"], last["items"], last["interactions"]) == counts


def test_the_printed_mlflow_ui_command_runs_as_printed():
    import shlex

    from pipelines import tracking

    argv = shlex.split(tracking.ui_command())
    assert argv[1:4] == ["-m", "mlflow", "ui"] and "127.0.0.1" in argv
    r = subprocess.run([*argv[:4], "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--backend-store-uri" in r.stdout
