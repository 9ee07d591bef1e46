"""bench-search on the tiny synthetic world: every system, the output contract, the logged table and plot."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import pytest
import torch

from onesearch.cascade.sasrec import SASRecConfig, SASRecModel
from pipelines import bench_search


@pytest.mark.parametrize("task", ["search", "recommend"])
def test_bench_search_tiny_reports_every_system(task, tmp_path):
    base = bench_search.PRESETS["tiny"]
    cfg = replace(
        base, trainer=replace(base.trainer, task=task, output=str(tmp_path), tokenizer_dir=str(tmp_path))
    )
    res = bench_search.main(cfg)
    assert res["task"] == task and res["test_requests"] > 0
    assert set(res["systems"]) == set(bench_search.SYSTEMS)
    for name, m in res["systems"].items():
        assert set(bench_search.METRICS) <= set(m), name
        for k in ("hr@10", "ndcg@10", "mrr@10", "hr@50", "tail_exposure@10"):
            assert 0.0 <= m[k] <= 1.0, (name, k)
        assert m["hr@10"] <= m["hr@50"] and m["mrr@10"] <= m["ndcg@10"] <= m["hr@10"]
        assert m["qps_batch"] > 0 and 0 < m["p50_ms"] <= m["p99_ms"]
    assert res["systems"]["popularity"]["tail_exposure@10"] == 0.0  # the 10 most bought items are all head
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(res["mlflow_run_id"])}
    assert {"systems.md", "hr_at_k.png", "bench.json"} <= arts


def test_bench_search_refuses_unknown_systems_and_a_short_beam():
    with pytest.raises(ValueError, match="unknown system"):
        bench_search.main(replace(bench_search.PRESETS["tiny"], systems=("bm25",)))
    with pytest.raises(ValueError, match="beam must be at least 50"):
        bench_search.main(replace(bench_search.PRESETS["tiny"], beam=20))


def test_sasrec_is_causal():
    torch.manual_seed(0)
    m = SASRecModel(20, SASRecConfig(d_model=16, max_len=6, dropout=0.0)).eval()
    seq = torch.tensor([[0, 0, 3, 5, 7, 2]])
    later = seq.clone()
    later[0, 5] = 9
    h1, h2 = m(seq), m(later)
    torch.testing.assert_close(h1[:, :5], h2[:, :5])
    assert not torch.allclose(h1[:, 5], h2[:, 5])
    assert np.isfinite(h1.detach().numpy()).all()
    # padding is invisible: more of it on the left changes nothing at the real positions
    longer = SASRecModel(20, SASRecConfig(d_model=16, max_len=8, dropout=0.0)).eval()
    longer.load_state_dict({k: v for k, v in m.state_dict().items() if k != "pos.weight"}, strict=False)
    with torch.no_grad():
        longer.pos.weight[2:] = m.pos.weight  # same positions for the real items
        longer.pos.weight[:2] = 123.0
    h3 = longer(torch.tensor([[0, 0, 0, 0, 3, 5, 7, 2]]))
    torch.testing.assert_close(h3[:, 4:], h1[:, 2:])


def test_bench_search_cold_items_trains_every_system_without_them(tmp_path):
    base = bench_search.PRESETS["tiny"]
    cfg = replace(
        base,
        trainer=replace(base.trainer, task="search", output=str(tmp_path), tokenizer_dir=str(tmp_path)),
        systems=("generative", "cascade_recall", "popularity"),
        cold_items=0.1,
        data_dir=str(tmp_path / "data"),
    )
    res = bench_search.main(cfg)
    assert res["dataset"].startswith("synthetic-tiny-cold") and res["dataset"].endswith("-s0")
    assert (tmp_path / "data" / res["dataset"] / "dataset.json").is_file()
    # the generator was trained on the dataset with cold items (the bundle records it)
    assert res["details"]["generative"]["model_uri"].find(res["dataset"]) >= 0
    for name, m in res["systems"].items():
        n = m["cold_items_requests"]
        assert n > 0 and n <= m["cold_requests"], name  # the chosen items are cold, and not every cold target
        assert 0.0 <= m["cold_items_hr@10"] <= 1.0
        assert m["warm_hr@10"] is not None
    assert res["systems"]["popularity"]["cold_items_hr@10"] == 0.0  # never bought in training: never popular
    with pytest.raises(ValueError, match="--cold-items must be"):
        bench_search.main(replace(cfg, cold_items=2.5))
