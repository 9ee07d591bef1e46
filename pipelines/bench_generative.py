"""bench-generative: train (or load) a generator and evaluate it on the leave-one-out test split, full catalogue.

Every test request is decoded with constrained beam search over the trie of all items (``--beam``, top-K from the
beam); the target's rank gives recall@5/10, ndcg@5/10, mrr@10. ``decode_qps`` is requests per second at batch 256
on this machine, for beam widths 1, 20 and 100 (``decode_qps`` itself is beam 20), the median of three passes over
the sample after one warm-up pass. With ``--precision bf16`` (or ``--compile``) the evaluation and the throughput
runs use that decoding copy (:func:`onesearch.model.beam.for_decoding`) and ``decode_qps_fp32`` gives plain
float32 at beam 20 in the same run, so quality and speed are read side by side against the float32 model. The
unconstrained decoder's
valid-ID rate and recall@10 are reported for comparison, beside the constrained recall@10 on the same seeded sample
of ``--qps-requests`` test requests.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from onesearch.data.registry import load_dataset
from onesearch.device import pick_device
from onesearch.metrics import target_ranks
from onesearch.model.beam import BEAM, K, beam_search, check_precision, for_decoding
from onesearch.model.bundle import GeneratorBundle
from onesearch.model.data import recommend_examples, search_examples
from onesearch.model.train import autocast, evaluate, use_amp
from pipelines import tracking, train_generator

JOB = "bench-generative"


@dataclass(frozen=True)
class Config:
    """Settings of the bench-generative job."""

    model: str = ""
    """A bundle folder or MLflow URI (runs:/<id>/generator) to evaluate on the dataset it records; empty = train
    one first."""
    trainer: train_generator.Config = field(default_factory=train_generator.Config)
    """Training settings (used when --model is empty; with --model, --trainer.dataset only locates a dataset given
    by path when the bundle's recorded name does not resolve)."""
    beam: int = BEAM
    """Beam width of the evaluation."""
    qps_beams: tuple[int, ...] = (1, 20, 100)
    """Beam widths at which decoding throughput is measured."""
    qps_batch: int = 256
    """Requests per batch when measuring throughput."""
    qps_requests: int = 1024
    """Test requests decoded per throughput measurement."""
    split: str = "test"
    """Split to evaluate: test or valid."""
    precision: str = "fp32"
    """Decoding precision of the evaluation and the throughput runs: fp32, bf16 (weights in bfloat16; scores and
    softmaxes in float32), or auto (bf16 where the device multiplies it natively)."""
    compile: bool = False
    """Compile the encoder and the decoder's per-level step with torch.compile for the evaluation and throughput
    runs (the first batch of each shape compiles: tens of seconds on a 2-core CPU)."""


PRESETS = {
    "base": Config(),
    "tiny": Config(trainer=train_generator.PRESETS["tiny"], beam=10, qps_beams=(1, 10), qps_requests=64),
    "small": Config(trainer=train_generator.PRESETS["small"]),
}


def _qps(model, trie, ex, beam: int, batch: int, device, amp: bool, passes: int = 3) -> float:
    """Requests/s of beam search over ``ex`` in batches: the median of ``passes`` timed passes after one warm-up
    pass (which compiles a compiled model's graphs)."""
    n = ex.size
    batches = [ex.batch(np.arange(s, min(s + batch, n))).to(device) for s in range(0, n, batch)]
    times = []
    for _ in range(1 + passes):
        t0 = time.perf_counter()
        for b in batches:
            with autocast(device, amp):
                beam_search(model, b, trie, beam=beam, k=min(beam, K))
        times.append(time.perf_counter() - t0)
    return n / float(np.median(times[1:]))


def _dataset_of(meta: dict, given: str, model_path: str):
    """The dataset a bundle was trained on. Tried in turn: where it was read from (recorded), ``given``, its recorded
    name; the first that loads, is named like the training data and (when the bundle records one) has its
    fingerprint is used. A bundle that records no dataset is evaluated on ``given``."""
    name = meta.get("dataset")
    if name is None:
        return load_dataset(given)
    want, tried = meta.get("data_fingerprint"), []
    for spec in dict.fromkeys(s for s in (meta.get("dataset_source"), given, name) if s):
        try:
            ds = load_dataset(spec)
        except (FileNotFoundError, ValueError) as e:
            tried.append(f"{spec}: {e}")
            continue
        if ds.name != name:
            tried.append(f"{spec}: that is {ds.name!r}")
        elif want is not None and ds.fingerprint() != want:
            tried.append(f"{spec}: named {name!r} but holds other rows (its fingerprint differs)")
        else:
            return ds
    raise ValueError(
        f"{model_path}: the model was trained on {name!r}, which is not found here ({'; '.join(tried)}); "
        "pass the folder it was trained on as --trainer.dataset"
    )


def main(cfg: Config) -> dict:
    tcfg = cfg.trainer
    if cfg.beam < 10:
        raise ValueError(f"--beam must be at least 10 (recall@10 and ndcg@10 are reported), got {cfg.beam}")
    if cfg.split not in ("test", "valid"):
        raise ValueError(f"--split must be test or valid, got {cfg.split!r}")
    check_precision(cfg.precision, "--precision")
    with tracking.job_run(JOB, cfg) as run:
        trained = None
        if not cfg.model:
            trained = train_generator.main_nested(tcfg)
            model_path = trained["model_uri"]
        else:
            model_path = tracking.resolve_model(cfg.model)
        device = pick_device(tcfg.train.device)
        amp = use_amp(device, tcfg.train.amp)
        bundle = GeneratorBundle.load(model_path, device=device)
        model = for_decoding(bundle.model, cfg.precision, cfg.compile)
        precision = model.decoding["precision"]
        meta = bundle.meta
        task = meta.get("task", tcfg.task)
        ds = _dataset_of(meta, tcfg.dataset, model_path)
        mc = bundle.model.cfg
        if task == "search":
            splits = search_examples(ds, bundle.table, bundle.vocab, mc.max_history, mc.max_query_tokens)
        else:
            splits = recommend_examples(ds, bundle.table, mc.max_history, mc.max_query_tokens)
        ex = getattr(splits, cfg.split)
        print(
            f"[{JOB}] evaluating {ex.size} {cfg.split} requests of {ds.name} {task}",
            file=sys.stderr,
            flush=True,
        )
        ev = evaluate(
            model, ex, bundle.trie, beam=cfg.beam, k=cfg.beam, device=device, amp=amp, progress=True
        )
        pick = np.sort(
            np.random.default_rng(0).choice(ex.size, min(cfg.qps_requests, ex.size), replace=False)
        )
        sample = ex.take(pick)  # a seeded sample for the unconstrained comparison and the throughput runs
        free = evaluate(
            model,
            sample,
            bundle.trie,
            beam=cfg.beam,
            k=cfg.beam,
            device=device,
            amp=amp,
            constrained=False,
        )
        trie = bundle.trie
        with torch.inference_mode():
            qps = {b: _qps(model, trie, sample, b, cfg.qps_batch, device, amp) for b in cfg.qps_beams}
            plain = precision != "fp32" or cfg.compile
            qps_fp32 = (
                _qps(bundle.model, trie, sample, 20, cfg.qps_batch, device, amp) if plain else qps.get(20)
            )
        m = ev.metrics
        same = target_ranks(ev.items[pick], sample.target)
        result = {
            "dataset": ds.name,
            "task": task,
            "tokenizer": meta.get("tokenizer", tcfg.tokenizer),
            "split": cfg.split,
            "requests": ex.size,
            "params": bundle.model.n_params(),
            "train_minutes": meta.get("train_minutes"),
            **{k: m[k] for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr@10")},
            "recall@20": m.get("recall@20"),
            "valid_rate": m["valid_rate"],
            "unconstrained_valid_rate": free.metrics["valid_rate"],
            "unconstrained_recall@10": free.metrics["recall@10"],
            "constrained_recall@10_same_sample": float(((same >= 1) & (same <= 10)).mean()),
            "decode_qps": qps.get(20, next(iter(qps.values()))),
            "decode_qps_by_beam": {str(b): q for b, q in qps.items()},
            "decode_qps_fp32": qps_fp32,
            "decode_batch": cfg.qps_batch,
            "precision": precision,
            "compiled": cfg.compile,
            "beam": cfg.beam,
            "device": str(device),
            "model_uri": model_path,
            "mlflow_run_id": run.info.run_id,
        }
        tracking.log_metrics(result)
        tracking.log_json(result, "bench.json")
        return result
