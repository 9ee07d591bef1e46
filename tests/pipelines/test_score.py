"""Batch scoring: bad rows, kill -9 and resume, the MLflow pyfunc model in a fresh process."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from onesearch.data.registry import load_dataset
from onesearch.model.bundle import GeneratorBundle
from onesearch.scoring import MALFORMED_TEXT_HISTORY, ScoreSettings
from pipelines import engines, score, tokenize, train_generator
from pipelines.pyfunc import log_generator_model


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("score-model")
    tok = tokenize.main(
        tokenize.Config(
            dataset="synthetic-tiny",
            embedding="cf",
            codebook_sizes=(8, 8),
            pq_codes=8,
            output=str(out / "tok"),
        )
    )
    tiny = train_generator.PRESETS["tiny"]
    cfg = replace(
        tiny, tokenizer=tok["output"], task="search", mix_recommend=True, output=str(out / "gen"),
        train=replace(tiny.train, epochs=1),
    )  # fmt: skip
    return train_generator.main(cfg)["model_uri"]


@functools.cache
def _title_words() -> list[str]:
    titles = load_dataset("synthetic-tiny").items["title"].head(50).to_list()
    return sorted({w.lower() for t in titles for w in t.split() if w.isalpha() and len(w) > 2})[:30]


def _requests(bundle: GeneratorBundle, n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    items = bundle.table.item_ids
    words = _title_words()
    return pl.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "user_id": [f"u{i % 17}" for i in range(n)],
            "query": [" ".join(rng.choice(words, 2)) if i % 3 else None for i in range(n)],
            "history": [rng.choice(items, rng.integers(1, 6)).tolist() for _ in range(n)],
        },
        schema_overrides={"history": pl.List(pl.Int64)},
    )


def test_bad_rows_are_reported_with_reasons_and_counted(bundle_dir, tmp_path):
    bundle = GeneratorBundle.load(bundle_dir)
    good = _requests(bundle, 5)
    item = int(bundle.table.item_ids[0])
    bad = pl.DataFrame(
        {
            "request_id": [None, "r0", "b2", "b3", "b4", "b5", "b6"],
            "user_id": ["u", "u", None, "u", "u", "u", "u"],
            "query": ["lamp", "lamp", "lamp", "x" * 600, "lamp", None, "lamp"],
            "history": [[item], [item], [item], [item], [item, None], [], [10**12]],
        },
        schema_overrides={"history": pl.List(pl.Int64)},
    )
    src = tmp_path / "in.parquet"
    pl.concat([good, bad]).write_parquet(src)
    res = score.main(
        score.Config(model=bundle_dir, input=str(src), output=str(tmp_path / "out"), progress=False)
    )
    assert (res["rows_in"], res["rows_scored"], res["rows_failed"]) == (12, 5, 7)
    errors = pl.read_parquet(tmp_path / "out" / "errors-*.parquet")
    assert errors["reason"].to_list() == [
        "null request_id",
        "duplicate request_id",
        "null user_id",
        "query over 500 characters",
        "malformed history",
        "nothing to go on",
        f"unknown items in history: [{10**12}]",
    ]
    scored = pl.read_parquet(tmp_path / "out" / "part-*.parquet")
    assert sorted(scored["request_id"].unique()) == sorted(good["request_id"])
    assert scored.group_by("request_id").len()["len"].max() == ScoreSettings().k
    assert scored["item_id"].is_in(bundle.table.item_ids.tolist()).all()
    assert scored.filter(pl.col("rank") == 1)["score"].min() >= scored["score"].min()


def test_bf16_scoring_returns_the_float32_items_up_to_near_ties(bundle_dir, tmp_path):
    bundle = GeneratorBundle.load(bundle_dir)
    src = tmp_path / "in.parquet"
    _requests(bundle, 12).write_parquet(src)
    out = {}
    for p in ("fp32", "bf16"):
        cfg = score.Config(model=bundle_dir, input=str(src), output=str(tmp_path / p), progress=False,
                           settings=ScoreSettings(precision=p))  # fmt: skip
        assert score.main(cfg)["rows_scored"] == 12
        out[p] = pl.read_parquet(tmp_path / p / "part-*.parquet").sort("request_id", "rank")
    assert out["bf16"]["item_id"].is_in(bundle.table.item_ids.tolist()).all()
    top = {p: set(zip(d["request_id"], d["item_id"], strict=True)) for p, d in out.items()}
    assert len(top["fp32"] & top["bf16"]) >= 0.8 * len(
        top["fp32"]
    )  # the same items, bar near-ties at the edge
    assert (out["bf16"]["score"] - out["fp32"]["score"]).abs().max() < 0.5
    with pytest.raises(ValueError, match="precision must be one of"):
        score.main(replace(cfg, output=str(tmp_path / "bad"), settings=ScoreSettings(precision="fp16")))
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_csv_histories_are_json_lists_and_a_numpy_repr_says_so(bundle_dir, tmp_path):
    bundle = GeneratorBundle.load(bundle_dir)
    a, b = (int(x) for x in bundle.table.item_ids[:2])
    src = tmp_path / "in.csv"
    src.write_text(
        "request_id,user_id,query,history\n"
        f'r1,u1,,"[{a}, {b}]"\n'  # JSON: scored
        f'r2,u1,,"[{a} {b}]"\n'  # numpy's repr, as pandas writes an array: refused with the form it needs
    )
    res = score.main(
        score.Config(model=bundle_dir, input=str(src), output=str(tmp_path / "out"), progress=False)
    )
    assert (res["rows_scored"], res["rows_failed"]) == (1, 1)
    errors = pl.read_parquet(tmp_path / "out" / "errors-*.parquet")
    assert errors["reason"].to_list() == [MALFORMED_TEXT_HISTORY]
    assert "JSON list of item ids, e.g. [2383, 4563]" in MALFORMED_TEXT_HISTORY


def test_missing_columns_stop_the_job_before_writing(bundle_dir, tmp_path):
    src = tmp_path / "in.parquet"
    pl.DataFrame({"request_id": ["a"], "query": ["lamp"]}).write_parquet(src)
    with pytest.raises(ValueError, match=r"missing input columns \['user_id', 'history'\]"):
        score.main(
            score.Config(model=bundle_dir, input=str(src), output=str(tmp_path / "out"), progress=False)
        )
    # no folder, no manifest: the fixed input can be scored into the same --output
    assert not (tmp_path / "out").exists()


def test_score_refuses_an_output_folder_that_is_not_a_score_output(bundle_dir, tmp_path):
    """A model bundle given as --output must not get parts and a manifest mixed into it (issue 36, hole 4)."""
    src = tmp_path / "in.parquet"
    _requests(GeneratorBundle.load(bundle_dir), 5).write_parquet(src)
    bundle_copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle_copy)
    before = sorted(p.name for p in bundle_copy.iterdir())

    def run(out):
        return score.main(score.Config(model=bundle_dir, input=str(src), output=str(out), progress=False))

    with pytest.raises(ValueError, match="not empty and holds no score manifest"):
        run(bundle_copy)
    assert sorted(p.name for p in bundle_copy.iterdir()) == before  # nothing written there
    # a manifest.json of something else is not taken for ours
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('["a list, not a score manifest"]')
    with pytest.raises(ValueError, match="not a score manifest"):
        run(other)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run(tmp_path / "afile")
    # an empty folder, and the same job's own output on a re-run, are fine
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty")["rows_scored"] == 5
    assert run(tmp_path / "empty")["rows_this_run"] == 0
    assert json.loads((tmp_path / "empty" / "manifest.json").read_text())["kind"] == score.KIND


def test_requests_that_record_another_dataset_or_catalogue_are_refused(bundle_dir, tmp_path):
    """Item ids of one catalogue are other products in another: a request file that records where its ids come
    from is checked against the model's (issue 36, small holes)."""
    from onesearch.scoring import META_CATALOGUE, catalogue_hash, write_requests

    bundle = GeneratorBundle.load(bundle_dir)
    reqs = _requests(bundle, 5)
    ids = bundle.table.item_ids

    def run(name, dataset, items):
        src = tmp_path / f"{name}.parquet"
        write_requests(reqs, src, dataset, items)
        return score.main(
            score.Config(model=bundle_dir, input=str(src), output=str(tmp_path / name), progress=False)
        )

    with pytest.raises(ValueError, match="from dataset 'beauty', the model was trained on 'synthetic-tiny'"):
        run("other-ds", "beauty", ids)
    with pytest.raises(ValueError, match="catalogue .* is not the model's"):
        run("other-cat", bundle.meta["dataset"], ids[:-1])  # one item fewer: another slice
    assert not (tmp_path / "other-ds").exists() and not (tmp_path / "other-cat").exists()
    assert run("same", bundle.meta["dataset"], ids[::-1])["rows_scored"] == 5  # order does not matter
    assert catalogue_hash([3, 1, 2]) == catalogue_hash([1, 2, 3]) != catalogue_hash([1, 2])
    # a folder whose files disagree is refused; a file that records nothing is taken as it is
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_requests(reqs.head(2), folder / "a.parquet", "synthetic-tiny", ids)
    reqs.tail(3).write_parquet(folder / "b.parquet", metadata={META_CATALOGUE: "0" * 16})
    with pytest.raises(ValueError, match="record different"):
        score.main(
            score.Config(model=bundle_dir, input=str(folder), output=str(tmp_path / "m"), progress=False)
        )


def test_a_local_ray_cluster_is_not_started_where_ray_would_join_another(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(RuntimeError, match="RAY_ADDRESS=10.0.0.1:6379 is set"):
        engines.start_ray({"include_dashboard": False})


def test_kill_9_then_resume_scores_every_row_exactly_once(bundle_dir, tmp_path):
    bundle = GeneratorBundle.load(bundle_dir)
    reqs = _requests(bundle, 3000, seed=1)
    src = tmp_path / "in.parquet"
    reqs.write_parquet(src)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pipelines", "score", "--model", bundle_dir, "--input", str(src),
            "--output", str(out), "--chunk-rows", "100", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    manifest = out / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["chunks"]) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(json.loads(manifest.read_text())["chunks"])
    assert 3 <= first < 30
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res["rows_in"], res["rows_scored"], res["rows_failed"]) == (3000, 3000, 0)
    assert res["rows_this_run"] == 3000 - 100 * first
    scored = pl.read_parquet(out / "part-*.parquet")
    per_request = scored.group_by("request_id").agg(pl.len(), pl.col("rank").n_unique().alias("ranks"))
    assert per_request.height == 3000 and set(per_request["request_id"]) == set(reqs["request_id"])
    assert (per_request["len"] == per_request["ranks"]).all()  # no request written twice
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_pyfunc_model_predicts_in_a_fresh_process_and_registers(bundle_dir, tmp_path):
    with mlflow.start_run():
        info = log_generator_model(bundle_dir, ScoreSettings(k=5), registered_name="onesearch-test-generator")
    reqs = _requests(GeneratorBundle.load(bundle_dir), 4).to_pandas()
    reqs.loc[3, "request_id"] = None  # a bad row comes back with its reason
    src = tmp_path / "req.json"
    reqs.to_json(src, orient="records")
    code = (
        "import sys, pandas as pd, mlflow\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "print(m.predict(pd.read_json(sys.argv[2], orient='records')).to_json(orient='records'))\n"
    )
    for uri in (info.model_uri, "models:/onesearch-test-generator/1"):
        r = subprocess.run(
            [sys.executable, "-c", code, uri, str(src)], capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-2000:]
        out = pl.DataFrame(json.loads(r.stdout.strip().splitlines()[-1]))
        ok = out.filter(pl.col("rank") > 0)
        assert ok.group_by("request_id").len()["len"].to_list() == [5, 5, 5]
        assert out.filter(pl.col("rank") == 0)["reason"].to_list() == ["null request_id"]
    assert (
        Path(score.load_bundle(info.model_uri)[1]) / "generator.json"
    ).is_file()  # score takes the URI too


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare as root (netns)"
)
def test_ray_engine_writes_what_the_local_engine_writes(bundle_dir, tmp_path):
    """Ray runs in a network namespace with only loopback (the test harness's way of keeping Ray's traffic local)."""
    reqs = _requests(GeneratorBundle.load(bundle_dir), 240, seed=2)
    dup = reqs.slice(10, 1).with_columns(
        pl.lit("u9").alias("user_id")
    )  # the same request id, in a later chunk
    src = tmp_path / "in.parquet"
    pl.concat([reqs, dup]).write_parquet(src)
    common = ["--model", bundle_dir, "--input", str(src), "--chunk-rows", "50", "--no-progress"]
    local = score.main(
        score.Config(
            model=bundle_dir, input=str(src), output=str(tmp_path / "local"), chunk_rows=50, progress=False
        )
    )
    assert local["rows_failed"] == 1
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    cmd = " ".join(
        [
            "ip link set lo up;",
            "RAY_AUTH_MODE=disabled",
            sys.executable, "-m", "pipelines", "score", "--engine", "ray", "--workers", "2",
            "--ray-temp-dir", ray_tmp, "--output", str(tmp_path / "viaray"), *common,
        ]
    )  # fmt: skip
    try:
        r = subprocess.run(["unshare", "--net", "sh", "-c", cmd], capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert {k: res[k] for k in ("rows_in", "rows_scored", "rows_failed")} == {
        k: local[k] for k in ("rows_in", "rows_scored", "rows_failed")
    }
    names = sorted(p.name for p in (tmp_path / "local").glob("*.parquet"))
    assert names == sorted(p.name for p in (tmp_path / "viaray").glob("*.parquet"))
    for name in names:
        a, b = pl.read_parquet(tmp_path / "local" / name), pl.read_parquet(tmp_path / "viaray" / name)
        assert a.drop("score", strict=False).equals(b.drop("score", strict=False)), name
        if "score" in a.columns:
            np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(), rtol=1e-4, atol=1e-5)


_RAY_WHERE = """
import json, subprocess, sys
from pipelines.engines import start_ray
import ray
start_ray({"include_dashboard": False, "_temp_dir": sys.argv[1], "num_cpus": 1})
nodes = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()
listen = sorted({line.split()[3].rsplit(":", 1)[0] for line in ss if line.strip()})
ray.shutdown()
print(json.dumps({"nodes": nodes, "listen": listen}))
"""


@pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("ss") is None or os.geteuid() != 0,
    reason="needs unshare as root (netns) and ss",
)
def test_a_local_ray_cluster_binds_loopback_only_even_where_the_machine_has_an_address(tmp_path):
    """Inside a namespace where the machine has a routable-looking address (10.9.9.9, a default route through it;
    traffic never leaves the namespace), Ray would take that address for its node. The score job's local cluster
    must come up on 127.0.0.1, by its own node table and by what its processes listen on (issue 36, hole 3)."""
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    setup = "ip link set lo up; ip addr add 10.9.9.9/32 dev lo; ip route add default via 10.9.9.9 dev lo src 10.9.9.9;"
    script = tmp_path / "where.py"
    script.write_text(_RAY_WHERE)
    cmd = f"{setup} RAY_AUTH_MODE=disabled {sys.executable} {script} {ray_tmp}"
    try:
        r = subprocess.run(["unshare", "--net", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["nodes"] == ["127.0.0.1"]
    assert got["listen"] and all(a in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in got["listen"]), got[
        "listen"
    ]


_MATMUL_AT_THREADS = """
import sys, torch
torch.manual_seed(0)
a, b = torch.randn(256, 4096), torch.randn(4096, 256)
out = []
for n in (1, 2):
    torch.set_num_threads(n)
    out.append(a @ b)
print(int(torch.equal(out[0], out[1])))
"""


def test_strict_mkl_mode_makes_products_independent_of_the_thread_count():
    """What the score job relies on for row-for-row equal engines: under ``MKL_CBWR=AUTO,STRICT`` a product gives
    the same bits with one thread and with two (MKL reads the variable when torch loads it: a fresh process)."""
    env = {**os.environ, "MKL_CBWR": "AUTO,STRICT"}
    out = subprocess.run([sys.executable, "-c", _MATMUL_AT_THREADS], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_the_command_line_puts_the_score_job_in_strict_mode(monkeypatch, tmp_path):
    from pipelines import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert (
        cli.main(["score", "--model", str(tmp_path / "none"), "--input", str(tmp_path / "none.parquet")]) == 1
    )
    assert os.environ["MKL_CBWR"] == "AUTO,STRICT"
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # a setting already there wins
    cli.main(["score", "--model", str(tmp_path / "none"), "--input", str(tmp_path / "none.parquet")])
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
