"""Supervised training of the generator: teacher-forced cross-entropy over SID codes, early-stopped on recall@10.

- AdamW, linear warm-up then cosine decay to 5% of the peak rate over ``epochs`` × steps per epoch.
- Each epoch shuffles with ``default_rng([seed, epoch])`` and each step seeds torch (dropout) from ``(seed, step)``,
  so a run resumed from its state file (written after every evaluation, on a time limit and on Ctrl-C) continues
  exactly where it stopped, mid-epoch included.
- Validation: constrained beam search on the validation examples every ``eval_every`` epochs; the best weights
  by recall@10 are kept; ``patience`` evaluations without improvement stop training.
- ``ema`` > 0 keeps an exponential moving average of the weights (:func:`ema_update`); validation then decodes
  with the averaged weights, and those are the ones kept and returned.
- Device: CUDA when available (``device='auto'``), else CPU; bf16 autocast on CUDA (``amp='auto'``; ``on`` forces
  it on CPU too, where it measured slower than fp32 for these sizes).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from onesearch.decode import SIDTrie
from onesearch.device import pick_device
from onesearch.io import atomic_write
from onesearch.metrics import ranking_metrics, target_ranks
from onesearch.model.beam import BEAM, beam_search
from onesearch.model.data import Examples, Splits
from onesearch.model.generator import Generator, config_as

STATE_FILE = "trainer_state.pt"
"""Resume file inside the run's work folder (weights, optimizer, position, best weights, history)."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings of generator training."""

    batch_size: int = 256
    """Examples per optimiser step."""
    lr: float = 2e-3
    """Peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to biases, norms and embeddings)."""
    warmup_steps: int = 300
    """Linear warm-up steps."""
    epochs: int = 30
    """Maximum passes over the training examples (the cosine schedule spans them)."""
    max_minutes: float = 0.0
    """Stop after this much training time, keeping the best weights (0 = no limit)."""
    max_steps: int = 0
    """Train at most this many optimiser steps; the cosine schedule then spans them (0 = no limit: ``epochs``)."""
    length_buckets: int = 50
    """Sort each run of this many batches by history length, then shuffle the batches (0 = plain shuffle):
    batches of similar lengths carry little padding, which the model then skips."""
    eval_every: float = 1.0
    """Evaluate every this many epochs (fractions allowed)."""
    patience: int = 4
    """Stop after this many evaluations without a better validation recall@10 (0 = never)."""
    eval_beam: int = BEAM
    """Beam width of validation decoding."""
    eval_examples: int = 0
    """Validate on a fixed random sample of this many examples (0 = all of them)."""
    eval_dense_weight: float = 2.0
    """A model with a dense head is validated while training (and its best weights kept) with the combined score at
    this dense weight, since it is served with its dense head; the weight it is served with is picked on validation
    after training. 0 = by the beam alone (which kept epoch-12 weights of a 20-epoch Beauty run whose dense head
    was still improving)."""
    eval_batch: int = 256
    """Requests per decoding batch."""
    label_smoothing: float = 0.0
    """Label smoothing of the code cross-entropy."""
    ema: float = 0.0
    """Decay per step of an exponential moving average of the weights, in [0, 1) (0 = off); when on, validation,
    early stopping and the returned model use the averaged weights."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda, cuda:N."""
    amp: str = "auto"
    """bf16 autocast: auto (on CUDA with bf16 support), on, off."""
    seed: int = 0
    """Seed of initialisation, shuffling and dropout."""
    progress: bool = True
    """Show a progress bar on stderr."""


def _dense_weight(model: Generator, weight: float):
    """Within the block a model with a dense head ranks with the combined score at ``weight``; its own weight
    after. A model without one is left as it is."""
    return config_as(model, dense_weight=weight) if model.cfg.dense_head else contextlib.nullcontext()


def use_amp(device: torch.device, amp: str) -> bool:
    if amp not in ("auto", "on", "off"):
        raise ValueError(f"amp must be auto, on or off, got {amp!r}")
    if amp != "auto":
        return amp == "on"
    # CPU: measured slower than fp32 on these small matrices (324 vs 281 ms per step on the 2-core AVX-512-BF16
    # machine), so auto means CUDA only.
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    items: np.ndarray
    """(N, K) SID-table rows returned, best first (-1 = no item)."""
    scores: np.ndarray


def evaluate(
    model: Generator,
    examples: Examples,
    trie: SIDTrie,
    *,
    beam: int = BEAM,
    k: int | None = None,
    batch_size: int = 256,
    device: torch.device | None = None,
    amp: bool = False,
    constrained: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Decode every example and score the target's rank: recall/ndcg@5,10, mrr@10, valid_rate, decode_qps."""
    if examples.size == 0:
        raise ValueError("no examples to evaluate")
    device = device or next(model.parameters()).device
    k = min(beam, 50) if k is None else k
    model.eval()
    trie_d = trie.to(device)
    order = np.argsort(
        examples.history_lengths(), kind="stable"
    )  # similar lengths share a batch: less padding
    it = np.zeros((examples.size, k), dtype=np.int64)
    sc = np.zeros((examples.size, k), dtype=np.float32)
    t0 = time.perf_counter()
    starts = range(0, examples.size, batch_size)
    for s in tqdm(
        starts, desc="decode", disable=not (progress and sys.stderr.isatty()), file=sys.stderr, leave=False
    ):
        idx = order[s : s + batch_size]
        b = examples.batch(idx).to(device)
        with autocast(device, amp):
            out = beam_search(model, b, trie_d, beam=beam, k=k, constrained=constrained)
        it[idx] = out.items.cpu().numpy()
        sc[idx] = out.scores.float().cpu().numpy()
    seconds = time.perf_counter() - t0
    ks = tuple(sorted({x for x in (1, 5, 10, 20, 50) if x <= k} | {k}))
    metrics = ranking_metrics(target_ranks(it, examples.target), ks=ks)
    returned = np.isfinite(sc)
    metrics["valid_rate"] = float((it[returned] >= 0).mean()) if returned.any() else 0.0
    metrics["decode_qps"] = examples.size / seconds
    return EvalResult(metrics, it, sc)


DENSE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""The combined score's dense weights tried on validation after training a model with a dense head."""


def validation_sample(valid: Examples, cfg: TrainConfig) -> Examples:
    """The fixed validation sample of ``cfg.eval_examples`` examples (all when 0) that training validates on."""
    if cfg.eval_examples and cfg.eval_examples < valid.size:
        return valid.take(
            np.sort(np.random.default_rng(cfg.seed).choice(valid.size, cfg.eval_examples, False))
        )
    return valid


def tune_dense_weight(
    model: Generator,
    valid: Examples,
    trie: SIDTrie,
    cfg: TrainConfig,
    grid: tuple[float, ...] = DENSE_WEIGHTS,
) -> tuple[float, dict[float, dict[str, float]]]:
    """Pick the dense head's weight in the combined score on the validation sample (best recall@10, then
    ndcg@10), set it in the model's config and return it with every weight's metrics."""
    if not model.cfg.dense_head:
        raise ValueError("tune_dense_weight needs a model with a dense head")
    sample = validation_sample(valid, cfg)
    device = next(model.parameters()).device
    amp = use_amp(device, cfg.amp)
    out = {}
    for w in grid:
        with _dense_weight(model, float(w)):
            m = evaluate(model, sample, trie, beam=cfg.eval_beam, k=min(cfg.eval_beam, 10),
                         batch_size=cfg.eval_batch, device=device, amp=amp).metrics  # fmt: skip
        out[float(w)] = {k: m[k] for k in ("recall@10", "ndcg@10", "mrr@10")}
    best = max(out, key=lambda w: (out[w]["recall@10"], out[w]["ndcg@10"], -w))
    model.cfg = replace(model.cfg, dense_weight=best)
    return best, out


POPULARITY_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""The popularity prior's weights tried on validation after training a model that holds the prior."""


def largest_within_one_se(hits: dict[float, np.ndarray]) -> tuple[float, dict[float, dict[str, float]]]:
    """The one-standard-error rule over paired per-request hits (0/1 arrays over the same requests, one per
    weight): the best weight by mean hit rate, then the largest weight whose mean difference to the best is within
    one standard error of that paired difference. When every weight gives the very same hits, validation cannot
    tell them apart at all and the smallest is returned. Returns the choice and, per weight, ``recall``, ``diff``
    (its rate minus the best's) and ``se``."""
    if not hits:
        raise ValueError("no weights to choose from")
    rate = {w: float(np.mean(h)) for w, h in hits.items()}
    best = max(rate, key=lambda w: (rate[w], -w))
    first = np.asarray(next(iter(hits.values())))
    if all(np.array_equal(np.asarray(h), first) for h in hits.values()):
        # the weights change no hit at all: validation says nothing, so nothing is changed (the smallest weight)
        zero = {"recall": rate[best], "diff": 0.0, "se": 0.0}
        return min(hits), {w: dict(zero) for w in hits}
    out = {}
    for w, h in hits.items():
        d = np.asarray(h, dtype=np.float64) - np.asarray(hits[best], dtype=np.float64)
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        out[w] = {"recall": rate[w], "diff": float(d.mean()), "se": se}
    pick = max(w for w in hits if out[w]["diff"] >= -out[w]["se"])
    return pick, out


def tune_popularity_weight(
    model: Generator,
    valid: Examples,
    trie: SIDTrie,
    cfg: TrainConfig,
    grid: tuple[float, ...] = POPULARITY_WEIGHTS,
) -> tuple[float, dict[float, dict[str, float]]]:
    """Pick the popularity prior's weight on the validation sample: the largest weight whose recall@10 is within
    one paired standard error of the best weight's (:func:`largest_within_one_se`), i.e. the least popularity-led
    ranking that validation cannot tell from the most accurate one. Sets it in the model's config.

    Decodes at a beam of at least 20 (twice the 10 results judged), so the prior can bring in items from beyond the
    top 10; a grid whose weights change no hit keeps weight 0."""
    if not model.cfg.popularity_prior:
        raise ValueError("tune_popularity_weight needs a model with the popularity prior")
    sample = validation_sample(valid, cfg)
    device = next(model.parameters()).device
    amp = use_amp(device, cfg.amp)
    hits, ndcg = {}, {}
    for w in grid:
        model.cfg = replace(model.cfg, popularity_weight=float(w))
        res = evaluate(model, sample, trie, beam=max(cfg.eval_beam, 20), k=10, batch_size=cfg.eval_batch,
                       device=device, amp=amp)  # fmt: skip
        hits[float(w)] = (res.items == sample.target[:, None]).any(1).astype(np.float64)
        ndcg[float(w)] = res.metrics["ndcg@10"]
    best, table = largest_within_one_se(hits)
    for w in table:
        table[w]["ndcg@10"] = ndcg[w]
    model.cfg = replace(model.cfg, popularity_weight=best)
    return best, table


TAIL_BOOSTS = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05)
"""The tail boosts tried on validation (:func:`tune_exposure`)."""
COLD_BOOSTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
"""The cold boosts tried on validation on top of the chosen tail boost (:func:`tune_exposure`)."""
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
"""The score temperatures tried when calibrating the candidates' probabilities on validation. The combined score
of a dense-head model scales with its dense weight (up to 32), so the grid reaches well beyond 1: Scientific
search picked 4 at dense weight 2, and 32, the old grid's top, at dense weight 16."""
TAIL_BUDGET = 0.01
"""The share of validation recall@10 that :func:`tune_exposure` may give up for long-tail and new-item exposure."""


def calibrate_temperature(
    items: np.ndarray, scores: np.ndarray, target: np.ndarray, grid: tuple[float, ...] = TEMPERATURES
) -> tuple[float, dict[float, float]]:
    """The temperature T of ``softmax(scores / T)`` over each request's candidates (B, n) (-1 / -inf: none) with the
    least mean negative log-likelihood of the target, over the requests whose target is a candidate; with the NLL
    of every T. No request with its target among the candidates gives T = 1."""
    hit = (items == target[:, None]) & (items >= 0) & np.isfinite(scores)
    rows = hit.any(1)
    if not rows.any():
        return 1.0, {}
    s, h = scores[rows].astype(np.float64), hit[rows]
    live = np.isfinite(s)
    nll = {}
    for t in grid:
        z = np.where(live, s / t, -np.inf)
        z = z - z.max(1, keepdims=True)
        lse = np.log(np.where(live, np.exp(z), 0.0).sum(1))
        nll[float(t)] = float((lse - z[h]).mean())
    return min(nll, key=lambda t: (nll[t], t)), nll


def largest_within_budget(recall: dict[float, float], budget: float) -> float:
    """The largest setting whose recall is at least ``1 − budget`` times the best setting's; the smallest setting
    when no setting has any hit (validation then says nothing)."""
    best = max(recall.values())
    if best <= 0:
        return min(recall)
    return max(k for k, r in recall.items() if r >= (1 - budget) * best)


@dataclass
class ExposureTuning:
    """What :func:`tune_exposure` set, and the validation figures it chose by."""

    tail_boost: float
    cold_boost: float
    score_temperature: float
    tail_grid: dict[float, dict[str, float]]
    """Per tail boost (cold boost 0): recall@10, ndcg@10, tail_share and cold_share of the top 10."""
    cold_grid: dict[float, dict[str, float]]
    """Per cold boost, on top of the chosen tail boost: the same figures and warm_recall@10."""


def exposure_meta(e: ExposureTuning) -> dict:
    """What a bundle records of :func:`tune_exposure` (JSON keys)."""
    return {
        "tail_boost": e.tail_boost,
        "cold_boost": e.cold_boost,
        "score_temperature": e.score_temperature,
        "tail_grid": {str(k): v for k, v in e.tail_grid.items()},
        "cold_grid": {str(k): v for k, v in e.cold_grid.items()},
    }


def tune_exposure(
    model: Generator,
    valid: Examples,
    trie: SIDTrie,
    cfg: TrainConfig,
    budget: float = TAIL_BUDGET,
    tail_grid: tuple[float, ...] = TAIL_BOOSTS,
    cold_grid: tuple[float, ...] = COLD_BOOSTS,
) -> ExposureTuning:
    """Set the model's long-tail and new-item exposure (``tail_boost``, ``cold_boost``, ``score_temperature``) on
    the validation sample, within ``budget``.

    The temperature is calibrated first (:func:`calibrate_temperature`) on the candidates decoded without any
    boost. Then the tail boost is the largest of ``tail_grid`` whose recall@10 is at least ``1 − budget`` times the
    best tail boost's (the most long-tail exposure that costs at most that share of the hits), and, with it, the
    cold boost the largest of ``cold_grid`` whose ``warm_recall@10`` (over the requests for items bought in
    training) is at least ``1 − budget`` times the best cold boost's: new items may take at most that share of the
    hits of the requests that are not for them, whatever they win themselves. Decodes at a beam of at least 20,
    as :func:`tune_popularity_weight` does. ``tail_share`` and ``cold_share`` are the shares of the top-10 slots
    that hold long-tail or cold items, and cold items."""
    if not model.cfg.popularity_prior:
        raise ValueError("tune_exposure needs a model with the popularity prior (the purchase counts)")
    if not 0 <= budget < 1:
        raise ValueError(f"budget must be in [0, 1), got {budget}")
    if 0.0 not in tail_grid or 0.0 not in cold_grid:
        raise ValueError(f"both grids must hold 0 (no boost), got {tail_grid}, {cold_grid}")
    sample = validation_sample(valid, cfg)
    device = next(model.parameters()).device
    amp = use_amp(device, cfg.amp)
    beam = max(cfg.eval_beam, 20)
    tail = model.item_tail().cpu().numpy()
    cold = (model.item_log_pop == 0).cpu().numpy()
    warm = ~cold[sample.target]  # requests for an item bought in training

    def run(tail_boost: float, cold_boost: float, temperature: float) -> dict[str, float]:
        model.cfg = replace(
            model.cfg, tail_boost=tail_boost, cold_boost=cold_boost, score_temperature=temperature
        )
        top = evaluate(model, sample, trie, beam=beam, k=10, batch_size=cfg.eval_batch, device=device,
                       amp=amp).items  # fmt: skip
        filled = top[top >= 0]
        hit = (top == sample.target[:, None]).any(1)
        return {
            "recall@10": float(hit.mean()),
            "warm_recall@10": float(hit[warm].mean()) if warm.any() else 0.0,
            "ndcg@10": float(ranking_metrics(target_ranks(top, sample.target), ks=(10,))["ndcg@10"]),
            "tail_share": float(tail[filled].mean()) if filled.size else 0.0,
            "cold_share": float(cold[filled].mean()) if filled.size else 0.0,
        }

    model.cfg = replace(model.cfg, tail_boost=0.0, cold_boost=0.0)
    plain = evaluate(
        model, sample, trie, beam=beam, k=beam, batch_size=cfg.eval_batch, device=device, amp=amp
    )
    t, _ = calibrate_temperature(plain.items, plain.scores, sample.target)
    tails = {float(b): run(float(b), 0.0, t) for b in tail_grid}
    tb = largest_within_budget({b: r["recall@10"] for b, r in tails.items()}, budget)
    colds = {float(c): tails[tb] if c == 0 else run(tb, float(c), t) for c in cold_grid}
    cb = largest_within_budget({c: r["warm_recall@10"] for c, r in colds.items()}, budget)
    model.cfg = replace(model.cfg, tail_boost=tb, cold_boost=cb, score_temperature=t)
    return ExposureTuning(tb, cb, t, tails, colds)


def _param_groups(model: Generator, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and "emb" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def epoch_batches(
    n: int, batch_size: int, lengths: np.ndarray, rng: np.random.Generator, buckets: int
) -> list[np.ndarray]:
    """The batches of one epoch: a permutation, cut into runs of ``buckets`` batches that are each sorted by
    history length, then the batches in random order. The count depends on ``n`` only, never on the draw."""
    perm = rng.permutation(n)
    if buckets <= 1:
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    chunk = buckets * batch_size
    batches = []
    for c in range(0, n, chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def batches_per_epoch(n: int, batch_size: int, buckets: int) -> int:
    """How many batches :func:`epoch_batches` makes: each run of ``buckets`` batches ends its own last batch."""
    if buckets <= 1:
        return math.ceil(n / batch_size)
    chunk = buckets * batch_size
    full, rest = divmod(n, chunk)
    return full * buckets + math.ceil(rest / batch_size)


def ema_update(avg: list[torch.Tensor], params: list[torch.Tensor], decay: float, step: int) -> None:
    """One step of the weight average, in place: ``avg = d·avg + (1 - d)·params`` with
    ``d = min(decay, (1 + step) / (10 + step))``; ``step`` counts the optimiser steps done before this one, so the
    first updates follow the fast-moving early weights instead of holding on to the initialisation."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(avg, params, 1.0 - d)


@contextlib.contextmanager
def swapped_weights(params: list[torch.Tensor], weights: list[torch.Tensor] | None):
    """Inside the block ``params`` hold ``weights`` (nothing changes when ``weights`` is None); restored after."""
    if weights is None:
        yield
        return
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, weights)
    try:
        yield
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)


class _Loss(torch.nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it (its gradient hooks fire
    on the backward of what forward returns)."""

    def __init__(self, model: Generator) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, label_smoothing: float) -> torch.Tensor:
        return self.model.loss(batch, label_smoothing=label_smoothing)


def distributed() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group in force, (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0.05 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))


@dataclass
class TrainResult:
    model: Generator
    """The model with the best validation weights loaded."""
    best: dict[str, float]
    """Validation metrics of the best weights."""
    history: list[dict] = field(default_factory=list)
    """One entry per evaluation: epoch, step, train_loss, validation metrics, minutes."""
    steps: int = 0
    minutes: float = 0.0
    stopped: str = ""
    """Why training ended: epochs, steps (``max_steps``), patience, time, or interrupted."""


def train(
    model: Generator,
    splits: Splits,
    trie: SIDTrie,
    cfg: TrainConfig,
    workdir: str | Path | None = None,
    on_eval=None,
) -> TrainResult:
    """Train ``model`` on ``splits.train``, early-stopping on ``splits.valid``; resumes from ``workdir`` if it
    holds a state file. ``on_eval(entry)`` is called after each evaluation (the jobs log it to MLflow).

    Under torch.distributed (``torchrun``; gloo on CPU, nccl on CUDA) every process takes its share of each global
    batch of ``cfg.batch_size`` and DistributedDataParallel averages the gradients, each share's loss weighted by
    its size, so the step is the single-process step on the whole batch; every process evaluates the same
    validation sample and stops together; only rank 0 writes the state file."""
    train_ex = splits.train
    if train_ex.size == 0:
        raise ValueError(f"no training examples for task {splits.task!r}")
    if splits.valid.size == 0:
        raise ValueError(f"no validation examples for task {splits.task!r}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {cfg.ema}")
    if not cfg.eval_dense_weight >= 0:
        raise ValueError(f"eval_dense_weight must be >= 0, got {cfg.eval_dense_weight}")
    device = pick_device(cfg.device)
    amp = use_amp(device, cfg.amp)
    model.to(device)
    rank, world = distributed()
    if world > 1 and cfg.batch_size < world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is smaller than the {world} processes sharing each batch"
        )
    step_loss = _Loss(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # broadcasts rank 0's weights; a static graph tolerates parameters a configuration leaves unused
        step_loss = DistributedDataParallel(step_loss, static_graph=True)
    codes = model.item_codes  # on device; the last row is padding, targets never index it
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    lengths = train_ex.history_lengths()
    steps_per_epoch = batches_per_epoch(train_ex.size, cfg.batch_size, cfg.length_buckets)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {cfg.max_steps}")
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    eval_steps = max(1, round(cfg.eval_every * steps_per_epoch))
    valid = validation_sample(splits.valid, cfg)

    eval_k = min(cfg.eval_beam, 10)
    key = f"recall@{eval_k}"  # the early-stopping metric
    state_path = Path(workdir) / STATE_FILE if workdir else None
    step, best_score, bad_evals, minutes_before = 0, -1.0, 0, 0.0
    history: list[dict] = []
    best_state = None
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params] if cfg.ema > 0 else None
    if state_path is not None and state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step, best_score, bad_evals = int(st["step"]), float(st["best_score"]), int(st["bad_evals"])
        minutes_before = float(st["minutes"])
        history = [dict(h) for h in st["history"]]
        best_state = st["best_model"]
        if ema is not None:
            if "ema" not in st:
                raise ValueError(f"{state_path}: the saved run kept no weight average (ema); use --no-resume")
            with torch.no_grad():
                torch._foreach_copy_(ema, [t.to(device) for t in st["ema"]])
        print(f"[train] resumed from {state_path} at step {step}", file=sys.stderr, flush=True)

    def save_state() -> None:
        if state_path is None or rank != 0:
            return
        st = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "step": step,
            "best_score": best_score,
            "bad_evals": bad_evals,
            "minutes": minutes_before + (time.perf_counter() - t0) / 60,
            "history": history,
            "best_model": best_state,
        }
        if ema is not None:
            st["ema"] = [t.detach().cpu() for t in ema]
        state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, lambda p: torch.save(st, p))

    def run_eval(loss_avg: float) -> bool:
        """Evaluate, keep the best weights; True when patience ran out."""
        nonlocal best_score, bad_evals, best_state
        with swapped_weights(params, ema), _dense_weight(model, cfg.eval_dense_weight):
            ev = evaluate(
                model,
                valid,
                trie,
                beam=cfg.eval_beam,
                k=eval_k,
                batch_size=cfg.eval_batch,
                device=device,
                amp=amp,
            )
            score = ev.metrics[key]
            if score > best_score:  # the weights evaluated (the average, when on)
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        entry = {
            "epoch": step / steps_per_epoch,
            "step": step,
            "train_loss": loss_avg,
            **{f"val_{k}": v for k, v in ev.metrics.items()},
            "minutes": minutes_before + (time.perf_counter() - t0) / 60,
        }
        history.append(entry)
        if score > best_score:
            best_score, bad_evals = score, 0
        else:
            bad_evals += 1
        if on_eval is not None and rank == 0:
            on_eval(entry)
        if rank == 0:
            bar.write(
                f"[train] epoch {entry['epoch']:.2f} step {step} loss {loss_avg:.4f} "
                f"val {key} {score:.4f} ndcg@{eval_k} {ev.metrics[f'ndcg@{eval_k}']:.4f} (best {best_score:.4f})",
                file=sys.stderr,
            )
        model.train()
        return cfg.patience > 0 and bad_evals >= cfg.patience

    t0 = time.perf_counter()
    stopped = "steps" if total < cfg.epochs * steps_per_epoch else "epochs"
    bar = tqdm(
        total=total,
        initial=step,
        desc="train",
        disable=not cfg.progress or rank != 0,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    loss_sum, loss_n = 0.0, 0
    model.train()
    try:
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            rng = np.random.default_rng([cfg.seed, epoch])
            batches = epoch_batches(train_ex.size, cfg.batch_size, lengths, rng, cfg.length_buckets)
            for b_i in range(pos, steps_per_epoch):
                torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout of step ``step``, resumable anywhere
                idx = batches[b_i]
                share = np.array_split(idx, world)[rank] if world > 1 else idx
                batch = train_ex.batch(share, None).to(device)
                rows = torch.from_numpy(train_ex.target[share]).to(device)
                batch = batch._replace(target=codes[rows], target_item=rows)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(step, cfg.warmup_steps, total)
                with autocast(device, amp):
                    loss = step_loss(batch, cfg.label_smoothing)
                    if world > 1:  # DDP averages over processes: weigh each share's mean by its size
                        loss = loss * (len(share) * world / len(idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if ema is not None:
                    ema_update(ema, params, cfg.ema, step)
                step += 1
                loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
                out_of_time = (
                    cfg.max_minutes > 0
                    and minutes_before + (time.perf_counter() - t0) / 60 >= cfg.max_minutes
                )
                if world > 1:  # every process stops at the same step: the first out of time decides
                    flag = torch.tensor([float(out_of_time)], device=device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    out_of_time = bool(flag.item())
                if step % eval_steps == 0 or step == total or out_of_time:
                    done = run_eval(loss_sum / loss_n)
                    loss_sum, loss_n = 0.0, 0
                    save_state()
                    if done or out_of_time or step >= total:
                        stopped = "patience" if done else "time" if out_of_time else stopped
                        break
            else:
                continue
            break
    except KeyboardInterrupt:
        stopped = "interrupted"
        save_state()
        print(f"[train] interrupted at step {step}; state saved to {state_path}", file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    best = max(history, key=lambda h: h[f"val_{key}"]) if history else {}
    return TrainResult(
        model,
        {k[4:]: v for k, v in best.items() if k.startswith("val_")},
        history,
        step,
        minutes_before + (time.perf_counter() - t0) / 60,
        stopped,
    )
