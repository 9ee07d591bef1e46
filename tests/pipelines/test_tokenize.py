"""The tokenize job end to end on small data."""

import numpy as np
import pytest

from onesearch.data.registry import load_dataset
from onesearch.tokenizer.pipeline import EmbeddingConfig, tokenize
from onesearch.tokenizer.sid import SIDTable
from pipelines import tokenize as job


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic-tiny")


def test_khqe_ids_are_unique_seeded_and_keep_existing_ids_when_items_are_added(tiny):
    kw = dict(codebook_sizes=(8, 8), pq_codes=8, ecfg=EmbeddingConfig(source="cf"))
    a = tokenize(tiny, "khqe", seed=0, incremental_share=0.1, **kw)
    b = tokenize(tiny, "khqe", seed=0, **kw)
    assert a.metrics["unique_rate"] == 1.0 and a.table.is_unique()
    assert np.array_equal(a.table.codes, b.table.codes) and a.table.content_hash() == b.table.content_hash()
    inc = a.metrics["incremental"]
    assert inc["existing_ids_unchanged"] is True and inc["unique_rate_after"] == 1.0 and inc["new_items"] > 0
    assert a.metrics["notes"] == ["keyword enhancement skipped: the embedding source is 'cf'"]
    c = tokenize(tiny, "khqe", seed=1, **kw)
    assert not np.array_equal(a.table.codes, c.table.codes)


def test_keyword_enhancement_raises_level1_purity_on_the_synthetic_world(tiny):
    kw = dict(codebook_sizes=(8, 8), ecfg=EmbeddingConfig(source="text"))
    plain = tokenize(tiny, "rqkmeans", **kw)
    khqe = tokenize(tiny, "khqe", pq_codes=8, **kw)
    assert khqe.metrics["purity_l1"] > plain.metrics["purity_l1"]
    assert khqe.metrics["unique_rate"] == 1.0


def test_reference_index_through_the_same_interface():
    ds = load_dataset("scientific-mini")
    res = tokenize(ds, "index:rqvae_native")
    assert res.table.n_items == 1403 and res.table.semantic_levels == 4 and res.metrics["unique_rate"] == 1.0
    assert 0 < res.metrics["collision_rate"] < 1
    with pytest.raises(FileNotFoundError, match=r"no reference index 'nope'.*available: \['rqvae_native'\]"):
        tokenize(ds, "index:nope")


def test_bad_method_and_text_free_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer method 'kmeans'"):
        tokenize(tiny, "kmeans")
    ds = load_dataset("scientific-mini")
    ds.items = ds.items.with_columns(ds.items["title"].clear(ds.items.height).alias("title"))
    with pytest.raises(ValueError, match="has no item text: use --embedding cf"):
        tokenize(ds, "khqe", ecfg=EmbeddingConfig(source="text"))


def test_job_writes_artifacts_and_reports_the_contract(tmp_path):
    cfg = job.Config(
        dataset="synthetic-tiny", embedding="cf", codebook_sizes=(8, 8), pq_codes=8, output=str(tmp_path)
    )
    res = job.main(cfg)
    for key in (
        "dataset",
        "method",
        "items",
        "levels",
        "codebook_sizes",
        "collision_rate",
        "unique_rate",
        "utilization",
        "purity_l1",
        "seconds",
        "embed_seconds",
    ):
        assert key in res, key
    assert res["levels"] == 5 and len(res["utilization"]) == 5 and res["unique_rate"] == 1.0
    table = SIDTable.load(res["output"])
    assert table.content_hash() == res["sid_hash"] and table.n_items == res["items"]


def test_codebooks_follow_the_catalogue_size_unless_given():
    from onesearch.tokenizer.pipeline import SMALL_CATALOGUE, make_quantizer

    small = make_quantizer("khqe", None, None, None, None, None, n_items=SMALL_CATALOGUE - 1).cfg
    big = make_quantizer("khqe", None, None, None, None, None, n_items=SMALL_CATALOGUE).cfg
    assert (small.codebook_sizes, small.pq_codes) == ((64, 64), 64)
    assert (big.codebook_sizes, big.pq_codes) == ((256, 256), 256)
    given = make_quantizer("rqkmeans", (8, 8, 8), None, None, None, None, n_items=100).cfg
    assert given.codebook_sizes == (8, 8, 8)
