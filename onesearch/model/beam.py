"""Beam search over semantic IDs, constrained to the trie of real items, batched over requests and beams.

Each level is one decoder step for all B × n beams at once: the level's log-probabilities (log-softmax over the
whole codebook, so a score is the model's log-probability of the ID) are added to the beam scores, codes that do
not extend a valid prefix are masked to -inf with one table lookup (:meth:`SIDTrie.mask`), and the best ``beam``
of the n × V continuations per request survive (one ``topk``; parents picked with one ``gather``, the decoder
cache reordered with one ``index_select``). No Python loop runs over beams or requests.

The score of an item is ``Σ_l log p(c_l | c_<l, request)``; with a beam at least as wide as the widest trie level
the search is exact (it returns the top-K of :func:`score_all_items`), and with beam 1 it is greedy decoding.
``constrained=False`` decodes freely over each codebook for comparison; a returned ID that names no item then
gets item row -1, and :attr:`Decoded.valid` tells which.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import Tensor

from onesearch.decode.trie import SIDTrie
from onesearch.model.generator import Batch, Encoded, Generator

BEAM = 20
"""The default beam width of decoding, wherever the toolkit decodes (serving, scoring, evaluation)."""
K = 10
"""The default number of items returned per request."""
PRECISIONS = ("fp32", "bf16", "auto")
"""Decoding precisions of :func:`for_decoding`."""


def check_precision(precision: str, name: str = "precision") -> None:
    """Raise a ``ValueError`` naming option ``name`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU with bf16, or a CPU with AMX or
    AVX-512 BF16 (elsewhere bf16 is emulated and slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    return False


def for_decoding(model: Generator, precision: str = "fp32", compile: bool = False) -> Generator:
    """A copy of ``model`` to serve beam search with (eval mode; the original is untouched).

    ``precision="bf16"`` casts the weights to bfloat16; each level's log-softmax, the beam scores and attention's
    softmax stay float32. On this project's 2-core CPU (AMX) it decodes 1.6x as many requests/s as float32 at beam
    20 with quality unchanged to 0.4% on Beauty (docs/generator.md); scores move by about 1e-2 nats, so near-ties
    may swap. ``"auto"`` is bf16 where :func:`native_bf16` holds, float32 elsewhere. ``compile`` runs the encoder
    and each level's step (:meth:`Generator.level_step`) through ``torch.compile`` (inductor; on a CPU it needs a
    C++ compiler), with every batch padded to the full input width (:func:`_full_width`) so that one graph per
    (batch size, beam, level) serves all batches: bf16 and compiled, 2.2x float32. The first batch of each shape
    compiles (tens of seconds on 2 cores), later ones reuse it. The copy's ``decoding`` attribute records its
    precision (``auto`` resolved) and whether it is compiled.
    """
    check_precision(precision)
    device = next(model.parameters()).device
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    m = copy.deepcopy(model).eval()
    if precision == "bf16":
        m = m.to(torch.bfloat16)
        if getattr(model, "item_log_pop", None) is not None:  # counts stay exact: head / tail / cold by count
            m.item_log_pop = model.item_log_pop.detach().clone()
    if compile:
        import torch._dynamo as dynamo

        # one graph per (batch size, level): a decoding run has a full and a last, smaller batch
        for limit in ("recompile_limit", "cache_size_limit"):  # the name changed across torch releases
            if hasattr(dynamo.config, limit):
                setattr(dynamo.config, limit, max(getattr(dynamo.config, limit), 64))
        m.encode = torch.compile(m.encode, dynamic=False)
        m.level_step = torch.compile(m.level_step, dynamic=False)
        m.full_width = True  # see _full_width: one input width, so batches reuse one graph per level
    m.decoding = {"precision": precision, "compile": compile}  # what this copy is (``auto`` resolved)
    return m


def _full_width(model: Generator, batch: Batch) -> Batch:
    """The batch padded to the full history (and, for a model that reads queries, query) width the model reads.

    A batch drops history and query padding that none of its requests use, so its width varies from batch to
    batch, and a compiled encoder or step would compile again for each one. Padding is masked out of attention and
    of the history means, so the results are the same up to float rounding."""
    cfg = model.cfg
    H, Q = batch.history.shape[1], batch.query.shape[1]
    q_full = cfg.max_query_tokens if cfg.text_vocab else Q
    if H >= cfg.max_history and Q >= q_full:
        return batch
    F = torch.nn.functional
    return batch._replace(
        history=F.pad(batch.history, (cfg.max_history - H, 0), value=-1),
        query=F.pad(batch.query, (0, q_full - Q), value=0),
    )


class Decoded(NamedTuple):
    """Top-K of B requests, best first."""

    items: Tensor
    """(B, K) long SID-table rows; -1 where the ID names no item (unconstrained) or fewer than K exist."""
    scores: Tensor
    """(B, K) float log-probabilities of the IDs (-inf where there is no candidate)."""
    codes: Tensor
    """(B, K, L) long codes of the returned IDs."""

    @property
    def valid(self) -> Tensor:
        return self.items >= 0


@torch.no_grad()
def beam_search(
    model: Generator,
    batch: Batch,
    trie: SIDTrie,
    beam: int = BEAM,
    k: int | None = None,
    constrained: bool = True,
) -> Decoded:
    """The ``k`` (default ``beam``) best IDs per request. ``trie`` must be on the model's device.

    A model with a dense head and ``dense_weight > 0`` ranks the beam's items together with the dense head's
    nearest items by the combined score (:func:`_fuse_dense`), which is then the returned score; with
    ``popularity_weight > 0`` the candidates are then ranked by that score minus the popularity prior
    (:func:`_debias`); with ``tail_boost`` or ``cold_boost`` they are then laid out page by page
    (:func:`expose_tail`).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    k = beam if k is None else k
    if not 1 <= k <= beam:
        raise ValueError(f"k must be in [1, beam={beam}], got {k}")
    if trie.levels != model.cfg.levels:
        raise ValueError(f"trie has {trie.levels} levels, the model {model.cfg.levels}")
    if getattr(model, "full_width", False):
        batch = _full_width(model, batch)
    enc = model.encode(batch)
    B = batch.size
    dev = batch.task.device
    node = torch.zeros(B, 1, dtype=torch.long, device=dev)  # (B, n) trie node of each beam
    score = torch.zeros(B, 1, device=dev)  # (B, n)
    codes = torch.zeros(B, 1, 0, dtype=torch.long, device=dev)  # (B, n, l)
    x = model.start_tokens(B)  # (B, 1, 1, d)
    cache = None
    h0 = None
    for lv in range(trie.levels):
        h, logp, cache = model.level_step(x, enc, cache, lv)  # (B, n, d), (B, n, V)
        if lv == 0:
            h0 = h[:, 0]  # (B, d) the first decoder state, one per request
        if constrained:
            logp = logp.masked_fill(~trie.mask(lv, node), float("-inf"))
        n, V = logp.shape[1], logp.shape[2]
        cand = (score.unsqueeze(-1) + logp).reshape(B, n * V)
        score, idx = cand.topk(min(beam, n * V), dim=1)  # (B, n')
        parent, code = idx // V, idx % V
        codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, lv)), code[..., None]], dim=2)
        node = trie.step(lv, node.gather(1, parent), code)
        node = node.masked_fill(torch.isinf(score), -1)
        if lv + 1 < trie.levels:
            flat = (parent + torch.arange(B, device=dev)[:, None] * n).reshape(-1)  # rows of the (B·n) cache
            cache = [(kk.index_select(0, flat), vv.index_select(0, flat)) for kk, vv in cache]
            x = model.embed_level(code, lv).unsqueeze(2)  # (B, n', 1, d)
    if constrained and model.cfg.dense_head and model.cfg.dense_weight > 0:
        node, score, codes = _fuse_dense(model, enc, h0, node, score, codes)
    if constrained and model.cfg.popularity_weight > 0:
        node, score, codes = _debias(model, node, score, codes)
    if constrained and (model.cfg.tail_boost > 0 or model.cfg.cold_boost > 0):
        cfg = model.cfg
        node, score, codes = expose_tail(
            node, score, codes, model.item_boost(), cfg.score_temperature, cfg.page_size
        )
    items, score, codes = node[:, :k], score[:, :k], codes[:, :k]
    if items.shape[1] < k:  # fewer IDs than k in the whole trie
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((B, pad), -1)], 1)
        score = torch.cat([score, score.new_full((B, pad), float("-inf"))], 1)
        codes = torch.cat([codes, codes.new_zeros((B, pad, trie.levels))], 1)
    return Decoded(items, score, codes)


def _fuse_dense(
    model: Generator, enc: Encoded, h0: Tensor, items: Tensor, score: Tensor, codes: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Rank the beam's items (B, n) together with the dense head's ``dense_candidates`` nearest items by
    ``log p(ID) + dense_weight · log softmax(dense)``; the dense items' ``log p(ID)`` by one teacher-forced pass.
    Returns the candidates sorted by the combined score (items, combined scores, codes), -1 / -inf padding last."""
    cfg = model.cfg
    dense = model.dense_logits(h0).float().log_softmax(-1)  # (B, n_items)
    m = min(cfg.dense_candidates, dense.shape[1])
    extra = dense.topk(m, dim=1).indices  # (B, m) rows
    in_beam = (extra[:, :, None] == items[:, None, :]).any(-1)  # (B, m): already a beam item
    extra_codes = model.item_codes[extra]  # (B, m, L)
    extra_score = model.code_logprobs(enc, extra_codes).sum(-1).masked_fill(in_beam, float("-inf"))
    cand = torch.cat([items, extra], 1)  # (B, n + m)
    gen = torch.cat([score, extra_score], 1)
    fused = gen + cfg.dense_weight * dense.gather(1, cand.clamp(min=0))
    return _ranked(cand, fused, torch.isinf(gen), torch.cat([codes, extra_codes], 1))


def _debias(model: Generator, items: Tensor, score: Tensor, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Re-rank candidates (B, n) by ``score − popularity_weight · log(1 + training purchases)``; -1 / -inf last."""
    prior = model.item_log_pop[items.clamp(min=0)]
    return _ranked(items, score - model.cfg.popularity_weight * prior, torch.isinf(score), codes)


def expose_tail(
    items: Tensor, score: Tensor, codes: Tensor, boost: Tensor, temperature: float, page: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Lay out the candidates (B, n) page by page with exposure for the long tail.

    ``p`` = softmax(score / ``temperature``) over each request's candidates. Page after page of ``page`` results,
    the remaining candidates with the highest ``p + boost[item]`` fill the page, which shows them in order of
    ``p``: the choice of a page's set maximises its expected hits plus the boosts of the items shown, and the order
    inside it is the one that maximises the expected DCG of that set. ``boost`` (n_items,) is each item's
    (:meth:`Generator.item_boost`: 0 for head items). Returns (items, scores, codes): the score is the calibrated
    ``log p``, capped by the score above it so that it never rises down the list; -1 / -inf padding last."""
    dead = (items < 0) | torch.isinf(score)
    logp = (score.float() / temperature).masked_fill(dead, float("-inf")).log_softmax(1)
    logp = logp.masked_fill(dead, float("-inf"))  # a row with no candidate at all gives nan above
    util = logp.exp() + boost.to(logp.dtype)[items.clamp(min=0)]
    first = util.masked_fill(dead, float("-inf")).argsort(dim=1, descending=True, stable=True)
    by_p = logp.gather(1, first).argsort(dim=1, descending=True, stable=True)  # positions in ``first``
    page_of = (torch.arange(items.shape[1], device=items.device) // page).expand_as(items).gather(1, by_p)
    order = first.gather(1, by_p.gather(1, page_of.argsort(dim=1, stable=True)))
    out = logp.gather(1, order).cummin(dim=1).values
    items = items.gather(1, order).masked_fill(torch.isinf(out), -1)
    return items, out, codes.gather(1, order[..., None].expand(-1, -1, codes.shape[2]))


def _ranked(items: Tensor, score: Tensor, dead: Tensor, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Candidates (B, n) sorted by ``score`` (stable), the padding (-1), ``dead`` ones and -inf scores last with
    item -1 and score -inf; ``codes`` (B, n, L) follow their items."""
    score = score.masked_fill((items < 0) | dead, float("-inf"))
    order = score.argsort(dim=1, descending=True, stable=True)
    score = score.gather(1, order)
    items = items.gather(1, order).masked_fill(torch.isinf(score), -1)
    return items, score, codes.gather(1, order[..., None].expand(-1, -1, codes.shape[2]))


@torch.no_grad()
def greedy(model: Generator, batch: Batch, trie: SIDTrie | None) -> Decoded:
    """Greedy decoding without a cache (the decoder re-run over the prefix each level): the reference that
    beam 1 must equal. ``trie`` None decodes unconstrained."""
    enc = model.encode(batch)
    B = batch.size
    dev = batch.task.device
    codes = torch.zeros(B, 0, dtype=torch.long, device=dev)
    node = torch.zeros(B, dtype=torch.long, device=dev)
    total = torch.zeros(B, device=dev)
    for lv in range(model.cfg.levels):
        x = torch.cat([model.start_tokens(B)[:, 0], model.embed_codes(codes, 0)], dim=1)  # (B, lv + 1, d)
        h, _ = model.decode_step(x.unsqueeze(1), enc, None)
        logp = model.level_logits(h[:, 0, -1], lv).float().log_softmax(-1)  # (B, V)
        if trie is not None:
            logp = logp.masked_fill(~trie.mask(lv, node), float("-inf"))
        best, code = logp.max(-1)
        total += best
        codes = torch.cat([codes, code[:, None]], 1)
        if trie is not None:
            node = trie.step(lv, node, code)
    items = node if trie is not None else torch.full_like(node, -1)
    return Decoded(items[:, None], total[:, None], codes[:, None])


@torch.no_grad()
def score_all_items(model: Generator, batch: Batch, item_codes: Tensor, chunk: int = 4096) -> Tensor:
    """Brute force: (B, n_items) log-probability of every item's ID, by teacher forcing each one.

    Cost grows with B × n_items; it is the exactness reference for small catalogues, not a retrieval method.
    """
    enc = model.encode(batch)
    n = item_codes.shape[0]
    out = [model.code_logprobs(enc, item_codes[None, s : s + chunk]).sum(-1) for s in range(0, n, chunk)]
    return torch.cat(out, 1)


@torch.no_grad()
def level_logprobs(model: Generator, batch: Batch, item_codes: Tensor, items: Tensor) -> Tensor:
    """(B, K, L) teacher-forced ``log p(c_l | c_<l, request)`` of each request's K candidate ``items`` (rows of
    ``item_codes``, e.g. :attr:`Decoded.items`); a row of -1 (no candidate) gives -inf at every level.

    The sum over levels is the candidate's beam score; the levels apart let a decoding be re-scored or
    diagnosed level by level.
    """
    B = items.shape[0]
    if B != batch.size:
        raise ValueError(f"items has {B} rows, the batch {batch.size} requests")
    n = item_codes.shape[0]
    if ((items < -1) | (items >= n)).any():
        raise ValueError(f"items must be rows of item_codes (0..{n - 1}) or -1")
    out = model.code_logprobs(model.encode(batch), item_codes[items.clamp(min=0)])
    return out.masked_fill((items < 0)[..., None], float("-inf"))
