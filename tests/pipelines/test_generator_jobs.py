"""train-generator and bench-generative end to end on the tiny synthetic world."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from onesearch.model.bundle import GeneratorBundle
from onesearch.model.generator import CheckpointMismatch
from pipelines import bench_generative, tokenize, train_generator
from tests.pipelines.test_jobs import _run_cli

BENCH_KEYS = {
    "dataset", "task", "tokenizer", "params", "train_minutes", "recall@5", "recall@10", "ndcg@5", "ndcg@10",
    "mrr@10", "valid_rate", "decode_qps", "beam",
}  # fmt: skip


@pytest.fixture(scope="module")
def sids(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    cfg = tokenize.Config(
        dataset="synthetic-tiny", embedding="cf", codebook_sizes=(8, 8), pq_codes=8, output=str(out)
    )
    res = tokenize.main(cfg)
    other = tokenize.main(replace(cfg, seed=1, output=str(out / "other")))
    return res["output"], other["output"]


@pytest.fixture(scope="module")
def trained(sids, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    cfg = replace(train_generator.PRESETS["tiny"], tokenizer=sids[0], output=str(out))
    return cfg, train_generator.main(cfg)


def test_train_generator_reports_and_saves_a_loadable_bundle(trained):
    cfg, res = trained
    assert {
        "model_uri",
        "mlflow_model_uri",
        "val_recall@10",
        "val_ndcg@10",
        "params",
        "train_minutes",
    } <= set(res)
    assert res["steps"] > 0 and res["examples"]["train"] > 0
    bundle = GeneratorBundle.load(res["model_uri"])
    assert bundle.meta["task"] == "recommend" and bundle.vocab is None
    ids, scores = bundle.retrieve([[int(bundle.table.item_ids[0]), int(bundle.table.item_ids[1])], []], k=5)
    assert ids.shape == (2, 5) and np.isin(ids, bundle.table.item_ids).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert not [p for p in Path(cfg.output).rglob("trainer_state.pt")]  # the resume state is gone once done


def test_bench_generative_on_a_saved_model_and_an_mlflow_uri(trained):
    cfg, res = trained
    bench = bench_generative.Config(
        model=res["model_uri"], trainer=cfg, beam=10, qps_beams=(1, 10), qps_requests=32
    )
    out = bench_generative.main(bench)
    assert BENCH_KEYS <= set(out)
    assert out["valid_rate"] == 1.0 and out["requests"] > 0
    assert 0 <= out["recall@5"] <= out["recall@10"] <= 1 and out["ndcg@10"] <= out["recall@10"]
    assert set(out["decode_qps_by_beam"]) == {"1", "10"}
    via_mlflow = bench_generative.main(replace(bench, model=res["mlflow_model_uri"]))
    assert via_mlflow["recall@10"] == out["recall@10"]
    assert out["precision"] == "fp32" and out["decode_qps_fp32"] == out["decode_qps_by_beam"].get("20")
    half = bench_generative.main(replace(bench, precision="bf16", qps_beams=(20,)))
    assert half["precision"] == "bf16" and half["valid_rate"] == 1.0 and half["decode_qps_fp32"] > 0
    with pytest.raises(ValueError, match="--precision must be one of"):
        bench_generative.main(replace(bench, precision="half"))


def test_search_task_reads_queries_and_refuses_empty_ones(sids, tmp_path):
    cfg = replace(train_generator.PRESETS["tiny"], task="search", tokenizer=sids[0], output=str(tmp_path))
    res = train_generator.main(cfg)
    bundle = GeneratorBundle.load(res["model_uri"])
    assert bundle.vocab is not None and bundle.model.cfg.max_query_tokens > 0
    first = int(bundle.table.item_ids[0])
    ids, _ = bundle.retrieve([[first], [first]], ["red dress", "blue shoes"], k=3)
    assert np.isin(ids, bundle.table.item_ids).all()
    assert bundle.meta["tasks"] == ["search"]
    with pytest.raises(ValueError, match="trained for search only"):
        bundle.retrieve([[first]], [None])
    with pytest.raises(ValueError, match="request 0: the query is empty"):
        bundle.retrieve([[first]], [""])
    with pytest.raises(KeyError, match="not in the SID table"):
        bundle.retrieve([[10**9]], ["glue"])


def test_bundle_refuses_a_mismatched_sid_table(trained, sids, tmp_path):
    _, res = trained
    copy = tmp_path / "bundle"
    shutil.copytree(res["model_uri"], copy)
    for f in ("sid.parquet", "sid.json"):
        shutil.copy(f"{sids[1]}/{f}", copy / f)
    with pytest.raises(CheckpointMismatch, match="trained on SID table"):
        GeneratorBundle.load(copy)


def test_cli_errors_and_json_last_line(trained, tmp_path):
    cfg, res = trained
    r = _run_cli("train-generator", "--preset", "tiny", "--task", "browse", cwd=tmp_path)
    assert r.returncode == 1 and "error: train-generator: --task must be one of" in r.stderr
    r = _run_cli("bench-generative", "--preset", "tiny", "--model", str(tmp_path / "none"), cwd=tmp_path)
    assert r.returncode == 1 and "no such folder" in r.stderr
    r = _run_cli(
        "bench-generative", "--preset", "tiny", "--model", res["model_uri"], "--qps-beams", "1", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["valid_rate"] == 1.0


def test_dropout_override_reaches_the_model_and_is_checked(sids, tmp_path):
    cfg = replace(train_generator.PRESETS["tiny"], tokenizer=sids[0], output=str(tmp_path))
    assert train_generator.prepare(cfg).model_cfg.dropout == 0.1  # the size preset's
    assert train_generator.prepare(replace(cfg, dropout=0.25)).model_cfg.dropout == 0.25
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"--dropout must be in \[0, 1\)"):
            train_generator.prepare(replace(cfg, dropout=bad))


def test_level_rescore_experiment_reports_the_beam_order_and_a_grid_no_worse(trained, capsys):
    import importlib.util

    from onesearch.data.registry import load_dataset
    from onesearch.model.data import recommend_examples
    from onesearch.model.train import evaluate

    path = Path(__file__).parents[2] / "experiments" / "level_rescore.py"
    spec = importlib.util.spec_from_file_location("level_rescore", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg, res = trained
    mod.main([res["model_uri"], "--dataset", cfg.dataset, "--beam", "20"])
    assert torch.is_grad_enabled()  # the script leaves no global torch state behind for whatever runs next
    valid, test, grid = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert (valid["split"], test["split"]) == ("valid", "test")
    b = GeneratorBundle.load(res["model_uri"])
    ex = recommend_examples(load_dataset(cfg.dataset), b.table, b.model.cfg.max_history, 0).test
    ev = evaluate(b.model, ex, b.trie, beam=20, k=20)
    # weights all 1 keep the beam's own order, so the metrics are the bench's
    assert test["metrics"]["recall@10"] == pytest.approx(ev.metrics["recall@10"])
    assert test["metrics"]["ndcg@10"] == pytest.approx(ev.metrics["ndcg@10"])
    assert sum(test["hits_by_rank_1_to_10"]) == round(ev.metrics["recall@10"] * ex.size)
    assert grid["valid_ndcg@10"] >= valid["metrics"]["ndcg@10"] - 1e-9  # the grid holds the all-ones point
    with pytest.raises(SystemExit):
        mod.main([res["model_uri"], "--dataset", cfg.dataset, "--beam", "5"])


def test_semantic_ids_fitted_on_other_data_or_settings_are_refused(sids, tmp_path):
    from onesearch.data.cold import make_cold
    from onesearch.data.registry import load_dataset

    ds = load_dataset("synthetic-tiny")
    rec = json.loads((Path(sids[0]) / tokenize.FITTED_ON_FILE).read_text())
    assert rec["dataset"] == ds.name and rec["data_fingerprint"] == ds.fingerprint()
    assert rec["settings"]["codebook_sizes"] == [8, 8] and "output" not in rec["settings"]
    # the same table beside another split of the same catalogue (some items made cold): refused by folder
    cold, _ = make_cold(ds, 10)
    with pytest.raises(ValueError, match="fitted on dataset 'synthetic-tiny'.*other data or another split"):
        train_generator.resolve_tokenizer("x", replace(cold, name=ds.name), sids[0], str(tmp_path))
    # a cached method table made with other settings than this run would fit: refused, and says how to use it
    cache = tmp_path / ds.name / "khqe"
    shutil.copytree(sids[0], cache)
    with pytest.raises(ValueError, match="other settings.*codebook_sizes"):
        train_generator.resolve_tokenizer("synthetic-tiny", ds, "khqe", str(tmp_path))
    # ... and one without a record (made before records existed)
    (cache / tokenize.FITTED_ON_FILE).unlink()
    with pytest.raises(ValueError, match="do not record what they were fitted on"):
        train_generator.resolve_tokenizer("synthetic-tiny", ds, "khqe", str(tmp_path))
    # the matching cached table (what this run itself fits) is used
    shutil.rmtree(cache)
    table, folder = train_generator.resolve_tokenizer("synthetic-tiny", ds, "khqe", str(tmp_path))
    assert folder == str(cache) and table.n_items == ds.items.height
    assert train_generator.resolve_tokenizer("synthetic-tiny", ds, "khqe", str(tmp_path))[1] == folder


def test_catalogue_queries_add_every_item_as_a_target_and_train(sids, tmp_path):
    cfg = replace(
        train_generator.PRESETS["tiny"],
        task="search",
        tokenizer=sids[0],
        output=str(tmp_path),
        catalogue_queries=2,
    )
    plain = train_generator.prepare(replace(cfg, catalogue_queries=0))
    p = train_generator.prepare(cfg)
    extra = p.splits.train.size - plain.splits.train.size
    assert extra > p.table.n_items  # two views for (almost) every item
    targets = set(p.splits.train.target.tolist())
    bought = set(plain.splits.train.target.tolist())
    assert len(targets) == p.table.n_items > len(bought)  # items never searched for are targets now
    assert train_generator.run_name(cfg).endswith("-cq2-s0")
    res = train_generator.main(cfg)
    bundle = GeneratorBundle.load(res["model_uri"])
    # an item no search led to in training is decodable: asked by its own title, it is a real item of the table
    never = sorted(targets - bought)[0]
    item = int(p.table.item_ids[never])
    title = p.ds.items.filter(pl.col("item_id") == item)["title"][0]
    ids, _ = bundle.retrieve([[]], [title], k=10)
    assert np.isin(ids, bundle.table.item_ids).all()
    with pytest.raises(ValueError, match="--catalogue-queries needs --task search"):
        train_generator.prepare(replace(cfg, task="recommend"))
    with pytest.raises(ValueError, match=">= 0"):
        train_generator.prepare(replace(cfg, catalogue_queries=-1))


def test_dense_head_weight_is_picked_on_validation_and_kept_in_the_bundle(sids, tmp_path):
    from onesearch.model.train import DENSE_WEIGHTS

    cfg = replace(train_generator.PRESETS["tiny"], tokenizer=sids[0], output=str(tmp_path), dense_head=True)
    assert train_generator.run_name(cfg).endswith("-dh-s0")
    res = train_generator.main(cfg)
    assert res["dense_weight"] in DENSE_WEIGHTS and set(res["dense_grid"]) == {str(w) for w in DENSE_WEIGHTS}
    best = res["dense_grid"][str(res["dense_weight"])]["recall@10"]
    assert best == max(g["recall@10"] for g in res["dense_grid"].values())
    bundle = GeneratorBundle.load(res["model_uri"])
    assert bundle.model.cfg.dense_head and bundle.model.cfg.dense_weight == res["dense_weight"]
    ids, scores = bundle.retrieve([[int(bundle.table.item_ids[0])]], k=5)
    assert np.isin(ids, bundle.table.item_ids).all() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_dense_words_give_item_vectors_from_each_items_own_words(sids, tmp_path):
    from onesearch.data.search_set import category_query, shared_root, words

    cfg = replace(
        train_generator.PRESETS["tiny"],
        task="search",
        tokenizer=sids[0],
        output=str(tmp_path),
        dense_head=True,
        dense_words=6,
    )
    p = train_generator.prepare(cfg)
    assert p.item_tokens.shape == (p.table.n_items, 6)
    # row r holds the words of the table's r-th item: its title, then its category words
    paths = p.ds.items["category_path"].to_list()
    drop = 1 if shared_root(paths) else 0
    for r in (0, p.table.n_items - 1):
        row = p.ds.items.filter(pl.col("item_id") == int(p.table.item_ids[r])).row(0, named=True)
        text = " ".join(dict.fromkeys(words(row["title"]) + category_query(row["category_path"], drop)))
        assert p.item_tokens[r].tolist() == p.vocab.encode([text], 6)[0].tolist()
    assert train_generator.run_name(cfg).endswith("-dh-dw6-s0")
    res = train_generator.main(cfg)
    bundle = GeneratorBundle.load(res["model_uri"])
    assert bundle.model.item_tokens.tolist() == p.item_tokens.tolist()
    title = p.ds.items["title"][0]
    ids, scores = bundle.retrieve([[]], [title], k=5)
    assert np.isin(ids, bundle.table.item_ids).all() and (np.diff(scores, axis=1) <= 1e-6).all()
    with pytest.raises(ValueError, match="add --dense-head"):
        train_generator.prepare(replace(cfg, dense_head=False))
    with pytest.raises(ValueError, match="needs --task search"):
        train_generator.prepare(replace(cfg, task="recommend"))


def test_popularity_prior_weight_and_tail_boost_are_picked_on_validation_and_kept_in_the_bundle(
    sids, tmp_path
):
    from onesearch.model.train import COLD_BOOSTS, POPULARITY_WEIGHTS, TAIL_BOOSTS, TEMPERATURES

    cfg = replace(
        train_generator.PRESETS["tiny"],
        tokenizer=sids[0],
        output=str(tmp_path),
        popularity_prior=True,
        tail_budget=0.02,
    )
    cfg = replace(cfg, train=replace(cfg.train, eval_beam=20))
    assert train_generator.run_name(cfg).endswith("-pp-te-s0")
    with pytest.raises(ValueError, match="--tail-budget needs --popularity-prior"):
        train_generator.prepare(replace(cfg, popularity_prior=False))
    with pytest.raises(ValueError, match=r"--tail-budget must be in \[0, 1\)"):
        train_generator.prepare(replace(cfg, tail_budget=1.0))
    p = train_generator.prepare(cfg)
    # the prior counts exactly the purchases the recommend training split reads
    from onesearch.data.splits import training_purchases
    from onesearch.model.data import purchases

    bought = training_purchases(purchases(p.ds), p.ds.search_log, "recommend")["item_id"].to_list()
    item = int(p.table.item_ids[int(np.argmax(p.item_purchases))])
    assert p.item_purchases.max() == bought.count(item) and p.item_purchases.sum() == len(bought)
    res = train_generator.main(cfg)
    grid = res["popularity_grid"]
    assert set(grid) == {str(w) for w in POPULARITY_WEIGHTS}
    w = res["popularity_weight"]
    # either the weights changed some hits and the rule chose among them, or none did and nothing is changed
    assert len({g["recall"] for g in grid.values()}) > 1 or w == 0.0
    assert grid[str(w)]["diff"] >= -grid[str(w)]["se"]  # within one se of the best ...
    assert all(
        g["diff"] < -g["se"] for k, g in grid.items() if float(k) > w
    )  # ... and the largest such weight
    bundle = GeneratorBundle.load(res["model_uri"])
    assert bundle.model.cfg.popularity_weight == w
    tails = res["tail_grid"]
    assert set(tails) == {str(b) for b in TAIL_BOOSTS} and res["score_temperature"] in TEMPERATURES
    best = max(g["recall@10"] for g in tails.values())
    b = res["tail_boost"]  # the largest boost within 2% of the best recall@10
    assert tails[str(b)]["recall@10"] >= 0.98 * best
    assert all(g["recall@10"] < 0.98 * best for k, g in tails.items() if float(k) > b)
    colds = res["cold_grid"]  # then the largest cold boost within 2% of the best warm recall@10
    assert set(colds) == {str(c) for c in COLD_BOOSTS} and colds["0.0"] == tails[str(b)]
    c = res["cold_boost"]
    warm = max(g["warm_recall@10"] for g in colds.values())
    assert colds[str(c)]["warm_recall@10"] >= 0.98 * warm
    assert all(g["warm_recall@10"] < 0.98 * warm for k, g in colds.items() if float(k) > c)
    got = bundle.model.cfg
    assert (got.tail_boost, got.cold_boost, got.score_temperature) == (b, c, res["score_temperature"])
    torch.testing.assert_close(
        bundle.model.item_log_pop, torch.log1p(torch.as_tensor(p.item_purchases, dtype=torch.float32))
    )


def test_bench_generative_evaluates_a_bundle_on_the_dataset_it_records():
    from onesearch.data.registry import load_dataset

    ds = load_dataset("synthetic-tiny")
    meta = {"dataset": ds.name, "dataset_source": "synthetic-tiny", "data_fingerprint": ds.fingerprint()}
    # whatever the trainer's dataset says (here its default), the recorded one is used
    assert bench_generative._dataset_of(meta, "scientific", "m").fingerprint() == ds.fingerprint()
    with pytest.raises(ValueError, match="holds other rows"):
        bench_generative._dataset_of({**meta, "data_fingerprint": "0" * 64}, "", "m")
    # a recorded source that moved: the dataset given is used when it is the same data
    moved = {**meta, "dataset_source": "/no/such/folder"}
    assert bench_generative._dataset_of(moved, "synthetic-tiny", "m").fingerprint() == ds.fingerprint()
    with pytest.raises(ValueError, match=r"trained on 'my-shop', which is not found here.*--trainer.dataset"):
        bench_generative._dataset_of({"dataset": "my-shop", "dataset_source": "/no/such/folder"}, "", "m")


def test_a_job_that_nests_the_trainer_names_its_own_options_in_errors():
    cfg = bench_generative.PRESETS["tiny"]
    with pytest.raises(ValueError, match=r"--trainer\.task must be one of"):
        bench_generative.main(replace(cfg, trainer=replace(cfg.trainer, task="browse")))


def test_train_generator_runs_under_torchrun_with_two_processes(sids, tmp_path):
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun"), "torch installs torchrun beside the interpreter"
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "pipelines", "train-generator",
         "--preset", "tiny", "--tokenizer", sids[0], "--output", str(tmp_path / "gen"), "--train.no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1",
             "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.strip().splitlines() if x.startswith("{")]
    ranks = {x.get("rank", 0) for x in lines}
    assert ranks == {0, 1} and "trained on 2 processes sharing each batch" in r.stderr
    bundles = list((tmp_path / "gen").rglob("generator.safetensors"))
    assert len(bundles) == 1  # rank 0 alone writes the bundle
    GeneratorBundle.load(bundles[0].parent)
