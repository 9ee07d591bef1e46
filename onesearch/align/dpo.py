"""List-wise preference optimisation of the generator (one preferred item against several rejected ones).

A preference list is one request with items ``y_0`` (preferred) and ``y_1..y_R`` (rejected; fewer are padded
and masked). With the sequence log-probability ``log π(y)`` of an item = the sum over its SID levels of the
decoder's log-probability of each code (teacher-forced, :func:`sequence_logprob`) and a frozen reference ``π_ref``
(the SFT model), the loss of a list is the Plackett-Luce / DPO negative log-likelihood of the preferred item
coming first:

    z_j  = β · (log π(y_j) − log π_ref(y_j))
    loss = −log softmax_j(z)_0 = logsumexp_j z_j − z_0

With one rejected item it is DPO's ``−log σ(z_0 − z_1)``. An anchor on random training requests keeps what the
model already retrieves (hr@50): ``anchor_weight`` × the KL divergence of the policy's code distributions from the
reference's (``anchor = kl``) or × the supervised cross-entropy of the targets (``anchor = sft``).

Lists come from two phases (:func:`reward_lists`, :func:`level_lists`): the SFT model's own beams ranked by the
reward model, then the logged interaction levels. By default only lists whose order the reference disagrees with
are kept (some rejected item scored at least as high as the preferred one): the others teach nothing new.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from onesearch.align.levels import CLICKED, PURCHASED_ELSEWHERE
from onesearch.decode import SIDTrie
from onesearch.metrics import ranking_metrics, target_ranks
from onesearch.model.data import Examples
from onesearch.model.generator import Batch, Generator
from onesearch.model.train import _param_groups, evaluate


@dataclass(frozen=True)
class AlignConfig:
    """Settings of preference alignment (reward model, preference lists, list-wise DPO).

    The jobs that nest it (align, bench-search) do so as their ``align`` section: field ``lr`` is the option
    ``--align.lr``."""

    beta: float = 2.0
    """DPO temperature β on the log-probability ratios."""
    lr: float = 5e-5
    """Learning rate of the alignment (AdamW, constant after a short warm-up)."""
    batch: int = 64
    """Preference lists per optimiser step."""
    phase1_steps: int = 150
    """Steps on the reward-ranked beam lists (phase 1; 0 = skip the phase)."""
    phase2_steps: int = 50
    """Steps on the interaction-level lists (phase 2; 0 = skip the phase)."""
    anchor: str = "kl"
    """Anchor added to the DPO loss on random training requests: kl (KL divergence of the policy's code
    distributions from the reference's, teacher-forced on the targets) or sft (the policy's own training loss on
    the targets: the codes' cross-entropy, plus its dense head's where it has one)."""
    anchor_weight: float = 5.0
    """Weight of the anchor (0 = pure DPO)."""
    rejected: int = 7
    """Rejected items per list (at most)."""
    list_beam: int = 20
    """Beam width of the SFT model's lists (phase 1) and of its hard negatives (phase 2)."""
    list_requests: int = 0
    """Training requests sampled for the lists (0 = all)."""
    reward_margin: float = 0.0
    """Phase 1: a rejected beam's reward is below the preferred one's by more than this."""
    disagreeing_only: bool = True
    """Keep only lists whose order the reference model disagrees with (a rejected item scored at least as high)."""
    beam_negatives: bool = True
    """Phase 2: the reference's beams ranked above the preferred item and absent from the request's log are
    rejected too (hard negatives)."""
    reward_rounds: int = 200
    """Boosting rounds of each reward LightGBM (click, purchase)."""
    reward_leaves: int = 31
    """LightGBM leaves per tree of the reward model."""
    reward_objective: str = "lambdarank"
    """How the reward's propensities learn: lambdarank (order within a request) or binary (classifiers)."""
    click_weight: float = 0.5
    """Reward = s_purchase + click_weight · s_click + relevance_weight · relevance (s: propensity scores)."""
    relevance_weight: float = 1.0
    """Weight of the query-item text relevance (MiniLM cosine) in the reward."""
    same_category: int = 5
    """Sampled same-category, never-shown items per request (level same_category)."""
    random_negatives: int = 5
    """Sampled other-category items per request (level random)."""
    purchased_elsewhere: int = 3
    """Sampled same-category items purchased outside the request (level purchased_elsewhere)."""
    retrieved_negatives: int = 50
    """For requests with no logged impressions (the Amazon sets): this many of the cascade's recall candidates per
    request (a uniform sample of them) stand in for level shown, the reward model's hard negatives (0 = none)."""
    eval_every: int = 25
    """Validate every this many steps (and after each phase)."""
    eval_examples: int = 2000
    """Validation requests decoded per evaluation (a fixed seeded sample; 0 = all)."""
    eval_beam: int = 50
    """Beam width of validation decoding (at least 50: hr@50 guards the selection)."""
    hr_tolerance: float = 0.01
    """Keep the best validation ndcg@10 among evaluations whose recall@50 is within this relative drop of the SFT
    model's (the best ndcg@10 overall when none is)."""
    seed: int = 0
    """Seed of the request sample, the level sampling and the batch order."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        checks = [
            ("beta", self.beta > 0, "> 0"),
            ("lr", self.lr > 0, "> 0"),
            ("batch", self.batch >= 1, ">= 1"),
            ("phase1_steps", self.phase1_steps >= 0, ">= 0"),
            ("phase2_steps", self.phase2_steps >= 0, ">= 0"),
            ("anchor_weight", self.anchor_weight >= 0, ">= 0"),
            ("anchor", self.anchor in ("kl", "sft"), "kl or sft"),
            ("reward_objective", self.reward_objective in ("lambdarank", "binary"), "lambdarank or binary"),
            ("rejected", self.rejected >= 1, ">= 1"),
            ("list_beam", self.list_beam >= 2, ">= 2"),
            ("list_requests", self.list_requests >= 0, ">= 0"),
            ("retrieved_negatives", self.retrieved_negatives >= 0, ">= 0"),
            ("eval_every", self.eval_every >= 1, ">= 1"),
            ("eval_beam", self.eval_beam >= 50, ">= 50"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(
                    f"align config: --align.{name.replace('_', '-')} must be {want}, got {getattr(self, name)}"
                )


PRESETS: dict[str, AlignConfig] = {
    "base": AlignConfig(),
    "tiny": AlignConfig(
        phase1_steps=6,
        phase2_steps=6,
        batch=16,
        rejected=3,
        list_beam=10,
        list_requests=200,
        reward_rounds=10,
        eval_every=5,
        eval_examples=100,
    ),
}


# ------------------------------------------------------------------------ loss
def listwise_dpo_loss(policy_logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Mean over lists of ``logsumexp_j z_j − z_0``, ``z = β (policy − ref)`` over the valid items of each list.

    ``policy_logp``, ``ref_logp``: (N, 1 + R) sequence log-probabilities, column 0 the preferred item;
    ``mask`` (N, 1 + R) bool, True for real items (column 0 must be True).
    """
    if policy_logp.shape != ref_logp.shape or policy_logp.shape != mask.shape:
        raise ValueError(
            f"shapes differ: policy {tuple(policy_logp.shape)}, ref {tuple(ref_logp.shape)}, mask {tuple(mask.shape)}"
        )
    if not bool(mask[:, 0].all()):
        raise ValueError("every list needs its preferred item (mask[:, 0] must be True)")
    z = beta * (policy_logp - ref_logp)
    z = z.masked_fill(~mask, float("-inf"))
    return (torch.logsumexp(z, dim=1) - z[:, 0]).mean()


def sequence_logprob(model: Generator, batch: Batch, rows: Tensor) -> Tensor:
    """(B, n) log-probability of each item's whole ID, ``Σ_l log p(c_l | c_<l, request)``, teacher-forced for all
    n items of each request at once (with gradients). ``rows`` (B, n) are SID-table rows; -1 (padding) scores the
    all-zero ID, which callers mask."""
    codes = model.item_codes[rows.masked_fill(rows < 0, model.n_items)]  # (B, n, L)
    return model.code_logprobs(model.encode(batch), codes).sum(-1)


@torch.no_grad()
def score_rows(model: Generator, examples: Examples, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, n) sequence log-probabilities of the SID-table rows (N, n) per example (-inf where a row is -1)."""
    model.eval()
    dev = next(model.parameters()).device
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    for s in range(0, examples.size, batch_size):
        idx = np.arange(s, min(s + batch_size, examples.size))
        b = examples.batch(idx).to(dev)
        r = torch.from_numpy(rows[idx]).long().to(dev)
        lp = sequence_logprob(model, b, r).cpu().numpy()
        out[idx] = np.where(rows[idx] >= 0, lp, -np.inf)
    return out


# ------------------------------------------------------------------------ lists
class PreferenceLists(NamedTuple):
    """M preference lists: a request each, its preferred item and up to R rejected ones."""

    examples: Examples
    """The M requests (targets are the SFT targets, used by the anchor only)."""
    items: np.ndarray
    """(M, 1 + R) int64 SID-table rows, column 0 preferred, -1 = padding."""
    ref_logp: np.ndarray
    """(M, 1 + R) float32 reference log-probabilities of the items (-inf at padding)."""

    @property
    def size(self) -> int:
        return int(self.items.shape[0])


def _assemble(
    examples: Examples, pref: np.ndarray, rej: list[np.ndarray], ref_pref: np.ndarray, ref_rej: list, R: int
) -> PreferenceLists:
    M = len(pref)
    items = np.full((M, 1 + R), -1, dtype=np.int64)
    ref = np.full((M, 1 + R), -np.inf, dtype=np.float32)
    items[:, 0], ref[:, 0] = pref, ref_pref
    for m in range(M):
        k = len(rej[m])
        items[m, 1 : 1 + k] = rej[m]
        ref[m, 1 : 1 + k] = ref_rej[m]
    return PreferenceLists(examples, items, ref)


def reward_lists(
    examples: Examples,
    beams: np.ndarray,
    beam_logp: np.ndarray,
    reward: np.ndarray,
    rejected: int,
    margin: float = 0.0,
    disagreeing_only: bool = True,
    protected: np.ndarray | None = None,
) -> PreferenceLists:
    """Phase-1 lists from the reference's beams (N, K) (best first, -1 = none), their log-probabilities and their
    rewards: the preferred item is the beam with the highest reward; rejected are the beams whose reward is lower
    by more than ``margin``, those the reference ranks highest first, never a ``protected`` one (N, K) bool (the
    request's logged clicks and purchases: the reward model is not trusted over the log). With
    ``disagreeing_only`` a list is kept only when the reference ranks a rejected beam above the preferred one."""
    keep, pref, rej, rp, rr = [], [], [], [], []
    for i in range(beams.shape[0]):
        ok = beams[i] >= 0
        if ok.sum() < 2:
            continue
        r = np.where(ok, reward[i], -np.inf)
        p = int(np.argmax(r))  # ties: the reference's order
        can_reject = ok if protected is None else ok & ~protected[i]
        worse = np.flatnonzero(can_reject & (r < r[p] - margin))  # beam order = the reference's order
        if not len(worse) or (disagreeing_only and worse[0] > p):
            continue
        worse = worse[:rejected]
        keep.append(i)
        pref.append(beams[i, p])
        rp.append(beam_logp[i, p])
        rej.append(beams[i, worse])
        rr.append(beam_logp[i, worse])
    return _assemble(examples.take(np.asarray(keep, dtype=np.int64)), np.asarray(pref, np.int64), rej,
                     np.asarray(rp, np.float32), rr, rejected)  # fmt: skip


def level_lists(
    examples: Examples,
    items: np.ndarray,
    levels: np.ndarray,
    item_logp: np.ndarray,
    rejected: int,
    beams: np.ndarray | None = None,
    beam_logp: np.ndarray | None = None,
    disagreeing_only: bool = True,
    targets: np.ndarray | None = None,
) -> PreferenceLists:
    """Phase-2 lists from logged levels: per request (N), its levelled items (N, M) (-1 = none), their levels
    and reference log-probabilities. The preferred item is the request's strongest of ``purchased`` / ``clicked``
    (requests with neither are skipped), its logged target (N,) among equals when ``targets`` are given; rejected
    are items of a lower level (``purchased_elsewhere`` only below a purchase), plus, with ``beams``, the
    reference's beams ranked above the preferred item that the log does not level; the reference's highest-scored
    first."""
    keep, pref, rej, rp, rr = [], [], [], [], []
    for i in range(items.shape[0]):
        ok = items[i] >= 0
        lv = np.where(ok, levels[i], -1)
        cand = np.flatnonzero(ok & (lv >= CLICKED) & (lv != PURCHASED_ELSEWHERE))
        if not len(cand):
            continue
        best = cand[lv[cand] == lv[cand].max()]
        is_t = np.flatnonzero(items[i, best] == targets[i]) if targets is not None else []
        p = best[is_t[0]] if len(is_t) else best[0]
        lower = np.flatnonzero(ok & (lv < lv[p]))
        r_items, r_logp = list(items[i, lower]), list(item_logp[i, lower])
        if beams is not None:
            known = set(items[i, ok].tolist())
            for b in range(beams.shape[1]):
                if beams[i, b] < 0 or beam_logp[i, b] < item_logp[i, p]:
                    break
                if int(beams[i, b]) not in known:
                    r_items.append(int(beams[i, b]))
                    r_logp.append(float(beam_logp[i, b]))
        if not r_items:
            continue
        r_items, r_logp = np.asarray(r_items, np.int64), np.asarray(r_logp, np.float32)
        order = np.argsort(-r_logp, kind="stable")[:rejected]
        if disagreeing_only and r_logp[order[0]] < item_logp[i, p]:
            continue
        keep.append(i)
        pref.append(items[i, p])
        rp.append(item_logp[i, p])
        rej.append(r_items[order])
        rr.append(r_logp[order])
    return _assemble(examples.take(np.asarray(keep, dtype=np.int64)), np.asarray(pref, np.int64), rej,
                     np.asarray(rp, np.float32), rr, rejected)  # fmt: skip


# ------------------------------------------------------------------------ training
def anchor_kl(policy: Generator, reference: Generator, batch: Batch) -> Tensor:
    """Mean over requests and SID levels of KL(reference ‖ policy) of the next-code distributions, teacher-forced
    on ``batch.target``: keeps the policy's whole distribution near the SFT model's, not only the listed items."""
    with torch.no_grad():
        ref = [lg.float().log_softmax(-1) for lg in reference(batch)]
    pol = [lg.float().log_softmax(-1) for lg in policy(batch)]
    kl = [(r.exp() * (r - p)).sum(-1).mean() for r, p in zip(ref, pol, strict=True)]
    return torch.stack(kl).mean()


def frozen_copy(model: Generator) -> Generator:
    """A copy of ``model`` in eval mode with every parameter's ``requires_grad`` off (the DPO reference)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def eval_rows(n: int, cfg: AlignConfig) -> np.ndarray:
    """Rows of the ``n`` validation requests that each evaluation decodes (a fixed seeded sample, sorted)."""
    want = cfg.eval_examples or n
    if want < n:
        return np.sort(np.random.default_rng(cfg.seed).choice(n, want, False))
    return np.arange(n)


def rerank_ndcg(beams: np.ndarray, beam_logp: np.ndarray, reward: np.ndarray, target: np.ndarray,
                scales: tuple[float, ...], k: int = 10) -> dict[str, float]:  # fmt: skip
    """ndcg@k of the target (N,) among the beams (N, K) (-1 = none, never a hit) re-ranked by
    ``beam_logp + s · reward``, per scale ``s`` (0 = the beams' own order): with K = the list width, what phase 1
    could teach at most on these requests. Ties keep the beam order."""
    ok = beams >= 0
    out = {}
    for sc in scales:
        score = np.where(ok, beam_logp.astype(np.float64) + sc * reward, -np.inf)
        ranked = np.take_along_axis(beams, np.argsort(-score, axis=1, kind="stable"), 1)
        ranks = np.where(target >= 0, target_ranks(ranked, target), 0)  # an unknown target is never a hit
        out[f"{sc:g}"] = ranking_metrics(ranks, ks=(k,))[f"ndcg@{k}"]
    return out


def fit_report(beams: np.ndarray, ref_logp: np.ndarray, policy_logp: np.ndarray, reward: np.ndarray,
               target: np.ndarray, k: int = 10) -> dict[str, float]:  # fmt: skip
    """How much of the reward the policy took on the reference's beams (N, K) (-1 = none): ``policy_ndcg@k``, the
    target's ndcg@k among the beams ordered by the policy's log-probabilities (against :func:`rerank_ndcg`'s
    ceiling), and the ``shift_reward_corr`` / ``shift_reward_slope`` of the policy's shift ``log π − log π_ref``
    against the reward, both centred within each request and pooled: slope = Σ shift·reward / Σ reward²."""
    ok = beams >= 0
    shift = np.where(ok, policy_logp, 0.0).astype(np.float64) - np.where(ok, ref_logp, 0.0)  # no -inf - -inf
    rew = np.where(ok, reward.astype(np.float64), 0.0)
    n = np.maximum(ok.sum(1, keepdims=True), 1)
    shift = np.where(ok, shift - shift.sum(1, keepdims=True) / n, 0.0)
    rew = np.where(ok, rew - rew.sum(1, keepdims=True) / n, 0.0)
    sr, rr, ss = float((shift * rew).sum()), float((rew * rew).sum()), float((shift * shift).sum())
    ndcg = rerank_ndcg(beams, np.where(ok, policy_logp, -np.inf), np.zeros_like(rew), target, (0.0,), k)["0"]
    return {
        f"policy_ndcg@{k}": ndcg,
        "shift_reward_corr": float(sr / np.sqrt(rr * ss)) if rr > 0 and ss > 0 else 0.0,
        "shift_reward_slope": sr / rr if rr > 0 else 0.0,
    }


@dataclass
class AlignResult:
    model: Generator
    """The policy with the selected weights loaded (eval mode)."""
    best: dict[str, float]
    """Validation metrics of the selected weights."""
    start: dict[str, float]
    """Validation metrics of the SFT model (step 0)."""
    history: list[dict] = field(default_factory=list)
    """One entry per evaluation: phase, step, losses, validation metrics."""
    lists: dict[str, int] = field(default_factory=dict)
    """Lists per phase."""
    steps: int = 0
    minutes: float = 0.0


def align(
    policy: Generator,
    reference: Generator,
    phases: list[tuple[str, PreferenceLists, int]],
    sft: Examples,
    valid: Examples,
    trie: SIDTrie,
    cfg: AlignConfig,
    device: torch.device | None = None,
    on_eval=None,
) -> AlignResult:
    """Train ``policy`` on each phase's lists for its steps ((name, lists, steps) in order) with the list-wise
    DPO loss plus ``cfg.anchor_weight`` × the anchor on random ``sft`` examples (:func:`anchor_kl` or their
    cross-entropy); validate every
    ``eval_every`` steps and keep the selected weights (see ``AlignConfig.hr_tolerance``).

    ``reference`` is never updated: its parameters must not require gradients (use :func:`frozen_copy`); it
    scored the lists' ``ref_logp`` and stays in eval mode. The policy runs in eval mode too (no dropout), so at
    step 0 its log-probabilities equal the reference's and every list's loss is ``log(list length)``.
    """
    if any(p.requires_grad for p in reference.parameters()):
        raise ValueError("the reference model must be frozen (requires_grad False); use frozen_copy()")
    if sft.size == 0 and cfg.anchor_weight > 0:
        raise ValueError("anchor_weight > 0 needs training examples for the anchor")
    device = device or next(policy.parameters()).device
    policy.to(device).eval()
    reference.to(device).eval()
    codes = policy.item_codes
    rng = np.random.default_rng([cfg.seed, 1])
    valid = valid.take(eval_rows(valid.size, cfg))
    opt = torch.optim.AdamW(_param_groups(policy, 0.0), lr=cfg.lr, betas=(0.9, 0.98))
    warmup = 10
    t0 = time.perf_counter()
    history: list[dict] = []

    def run_eval(phase: str, step: int, dpo: float, anchor: float) -> dict:
        ev = evaluate(policy, valid, trie, beam=cfg.eval_beam, k=50, device=device)
        policy.eval()
        entry = {"phase": phase, "step": step, "dpo_loss": dpo, "anchor_loss": anchor,
                 **{f"val_{k}": v for k, v in ev.metrics.items()},
                 "minutes": (time.perf_counter() - t0) / 60}  # fmt: skip
        history.append(entry)
        if on_eval is not None:
            on_eval(entry)
        print(f"[align] {phase} step {step} dpo {dpo:.4f} anchor {anchor:.4f} val ndcg@10 {ev.metrics['ndcg@10']:.4f} "
              f"mrr@10 {ev.metrics['mrr@10']:.4f} recall@50 {ev.metrics['recall@50']:.4f}",
              file=sys.stderr, flush=True)  # fmt: skip
        return entry

    start = run_eval("sft", 0, float("nan"), float("nan"))
    best_state, best_entry = None, None
    floor = start["val_recall@50"] * (1 - cfg.hr_tolerance)

    def consider(entry: dict) -> None:
        nonlocal best_state, best_entry
        ok = entry["val_recall@50"] >= floor
        key = (ok, entry["val_ndcg@10"])
        if best_entry is None or key > (best_entry["val_recall@50"] >= floor, best_entry["val_ndcg@10"]):
            best_entry = entry
            best_state = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}

    step = 0
    counts = {}
    for name, lists, steps in phases:
        counts[name] = lists.size
        if steps == 0 or lists.size == 0:
            continue
        dpo_sum = ce_sum = 0.0
        n_sum = 0
        order = rng.permutation(lists.size)
        pos = 0
        for s in range(1, steps + 1):
            if pos + cfg.batch > lists.size:
                order, pos = rng.permutation(lists.size), 0
            idx = order[pos : pos + cfg.batch]
            pos += cfg.batch
            b = lists.examples.batch(idx).to(device)
            items = torch.from_numpy(lists.items[idx]).to(device)
            ref = torch.from_numpy(lists.ref_logp[idx]).to(device)
            mask = items >= 0
            pol = sequence_logprob(policy, b, items)
            loss_dpo = listwise_dpo_loss(pol, ref.masked_fill(~mask, 0.0), mask, cfg.beta)
            loss = loss_dpo
            ce = torch.zeros(())
            if cfg.anchor_weight > 0:
                j = rng.choice(sft.size, min(cfg.batch, sft.size), replace=False)
                sb = sft.batch(j).to(device)
                rows = torch.from_numpy(sft.target[j]).to(device)
                sb = sb._replace(target=codes[rows], target_item=rows)  # a dense head's loss reads the rows
                ce = policy.loss(sb) if cfg.anchor == "sft" else anchor_kl(policy, reference, sb)
                loss = loss + cfg.anchor_weight * ce
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, (step + 1) / warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            step += 1
            dpo_sum, ce_sum, n_sum = (
                dpo_sum + float(loss_dpo.detach()),
                ce_sum + float(ce.detach()),
                n_sum + 1,
            )
            if s % cfg.eval_every == 0 or s == steps:
                consider(run_eval(name, step, dpo_sum / n_sum, ce_sum / n_sum))
                dpo_sum = ce_sum = 0.0
                n_sum = 0
    if best_state is not None:
        policy.load_state_dict(best_state)
    else:
        best_entry = start
    policy.eval()
    strip = lambda e: {k[4:]: v for k, v in e.items() if k.startswith("val_")}  # noqa: E731
    return AlignResult(policy, strip(best_entry) | {"step": best_entry["step"]}, strip(start), history, counts,
                       step, (time.perf_counter() - t0) / 60)  # fmt: skip
