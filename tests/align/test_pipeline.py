"""The alignment pipeline (onesearch.align.pipeline), the align job and bench-search --aligned, end to end on the
tiny synthetic world."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from onesearch.align.pipeline import align_bundle
from onesearch.model.bundle import GeneratorBundle
from pipelines import align, bench_search, tokenize, train_generator
from pipelines.cli import build_parser


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("align")
    tok = tokenize.main(
        tokenize.Config(
            dataset="synthetic-tiny", embedding="cf", codebook_sizes=(8, 8), pq_codes=8, output=str(out)
        )
    )
    cfg = replace(align.PRESETS["tiny"].trainer, tokenizer=tok["output"], output=str(out / "gen"))
    return out, cfg, train_generator.main(cfg)["model_uri"]


def test_align_job_writes_an_aligned_bundle_and_reports_the_reward_model(sft):
    out, trainer, path = sft
    cfg = replace(align.PRESETS["tiny"], model=path, trainer=trainer, output=str(out / "aligned"))
    res = align.main(cfg)
    assert {
        "model_uri",
        "sft_model_uri",
        "reward",
        "lists",
        "val_sft",
        "val_aligned",
        "mlflow_model_uri",
    } <= set(res)
    r = res["reward"]
    assert 0.5 < r["click_auc"] <= 1.0 and 0.5 < r["purchase_auc"] <= 1.0  # held out, better than chance
    assert 0.0 < r["purchase_ndcg@10"] <= 1.0
    assert {"0", "1", "3"} <= set(r["rerank_ndcg@10"]) and all(
        0 <= v <= 1 for v in r["rerank_ndcg@10"].values()
    )
    fit = res["fit"]
    assert 0 <= fit["policy_ndcg@10"] <= 1 and -1 <= fit["shift_reward_corr"] <= 1
    assert fit["rerank_ndcg@10"] == r["rerank_ndcg@10"]
    assert all(r["train_levels"][k] > 0 for k in ("purchased", "clicked", "shown", "same_category", "random"))
    assert res["lists"]["phase1"] > 0 and res["lists"]["phase2"] > 0
    for m in (res["val_sft"], res["val_aligned"]):
        assert 0 <= m["ndcg@10"] <= m["recall@10"] <= m["recall@50"] <= 1
    aligned, base = GeneratorBundle.load(res["model_uri"]), GeneratorBundle.load(path)
    assert (
        aligned.meta["aligned_from"] == res["sft_model_uri"] and aligned.meta["dataset"] == "synthetic-tiny"
    )
    assert aligned.table.content_hash() == base.table.content_hash()
    hist = [[int(i) for i in base.table.item_ids[:3]]]
    ids, _ = aligned.retrieve(hist, ["mug"], k=5)
    assert np.isin(ids, base.table.item_ids).all()


def test_a_purchase_only_log_gets_retrieved_items_as_its_shown_level(sft, tmp_path):
    import polars as pl

    from onesearch.data import schema as S
    from onesearch.data.dataset import Dataset
    from onesearch.data.registry import load_dataset

    out, trainer, path = sft
    ds = load_dataset("synthetic-tiny")
    buys = ds.interactions.filter(pl.col(S.EVENT) == "purchase").with_columns(
        pl.lit(None, dtype=pl.Int64).alias(S.REQUEST_ID)
    )  # as the Amazon sets: purchases only, no request ids
    amazon_like = Dataset(ds.name, ds.items, buys, ds.search_log)
    cfg = replace(align.PRESETS["tiny"].align, retrieved_negatives=4)
    seen = []
    res = align_bundle(cfg, path, amazon_like, tmp_path / "aligned", on_eval=seen.append)
    lv = res["reward"]["train_levels"]
    assert 0 < lv["shown"] <= 4 * (lv["purchased"] + lv["clicked"])  # at most 4 per request
    assert res["reward"]["valid_levels"]["shown"] > 0 and 0.0 < res["reward"]["purchase_ndcg@10"] <= 1.0
    assert res["lists"]["phase1"] > 0
    assert [e["phase"] for e in seen][:2] == ["sft", "phase1"]  # every validation reached on_eval, in order


def test_bench_search_aligned_adds_the_aligned_row(sft):
    out, trainer, path = sft
    base = bench_search.PRESETS["tiny"]
    cfg = replace(base, model=path, trainer=replace(trainer, task="search"), systems=("generative",), aligned=True,
                  latency_requests=2, qps_requests=16)  # fmt: skip
    res = bench_search.main(cfg)
    assert list(res["systems"]) == ["generative", "generative_aligned"]
    for m in res["systems"].values():
        assert 0 <= m["mrr@10"] <= m["ndcg@10"] <= m["hr@10"] <= m["hr@50"] <= 1
    assert res["details"]["generative_aligned"]["sft_model_uri"].endswith(path.rstrip("/").split("/")[-1])
    with pytest.raises(ValueError, match="must include generative"):
        bench_search.main(replace(base, systems=("popularity",), aligned=True))


def test_align_options_are_on_the_command_line():
    sub = build_parser()._subparsers._group_actions[0].choices
    opts = {s for job in ("align", "bench-search") for a in sub[job]._actions for s in a.option_strings}
    assert {
        "--align.beta",
        "--align.lr",
        "--align.anchor-weight",
        "--align.anchor",
        "--align.phase1-steps",
        "--align.phase2-steps",
        "--align.reward-objective",
        "--align.retrieved-negatives",
        "--aligned",
        "--model",
    } <= opts
    from onesearch.align.dpo import AlignConfig

    for bad, opt in ((dict(reward_objective="softmax"), "--align.reward-objective"),
                     (dict(retrieved_negatives=-1), "--align.retrieved-negatives"),
                     (dict(rejected=0), "--align.rejected")):  # fmt: skip
        with pytest.raises(ValueError, match=opt):
            AlignConfig(**bad)
    with pytest.raises(ValueError, match="--trainer.task must be search"):
        align.main(
            replace(align.PRESETS["tiny"], trainer=replace(align.PRESETS["tiny"].trainer, task="recommend"))
        )
