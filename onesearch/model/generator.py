"""The generative retriever: (task, query, behaviour) → the semantic ID of the next product, code by code.

One encoder-decoder transformer, written out here so it can be read top to bottom (nanoGPT style).

Encoder input, one sequence per request (every token = content embedding + type embedding [+ position]):

====================  ============================  ===========================================================
type                  tokens                        made from
====================  ============================  ===========================================================
task                  1                             ``search`` or ``recommend``
query                 ``max_query_tokens``          WordPiece ids of the query (all padding when there is none)
long-term view        ``levels × len(decays)``      per SID level, the recency-weighted mean of the level's code
                                                    embedding over the whole history (weights ``decay**age``)
short-term view       ``short_term``                the most recent items, one token each: the sum of the item's
                                                    per-level code embeddings (plus, with ``item_embeddings``, a
                                                    learned embedding of the item), plus a recency position
====================  ============================  ===========================================================

The long-term tokens replace a hashed user id: a user is what they bought, so a new user with a history is
served as well as an old one, and nothing grows with the number of users.

Decoder: position 0 is a learned start token, position ``t`` the embedding of the level ``t-1`` code; the
output at position ``t`` goes through the level-``t`` head to the logits of the level-``t`` code. Training is
teacher-forced cross-entropy over the ``L`` levels (:meth:`Generator.loss`); decoding is
:func:`onesearch.model.beam.beam_search`, which uses :meth:`Generator.encode`, :meth:`Generator.cross_kv` and
:meth:`Generator.decode_step` (keys and values of the decoder cached, the encoder side projected once per request
and shared by all of its beams).

Attention is written out (matmul, softmax, matmul): on CPU it trains faster than the fused kernel on these short
sequences, and it runs under bf16 autocast. Shapes: B requests, S encoder tokens, T decoder tokens, d model width,
h heads, dh = d / h, n beams.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONFIG_FILE = "generator.json"
"""Artifact name of the checkpoint's JSON half: model config, SID table hash, query-vocabulary hash, extras."""
WEIGHTS_FILE = "generator.safetensors"
"""Artifact name of the checkpoint's weights."""

TASKS = ("search", "recommend")
"""Task token ids: the index in this tuple."""


@contextlib.contextmanager
def config_as(model: nn.Module, **changes):
    """Within the block ``model.cfg`` has ``changes`` (e.g. another decoding weight); its own config after."""
    own = model.cfg
    model.cfg = replace(own, **changes)
    try:
        yield model
    finally:
        model.cfg = own


HEAD_SHARE = 0.2
"""The share of the items bought in training that are head items (the most bought); the rest are long tail."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of the generator. ``codebook_sizes`` and ``text_vocab`` come from the SID table and query vocabulary."""

    codebook_sizes: tuple[int, ...] = (256, 256, 256, 8)
    """Codes per SID level, the disambiguation level included (set from the SID table)."""
    text_vocab: int = 0
    """Size of the query vocabulary (set from the query tokenizer; 0 = the model reads no query)."""
    d_model: int = 128
    """Width of every token."""
    n_heads: int = 4
    """Attention heads (d_model must be divisible by it)."""
    enc_layers: int = 2
    """Encoder blocks."""
    dec_layers: int = 2
    """Decoder blocks."""
    d_ff: int = 512
    """Hidden width of the feed-forward layers."""
    dropout: float = 0.1
    """Dropout on attention weights, residual branches and input embeddings."""
    max_query_tokens: int = 16
    """Query tokens read (longer queries are cut)."""
    short_term: int = 20
    """Most recent history items given as one token each."""
    max_history: int = 50
    """History items read for the long-term view (the most recent ones)."""
    decays: tuple[float, ...] = (1.0, 0.85)
    """Recency decays of the long-term view: one token per (SID level, decay); 1.0 = plain mean."""
    item_embeddings: bool = False
    """Add a learned embedding of the item itself to each short-term token (n_items × d_model more parameters):
    lets the model memorise item-to-item patterns that items sharing their codes do not share; an item never
    seen in a training history keeps its small random initial vector, so its token is its codes'."""
    dense_head: bool = False
    """Also emit an item vector from the decoder's first state (COBRA / LIGER style): it scores every item by a dot
    product with the item's vector (the sum of its code embeddings, so a cold item has one from its codes, plus a
    learned per-item offset that starts at zero), trained by a softmax over the catalogue beside the codes' loss.
    Beam search then ranks the beam's items together with the dense head's nearest items by one combined score."""
    dense_loss: float = 0.5
    """Weight of the dense head's catalogue cross-entropy in the training loss."""
    dense_weight: float = 0.0
    """Decoding: combined score = log p(ID) + dense_weight · log softmax(dense scores) (0 = beam only; set after
    training by a grid on validation)."""
    dense_candidates: int = 20
    """Decoding: the dense head's nearest items added to the beam's before the combined ranking."""
    dense_text_tokens: int = 0
    """Dense head: item vectors also read the item's own words: the mean of the query-token embeddings (shared
    with the encoder's query tokens) of the first N WordPiece tokens of its title and category words, through a
    learned linear map that starts at zero. Queries and items then share one word space, so an item never bought
    gets a vector from the words it shares with the queries that bought others (0 = off)."""

    popularity_prior: bool = False
    """Hold each item's log(1 + training purchases) (given when the model is built, saved with the weights), so
    that decoding can rank by the score minus ``popularity_weight`` × that prior."""
    popularity_weight: float = 0.0
    """Decoding: the final ranking is by score − popularity_weight · log(1 + training purchases): a popular item
    must earn its place on relevance, and items with few or no purchases (long tail, cold start) are not buried by
    the popularity the model learned from the log (0 = off; set after training on validation by
    :func:`onesearch.model.train.tune_popularity_weight`)."""
    tail_boost: float = 0.0
    """Decoding: exposure for the long tail, as a page-by-page choice. Each candidate gets a probability ``p``, the
    softmax of its score / ``score_temperature`` over the request's candidates; each page of ``page_size`` results
    takes the candidates with the highest ``p + tail_boost · [long-tail or cold]`` and shows them in order of ``p``.
    A tail item thus takes a slot only from a head item at most ``tail_boost`` more likely to be bought (more, with
    ``cold_boost``, for a cold one) (0 = off; needs ``popularity_prior``, whose purchase counts say which items are
    head: the top 20% of the items bought in training; set after training on validation by
    :func:`onesearch.model.train.tune_exposure`)."""
    cold_boost: float = 0.0
    """Decoding: the same page-by-page choice gives items never bought in training (cold: new products) this
    boost on top of ``tail_boost``; at 1 (more than any gap in probability) every cold candidate the model finds
    is shown on the first page, up to the page's size (0 = off; set after ``tail_boost`` on validation by
    :func:`onesearch.model.train.tune_exposure`)."""
    score_temperature: float = 1.0
    """Decoding with ``tail_boost`` or ``cold_boost``: the temperature that turns scores into the probabilities
    ``p`` (fitted on validation by :func:`onesearch.model.train.tune_exposure`)."""
    page_size: int = 10
    """Decoding with ``tail_boost`` or ``cold_boost``: the results shown together, whose order inside the page is
    by ``p`` alone."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise ValueError(f"codebook_sizes must be positive, got {self.codebook_sizes}")
        if self.short_term < 1 or self.max_history < self.short_term:
            raise ValueError(
                f"need 1 <= short_term <= max_history, got short_term={self.short_term}, "
                f"max_history={self.max_history}"
            )
        if any(not 0 < d <= 1 for d in self.decays):
            raise ValueError(f"decays must be in (0, 1], got {self.decays}")
        if self.dense_loss < 0 or self.dense_weight < 0 or self.dense_candidates < 0:
            raise ValueError("dense_loss, dense_weight and dense_candidates must be >= 0")
        if self.dense_text_tokens < 0:
            raise ValueError("dense_text_tokens must be >= 0")
        if self.dense_text_tokens and not self.dense_head:
            raise ValueError("dense_text_tokens feed the dense head: they need dense_head=True")
        if self.popularity_weight < 0:
            raise ValueError(f"popularity_weight must be >= 0, got {self.popularity_weight}")
        if self.popularity_weight and not self.popularity_prior:
            raise ValueError("popularity_weight needs popularity_prior=True (the items' purchase counts)")
        if min(self.tail_boost, self.cold_boost) < 0 or not self.score_temperature > 0 or self.page_size < 1:
            raise ValueError(
                f"need tail_boost, cold_boost >= 0, score_temperature > 0 and page_size >= 1, got "
                f"{self.tail_boost}, {self.cold_boost}, {self.score_temperature}, {self.page_size}"
            )
        if (self.tail_boost or self.cold_boost) and not self.popularity_prior:
            raise ValueError(
                "tail_boost and cold_boost need popularity_prior=True (the purchase counts say which items are "
                "head and which are cold)"
            )
        if self.dense_text_tokens and not self.text_vocab:
            raise ValueError(
                "dense_text_tokens embeds item words with the query vocabulary: it needs text_vocab > 0"
            )

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def encoder_tokens(self) -> int:
        return 1 + self.max_query_tokens + self.levels * len(self.decays) + self.short_term

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        d = dict(d)
        removed = d.pop("dense_text_dim", 0)  # a dense-head variant that was tried and removed (stop 41)
        if removed:
            raise ValueError(
                "this generator was trained with dense_text_dim (item MiniLM embeddings in the dense head), an "
                "option that was removed; train it again (--dense-words is the kept variant)"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"generator config has unknown fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, GeneratorConfig] = {
    "tiny": GeneratorConfig(
        d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, short_term=5, max_history=10
    ),
    "small": GeneratorConfig(d_model=128, n_heads=4, enc_layers=2, dec_layers=2, d_ff=512),
    "base": GeneratorConfig(d_model=128, n_heads=4, enc_layers=4, dec_layers=4, d_ff=1024),
}
"""Model sizes; the data-dependent fields are filled in with :func:`dataclasses.replace`."""


class Batch(NamedTuple):
    """Model input for B requests (CPU or device tensors)."""

    task: Tensor
    """(B,) long: index into :data:`TASKS`."""
    query: Tensor
    """(B, Q ≤ max_query_tokens) long query token ids, 0 = padding (all 0 = no query)."""
    history: Tensor
    """(B, H ≤ max_history) long item rows of the SID table, most recent last, left-padded with -1."""
    target: Tensor | None = None
    """(B, levels) long codes of the target item (training and loss only)."""
    target_item: Tensor | None = None
    """(B,) long SID-table row of the target item (the dense head's loss only)."""

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in self))

    @property
    def size(self) -> int:
        """Number of requests B."""
        return int(self.task.shape[0])


_BANK_SIZE = 1 << 24
_BANKS: dict[float, Tensor] = {}


class Dropout(nn.Module):
    """Inverted dropout whose masks are windows of one precomputed random bank.

    Drawing fresh Bernoulli masks was a quarter of a CPU training step; a window at a random offset of a fixed
    16M-entry bank costs a fifth of that. Masks of consecutive calls are different windows of the same bank, which
    regularises just as well in practice. Tensors larger than the bank fall back to ``F.dropout``.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        if n >= _BANK_SIZE:
            return F.dropout(x, self.p, True)
        bank = _BANKS.get(self.p)
        if bank is None or bank.device != x.device:
            g = torch.Generator().manual_seed(0)
            bank = (torch.rand(_BANK_SIZE, generator=g) >= self.p).to(x.device)
            _BANKS[self.p] = bank
        off = int(torch.randint(0, _BANK_SIZE - n + 1, (1,)))
        return x * bank[off : off + n].view(x.shape) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None, drop: nn.Module) -> Tensor:
    """softmax(q kᵀ / √dh) v. q (.., Tq, dh), k/v (.., Tk, dh), keep broadcastable to (.., Tq, Tk), True = attend."""
    if q.shape[-2] == 1 and k.shape[-2] <= 8 and keep is None and not drop.training:
        # one query over a few keys (incremental decoding): elementwise, not thousands of 1 × dh × Tk matmuls
        w = ((q * k).sum(-1, keepdim=True) * (q.shape[-1] ** -0.5)).softmax(dim=-2)  # (.., Tk, 1)
        return (w * v).sum(-2, keepdim=True)
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (.., Tq, Tk)
    if keep is not None:
        att = att.masked_fill(~keep, float("-inf"))
    # the softmax in float32 (on the CPU bfloat16's is several times slower, and less exact)
    att = drop(att.softmax(dim=-1, dtype=torch.float32).to(v.dtype))
    return att @ v  # (.., Tq, dh)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.h = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, keep: Tensor | None, cache: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        N, T, d = x.shape
        q, k, v = self.qkv(x).view(N, T, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)  # 3 × (N, h, T, dh)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)  # (N, h, Tpast + T, dh)
            v = torch.cat([cache[1], v], dim=2)
        y = attention(q, k, v, keep, self.drop)  # (N, h, T, dh)
        return self.out(y.transpose(1, 2).reshape(N, T, d)), (k, v)


class CrossAttention(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.h = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        B, S, d = memory.shape
        k, v = self.kv(memory).view(B, S, 2, self.h, d // self.h).permute(2, 0, 3, 1, 4)  # 2 × (B, h, S, dh)
        return k, v

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], keep: Tensor) -> Tensor:
        # x (B, n, T, d): the n beams of a request share its encoder keys and values, so stack their queries.
        B, n, T, d = x.shape
        q = self.q(x).view(B, n * T, self.h, d // self.h).transpose(1, 2)  # (B, h, n·T, dh)
        y = attention(q, kv[0], kv[1], keep, self.drop)  # (B, h, n·T, dh); keep (B, 1, 1, S)
        return self.out(y.transpose(1, 2).reshape(B, n, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class EncoderBlock(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = SelfAttention(cfg), MLP(cfg)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), keep)[0])
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.attn, self.cross, self.mlp = SelfAttention(cfg), CrossAttention(cfg), MLP(cfg)
        self.drop = Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        mem_kv: tuple[Tensor, Tensor],
        mem_keep: Tensor,
        self_keep: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, n, T, d = x.shape
        a, new_cache = self.attn(self.ln1(x).view(B * n, T, d), self_keep, cache)
        x = x + self.drop(a.view(B, n, T, d))
        x = x + self.drop(self.cross(self.ln2(x), mem_kv, mem_keep))
        return x + self.mlp(self.ln3(x)), new_cache


class Encoded(NamedTuple):
    """What the decoder needs from the encoder, for B requests."""

    mem_kv: list[tuple[Tensor, Tensor]]
    """Per decoder block, the cross-attention keys and values of the encoder output, each (B, h, S, dh)."""
    keep: Tensor
    """(B, 1, 1, S) bool: True at encoder tokens that are not padding."""


class Generator(nn.Module):
    """Encoder-decoder over semantic IDs. ``item_codes`` (n_items, levels) are the SID table's codes, row order."""

    def __init__(
        self,
        cfg: GeneratorConfig,
        item_codes: np.ndarray | Tensor,
        item_tokens: np.ndarray | Tensor | None = None,
        item_purchases: np.ndarray | Tensor | None = None,
    ):
        """``item_tokens`` (n_items, cfg.dense_text_tokens) query-vocabulary ids of each item's words (0 = padding)
        are read by the dense head when the config asks for them, and ``item_purchases`` (n_items,) each item's
        training purchases by the popularity prior, both in SID-table row order; left out, they are zeros, to be
        filled by ``load_state_dict`` (they are saved with the weights)."""
        super().__init__()
        self.cfg = cfg
        d, L = cfg.d_model, cfg.levels
        codes = torch.as_tensor(np.asarray(item_codes), dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != L:
            raise ValueError(f"item_codes must be (n_items, {L}), got {tuple(codes.shape)}")
        # one padding row at the end: history index -1 reads it
        self.register_buffer(
            "item_codes", torch.cat([codes, torch.zeros(1, L, dtype=torch.long)]), persistent=False
        )
        self.register_buffer(
            "code_offsets", torch.tensor(np.cumsum([0, *cfg.codebook_sizes[:-1]])), persistent=False
        )

        # encoder embeddings: all levels' codes in one table, offset per level
        self.code_emb = nn.Embedding(sum(cfg.codebook_sizes), d)
        self.query_emb = nn.Embedding(max(cfg.text_vocab, 1), d, padding_idx=0)
        self.task_emb = nn.Embedding(len(TASKS), d)
        self.type_emb = nn.Embedding(4, d)  # task, query, long-term, short-term
        self.query_pos = nn.Embedding(cfg.max_query_tokens, d)
        self.short_pos = nn.Embedding(cfg.short_term, d)  # 0 = most recent
        self.long_pos = nn.Embedding(L * len(cfg.decays), d)
        # optional per-item embedding of the short-term tokens (row n_items = padding)
        self.item_emb = nn.Embedding(codes.shape[0] + 1, d) if cfg.item_embeddings else None
        self.enc_drop = Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.enc_layers))
        self.enc_ln = nn.LayerNorm(d)

        # decoder: start token, per-level input code embeddings (level t-1 code at position t), per-level heads
        self.bos = nn.Parameter(torch.zeros(d))
        self.dec_code_emb = nn.Embedding(sum(cfg.codebook_sizes), d)
        self.dec_pos = nn.Embedding(L, d)
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.dec_layers))
        self.dec_ln = nn.LayerNorm(d)
        self.heads = nn.ModuleList(nn.Linear(d, v) for v in cfg.codebook_sizes)
        # dense head: the first decoder state → an item vector, scored against every item's vector
        self.dense_proj = nn.Linear(d, d) if cfg.dense_head else None
        self.dense_item = nn.Embedding(codes.shape[0], d) if cfg.dense_head else None
        n = codes.shape[0]
        self.dense_words = nn.Linear(d, d, bias=False) if cfg.dense_text_tokens else None
        if cfg.dense_text_tokens:
            self.register_buffer(
                "item_tokens", _item_side(item_tokens, (n, cfg.dense_text_tokens), torch.long)
            )
        if cfg.popularity_prior:
            counts = None if item_purchases is None else np.asarray(item_purchases, dtype=np.float64)[:, None]
            if counts is not None and (counts < 0).any():
                raise ValueError("item_purchases must be >= 0")
            self.register_buffer(
                "item_log_pop", torch.log1p(_item_side(counts, (n, 1), torch.float32))[:, 0].contiguous()
            )

        # decay weights for the long-term view, oldest history slot first: decay ** age, age 0 = most recent
        age = torch.arange(cfg.max_history - 1, -1, -1, dtype=torch.float32)
        self.register_buffer(
            "decay_w", torch.stack([torch.tensor(r) ** age for r in cfg.decays]), persistent=False
        )  # (n_decays, H)
        self.apply(self._init)
        self._vectors: tuple | None = None  # the item vectors of the current weights, outside training
        self._tail: tuple | None = None  # the long-tail mask of the current purchase counts
        for m in (self.dense_item, self.dense_words):
            if m is not None:
                nn.init.zeros_(m.weight)  # an item starts as its codes

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0] - 1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- encoder
    def _level_embed(self, table: nn.Embedding, codes: Tensor) -> Tensor:
        """(…, L) codes → (…, L, d) per-level embeddings."""
        return table(codes + self.code_offsets)

    def encode_tokens(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Encoder input tokens (B, S, d) and their not-padding mask (B, S)."""
        cfg = self.cfg
        B, H = batch.history.shape
        Q = batch.query.shape[1]
        if not 1 <= H <= cfg.max_history or Q > cfg.max_query_tokens:
            raise ValueError(
                f"batch has history {H} / query {Q} columns; model reads 1..{cfg.max_history} / "
                f"at most {cfg.max_query_tokens} (a batch may drop leading history and trailing query padding)"
            )
        t = self.type_emb.weight  # (4, d)
        task = (self.task_emb(batch.task) + t[0]).unsqueeze(1)  # (B, 1, d)

        q_keep = batch.query > 0  # (B, Q)
        query = self.query_emb(batch.query) + self.query_pos.weight[:Q] + t[1]  # (B, Q, d)

        h_keep = batch.history >= 0  # (B, H)
        rows = batch.history.masked_fill(~h_keep, self.n_items)  # -1 → padding row
        per_level = self._level_embed(self.code_emb, self.item_codes[rows])  # (B, H, L, d)

        # long-term: per level and decay, the weighted mean over the whole (padded) history
        w = self.decay_w[:, cfg.max_history - H :].unsqueeze(0) * h_keep.unsqueeze(1)  # (B, n_decays, H)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-9)
        long = torch.einsum("bkh,bhld->bkld", w.to(per_level.dtype), per_level)  # (B, n_decays, L, d)
        long = long.reshape(B, -1, cfg.d_model) + self.long_pos.weight + t[2]  # (B, n_decays·L, d)
        l_keep = h_keep.any(-1, keepdim=True).expand(B, long.shape[1])

        # short-term: the last items, one token each (sum of the levels), position 0 = most recent
        s = min(cfg.short_term, H)
        short = per_level[:, H - s :].sum(2) + self.short_pos.weight[:s].flip(0) + t[3]  # (B, s, d)
        if self.item_emb is not None:
            short = short + self.item_emb(rows[:, H - s :])
        s_keep = h_keep[:, H - s :]

        x = torch.cat([task, query, long, short], dim=1)  # (B, S, d)
        keep = torch.cat([h_keep.new_ones(B, 1), q_keep, l_keep, s_keep], dim=1)  # (B, S)
        return x, keep

    def encode(self, batch: Batch) -> Encoded:
        x, keep = self.encode_tokens(batch)
        x = self.enc_drop(x)
        keep4 = keep[:, None, None, :]  # (B, 1, 1, S)
        for block in self.encoder:
            x = block(x, keep4)
        memory = self.enc_ln(x)  # (B, S, d)
        return Encoded([blk.cross.memory_kv(memory) for blk in self.decoder], keep4)

    # ---------------------------------------------------------------- decoder
    def embed_codes(self, codes: Tensor, start_level: int) -> Tensor:
        """Decoder inputs for the codes of levels start_level, start_level+1, ...: (…, T) → (…, T, d).

        The code of level l is the input at decoder position l + 1 (position 0 is the start token); the last
        level's code is only ever predicted, never fed in.
        """
        lv = torch.arange(start_level, start_level + codes.shape[-1], device=codes.device)
        return self.dec_code_emb(codes + self.code_offsets[lv]) + self.dec_pos.weight[lv + 1]

    def embed_level(self, code: Tensor, level: int) -> Tensor:
        """Decoder input of level-``level`` codes of any shape (…) → (…, d)."""
        return self.dec_code_emb(code + self.code_offsets[level]) + self.dec_pos.weight[level + 1]

    def start_tokens(self, B: int, n: int = 1) -> Tensor:
        return (self.bos + self.dec_pos.weight[0]).expand(B, n, 1, self.cfg.d_model)

    def decode_step(
        self, x: Tensor, enc: Encoded, cache: list[tuple[Tensor, Tensor]] | None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Run T new decoder tokens x (B, n, T, d) of n beams per request; returns (B, n, T, d) and the cache.

        With a cache the new tokens attend to every cached one (incremental decoding needs no mask); without
        one, attention is causal over the T tokens (teacher forcing).
        """
        B, n, T, _ = x.shape
        self_keep = (
            None
            if cache is not None or T == 1
            else torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        )
        new_cache = []
        for i, block in enumerate(self.decoder):
            x, c = block(x, enc.mem_kv[i], enc.keep, self_keep, None if cache is None else cache[i])
            new_cache.append(c)
        return self.dec_ln(x), new_cache

    def level_step(
        self, x: Tensor, enc: Encoded, cache: list[tuple[Tensor, Tensor]] | None, level: int
    ) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """One step of beam search: the new decoder tokens x (B, n, 1, d) → the last decoder state (B, n, d), the
        level's log-probabilities over its codebook (B, n, V) in float32, and the cache. One function, so that a
        decoding copy (:func:`onesearch.model.beam.for_decoding`) can compile it whole."""
        h, cache = self.decode_step(x, enc, cache)
        h = h[:, :, -1]
        return h, self.level_logits(h, level).float().log_softmax(-1), cache

    def teacher_forced(self, enc: Encoded, codes: Tensor) -> Tensor:
        """(B, K, L, d) decoder states of K whole IDs per request, position l reading the codes before level l:
        one causal pass over every ID. ``codes`` is (B, K, L), or (1, K, L) shared by all B requests of ``enc``.
        The one teacher-forcing path: training (:meth:`loss`), scoring given IDs (:meth:`code_logprobs`) and
        the preference loss of alignment all run through it."""
        B, (n, K, L) = enc.keep.shape[0], codes.shape
        x = torch.cat([self.start_tokens(n, K), self.embed_codes(codes[:, :, : L - 1], 0)], dim=2)
        h, _ = self.decode_step(x.expand(B, -1, -1, -1).contiguous(), enc, None)
        return h

    def code_logprobs(self, enc: Encoded, codes: Tensor) -> Tensor:
        """(B, K, L) teacher-forced ``log p(c_l | c_<l, request)`` of each level of K IDs per request (codes as in
        :meth:`teacher_forced`); their sum over levels is an ID's beam-search score (without the dense head)."""
        h = self.teacher_forced(enc, codes)
        codes = codes.expand(h.shape[0], -1, -1)
        return torch.stack(
            [
                self.level_logits(h[:, :, lv], lv)
                .float()
                .log_softmax(-1)
                .gather(2, codes[:, :, lv : lv + 1])[..., 0]
                for lv in range(codes.shape[2])
            ],
            dim=2,
        )

    def forward(self, batch: Batch) -> list[Tensor]:
        """Teacher-forced logits: one (B, codebook_sizes[l]) tensor per level."""
        return self._forward(batch)[0]

    def _forward(self, batch: Batch) -> tuple[list[Tensor], Tensor]:
        """The levels' logits and the decoder's first state (B, d), which the dense head reads."""
        if batch.target is None:
            raise ValueError("forward needs batch.target (the codes to teacher-force)")
        h = self.teacher_forced(self.encode(batch), batch.target[:, None])[:, 0]  # (B, L, d)
        return [self.level_logits(h[:, lv], lv) for lv in range(h.shape[1])], h[:, 0]

    def loss(self, batch: Batch, label_smoothing: float = 0.0) -> Tensor:
        """Mean over levels of the cross-entropy of each level's code; with the dense head, plus ``dense_loss`` ×
        the cross-entropy of the target item under the dense head's softmax over the catalogue."""
        logits, h0 = self._forward(batch)
        loss = torch.stack(
            [
                F.cross_entropy(lg.float(), batch.target[:, lv], label_smoothing=label_smoothing)
                for lv, lg in enumerate(logits)
            ]
        ).mean()
        if self.cfg.dense_head and self.cfg.dense_loss > 0:
            if batch.target_item is None:
                raise ValueError("the dense head's loss needs batch.target_item (the target's SID-table row)")
            loss = loss + self.cfg.dense_loss * F.cross_entropy(
                self.dense_logits(h0).float(), batch.target_item
            )
        return loss

    def item_tail(self) -> Tensor:
        """(n_items,) bool: long-tail or cold items, i.e. all but the top ``HEAD_SHARE`` of the items bought in
        training, ranked by purchases (ties: the lower SID-table row first). These are the tail and cold buckets
        of :func:`onesearch.retrieval.item_buckets`, which breaks ties by item id instead, so the two can differ
        for items tied at the head's last count. Needs the popularity prior's counts."""
        if not self.cfg.popularity_prior:
            raise ValueError("item_tail needs popularity_prior=True (the items' purchase counts)")
        pop = self.item_log_pop
        key = (pop.device, pop.data_ptr(), pop._version)  # counts change only by loading: sort once per load
        if self._tail is None or self._tail[0] != key:
            n_head = int(round(HEAD_SHARE * int((pop > 0).sum())))
            order = torch.sort(pop, descending=True, stable=True).indices
            tail = torch.ones_like(pop, dtype=torch.bool)
            tail[order[:n_head]] = False
            self._tail = (key, tail)
        return self._tail[1]

    def item_boost(self) -> Tensor:
        """(n_items,) the exposure boost of each item: ``tail_boost`` for a long-tail or cold item, plus
        ``cold_boost`` for a cold one (no training purchase)."""
        cold = (self.item_log_pop == 0).float()
        return self.cfg.tail_boost * self.item_tail().float() + self.cfg.cold_boost * cold

    def item_vectors(self) -> Tensor:
        """(n_items, d) the dense head's item vectors: the sum of each item's code embeddings (shared with the
        history tokens) plus its learned offset, plus (when configured) a map of the mean embedding of its words.

        Outside training (no grad) they are computed once per set of weights and kept: a weight change (an optimiser
        step, ``load_state_dict``), another device or autocast state computes them again."""
        if self.dense_item is None:
            raise ValueError("this generator has no dense head (dense_head=False)")
        key = None
        if not self.training and not torch.is_grad_enabled():
            dev = self.code_emb.weight.device
            key = (dev, torch.is_autocast_enabled(dev.type)) + tuple(
                (t.data_ptr(), t._version) for t in self._vector_inputs()
            )
            if self._vectors is not None and self._vectors[0] == key:
                return self._vectors[1]
        v = self._level_embed(self.code_emb, self.item_codes[:-1]).sum(-2) + self.dense_item.weight  # (n, d)
        if self.dense_words is not None:
            tok = self.item_tokens
            keep = (tok > 0).to(v.dtype)  # (n, T)
            words = (self.query_emb(tok) * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
            v = v + self.dense_words(words)
        self._vectors = None if key is None else (key, v)
        return v

    def _vector_inputs(self) -> list[Tensor]:
        out = [self.code_emb.weight, self.dense_item.weight, self.item_codes]
        if self.dense_words is not None:
            out += [self.query_emb.weight, self.dense_words.weight, self.item_tokens]
        return out

    def dense_logits(self, h0: Tensor) -> Tensor:
        """(…, n_items) dense scores of every item from first decoder states h0 (…, d)."""
        return self.dense_proj(h0) @ self.item_vectors().T / self.cfg.d_model**0.5

    def level_logits(self, h: Tensor, level: int) -> Tensor:
        return self.heads[level](h)


def _item_side(x: np.ndarray | Tensor | None, shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """An item-side input of the dense head as a tensor of ``shape`` (zeros when ``x`` is None)."""
    if x is None:
        return torch.zeros(shape, dtype=dtype)
    t = torch.as_tensor(np.asarray(x)).to(dtype)
    if tuple(t.shape) != shape:
        raise ValueError(
            f"dense head item input must be {shape} (items in SID-table row order), got {tuple(t.shape)}"
        )
    if dtype.is_floating_point and not torch.isfinite(t).all():
        raise ValueError("dense head item text embeddings hold NaN or inf")
    return t.contiguous()


# -------------------------------------------------------------------- checkpoints
class CheckpointMismatch(ValueError):
    """A checkpoint does not belong with the SID table or query vocabulary it was given."""


def save_checkpoint(
    model: Generator,
    directory: str | os.PathLike,
    *,
    sid_hash: str,
    vocab_hash: str | None,
    extra: dict | None = None,
) -> Path:
    """Write ``generator.safetensors`` + ``generator.json`` (config, SID hash, vocabulary hash, extras) into ``directory``."""
    from safetensors.torch import save_file

    from onesearch.io import sha256_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS_FILE))
    meta = {
        "format": 1,
        "config": model.cfg.to_dict(),
        "sid_hash": sid_hash,
        "vocab_hash": vocab_hash,
        "weights_sha256": sha256_file(d / WEIGHTS_FILE),
        "params": model.n_params(),
        **(extra or {}),
    }
    (d / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return d


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: not a generator checkpoint (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_checkpoint(
    directory: str | os.PathLike, item_codes: np.ndarray, *, sid_hash: str, vocab_hash: str | None
) -> tuple[Generator, dict]:
    """Load a generator beside the SID table (codes in row order, content hash) it was trained with.

    Raises :class:`CheckpointMismatch` when the table's hash or the query vocabulary's differs from the ones the
    checkpoint recorded, and ``ValueError`` when the weights file is not the one saved with the config.
    """
    from safetensors.torch import load_file

    from onesearch.io import sha256_file

    d = Path(directory)
    meta = read_checkpoint_meta(d)
    if meta.get("sid_hash") != sid_hash:
        raise CheckpointMismatch(
            f"{d}: the generator was trained on SID table {str(meta.get('sid_hash'))[:12]}…, "
            f"but the table given has hash {sid_hash[:12]}…; use the table it was trained with"
        )
    if meta.get("vocab_hash") != vocab_hash:
        raise CheckpointMismatch(
            f"{d}: the generator was trained with query vocabulary {meta.get('vocab_hash')}, got {vocab_hash}"
        )
    weights = d / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{d}: {WEIGHTS_FILE} is missing")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise ValueError(f"{weights}: weights do not match {CONFIG_FILE} (written by a different save)")
    cfg = GeneratorConfig.from_dict(meta["config"])
    model = Generator(cfg, item_codes)
    model.load_state_dict(load_file(str(weights)))
    return model, meta


def with_data_shape(
    cfg: GeneratorConfig, codebook_sizes: tuple[int, ...], text_vocab: int
) -> GeneratorConfig:
    """The preset ``cfg`` sized for a SID table and a query vocabulary (no query tokens when there is none)."""
    return replace(
        cfg,
        codebook_sizes=tuple(int(v) for v in codebook_sizes),
        text_vocab=int(text_vocab),
        max_query_tokens=cfg.max_query_tokens if text_vocab else 0,
    )


def param_count_str(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


__all__ = [
    "Batch",
    "CheckpointMismatch",
    "Encoded",
    "Generator",
    "GeneratorConfig",
    "PRESETS",
    "TASKS",
    "load_checkpoint",
    "save_checkpoint",
    "with_data_shape",
]
