"""Decision Transformer bidder, in one file: model, offline training, and the bidder that plays it.

Each step t of an episode is three tokens, (return-to-go R_t, state s_t, action a_t), plus an embedding of t; a causal
transformer reads the last ``context`` steps and predicts a_t from the hidden state of the s_t token. Returns and
states are made comparable across advertisers (``bidding.data.featurize`` / ``normalised_returns``): a return of 1
means 'spent the budget exactly at the target cost per conversion'. At play time the bidder asks for a target return
(by default the 90th percentile of the training episodes' returns) and lowers it by every reward it earns; the
value-guided DT (``value_target``) instead asks at every step for what a learned expectile value V(s) expects from
the current state, pulls every bid towards the constant α that a learned plan value V(s, λ) expects to earn the most
with from here on (``plan_weight``), and can also explore around the logged actions under an action value
(``explore_epsilon``).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import threadpoolctl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bidding.data import (
    Episodes,
    featurize,
    featurize_state,
    normalised_returns,
    return_to_go,
    standardised_states,
)
from bidding.offline import Transitions, TwinQ, _soft_update, expectile_loss, mlp
from bidding.replay import Replayed
from onesearch.io import load_weights, save_weights
from simulators.auction import AuctionRules
from simulators.market import Advertiser, Feedback


@dataclass(frozen=True)
class DTConfig:
    """Shape of the Decision Transformer."""

    state_dim: int = 16
    """State features per step."""
    context: int = 20
    """Steps the model reads (K): 3K tokens."""
    d_model: int = 64
    """Token width."""
    n_layers: int = 3
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads."""
    d_ff: int = 256
    """Feed-forward width."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residual branches."""
    max_steps: int = 48
    """Steps per episode (size of the timestep embedding)."""
    alpha_max: float = AuctionRules.alpha_max
    """Highest bid coefficient: predictions are alpha_max · sigmoid(·) (bench-bidding sets the market's rule)."""
    explore_epsilon: float = 0.0
    """Value-guided DT: range of the exploration factor β ∈ [1 − ε, 1 + ε] on the logged action (0 = none)."""
    value_target: bool = False
    """Value-guided DT: at play, ask at every step for the return a learned τ-expectile value V(s) expects from the
    current state, instead of a fixed target lowered by the rewards earned."""
    value_hidden: int = 256
    """Hidden width of that state value (and of the plan value)."""
    plan_weight: float = 0.0
    """Value-guided DT: weight w of the plan value at play: α = α_DT^(1 − w) · λ*^w, where λ* is the constant α that a
    learned value V(s, λ) expects to earn the most with from the current state on (0 = no plan value)."""
    plan_points: int = 25
    """Constant α values λ the plan value compares: log-spaced between the 1st and 99th percentile of the constant
    α of its training episodes (``plan_source`` constant), or over 0.02 … alpha_max (replay)."""
    rtg_search: tuple[float, ...] = ()
    """GAS-style search at play: at every step try the asked return times each of these factors, and bid the DT's
    action whose learned action value Q(s, α) is highest (a twin-Q critic fitted by one-step TD, ``value_hidden``
    wide, kept with the model); empty = off. Each factor costs one more pass of the new tokens per act."""
    plan_source: str = "constant"
    """What the plan value learns from: ``constant``, the logged episodes of constant-bid advertisers (only the
    constants they bid); ``replay``, every constant of its grid replayed on the impression log of training days from
    every logged state (:mod:`bidding.replay`; ``train_dt`` then needs the replayed values)."""
    plan_target_z: float = -1.0
    """Replayed plan value only: keep the target. λ* is then the best constant whose projected period cost per
    conversion (CPA, ROI or CAC, as the advertiser's target) still meets the target with ``plan_target_z`` standard
    deviations of the remaining conversions' count to spare, and no bid exceeds the highest such constant (below 0:
    the plan value alone picks λ*, the target is only the score's penalty)."""

    @property
    def guided(self) -> bool:
        """Value-guided (vdt): action exploration, a state-value target, a plan value or the return search is on."""
        return self.explore_epsilon > 0 or self.value_target or self.plan_weight > 0 or bool(self.rtg_search)


@dataclass(frozen=True)
class DTTrainConfig:
    """Offline training of a Decision Transformer."""

    steps: int = 4000
    """Optimiser steps."""
    batch_size: int = 64
    """Windows per step."""
    lr: float = 3e-4
    """Peak learning rate (AdamW, linear warm-up then cosine)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup: int = 200
    """Warm-up steps."""
    grad_clip: float = 0.5
    """Gradient-norm clip."""
    target_quantile: float = 0.9
    """Target return at play time: this quantile of the training episodes' normalised returns."""
    max_minutes: float = 15.0
    """Stop the DT's optimiser loop after this much training time (0 = no limit); a value-guided DT's values train
    besides (the action value before, the state and plan values after it: under a minute or two each at the
    defaults)."""
    seed: int = 0
    """Seed of initialisation and sampling."""


@dataclass(frozen=True)
class ValueConfig:
    """The learned value of the value-guided DT (``vdt``)."""

    critic: str = "td"
    """How Q(s, α) is fitted: ``td`` = one-step TD on an expectile state value, Q(s, a) = r + γ·V(s'), V = the
    τ-expectile of Q over the logged actions (IQL's critic); ``mc`` = expectile regression straight on the logged
    return-to-go."""
    expectile: float = 0.7
    """Expectile τ of the value regression (> 0.5 leans to the better outcomes)."""
    critic_steps: int = 4000
    """Optimiser steps of the action value (trained before the DT)."""
    critic_hidden: int = 256
    """Hidden width of the action value."""
    critic_lr: float = 3e-4
    """Learning rate of the action value."""
    gamma: float = 0.99
    """Discount of the ``td`` critic."""
    explore_weight: float = 0.1
    """Weight of the exploration objective −Q(s, β·a) in the DT loss."""
    margin: float = 0.0
    """Gate: imitate the explored action β·a only where Q(s, β·a) > Q(s, a) + margin."""
    target_expectile: float = 0.9
    """Expectile τ of the state value V(s) that sets the return asked for at play (with DTConfig.value_target)."""
    target_steps: int = 3000
    """Optimiser steps of that state value."""
    plan_policies: tuple[str, ...] = ("fixed",)
    """Behaviour policies that bid one constant α all period (times the logged exploration noise): the plan value
    (DTConfig.plan_weight) learns from their episodes only, since only there the bids after a step are known."""
    plan_steps: int = 6000
    """Optimiser steps of the plan value V(s, λ) (mean squared error, batches of 512, Adam at 1e-3)."""


SPEND_FLOOR = 1e-5
"""The plan's spend head learns log(spend + SPEND_FLOOR) (spend in budgets: well under one conversion)."""

CRITICS = ("td", "mc")
PLAN_SOURCES = ("constant", "replay")


class ActionValue(nn.Module):
    """Q(s, α): the normalised return-to-go expected from state s after bidding α (an MLP)."""

    def __init__(self, state_dim: int, hidden: int, alpha_max: float) -> None:
        super().__init__()
        self.net = mlp(state_dim + 1, hidden)
        self.alpha_max = alpha_max

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([s, (a / self.alpha_max).unsqueeze(-1)], dim=-1)).squeeze(-1)


def train_action_value(ep: Episodes, cfg: DTConfig, vcfg: ValueConfig, seed: int) -> tuple[nn.Module, float]:
    """Fit the action value Q(s_t, a_t) of ``vcfg.critic`` on the episodes; returns Q (frozen, on standardised
    states as :class:`Prepared` makes them) and its final loss.

    ``mc`` regresses Q on the return-to-go R_t of the logged episode. That return also depends on everything the
    logging bidder did afterwards, so Q learns which bidders bid a given α as much as what α itself brings (in our
    data, low α goes with the pacing bidders that end well, and Q pushes every bid down). ``td`` sees only the next
    step: Q(s, a) = r + γ·V(s') with V the τ-expectile of the twin-Q minimum over the logged actions, so the value of
    an action is what it earns now plus the best continuation the data shows from where it leads."""
    if vcfg.critic not in CRITICS:
        raise ValueError(f"unknown critic {vcfg.critic!r}; choose from {', '.join(CRITICS)}")
    g = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed + 1)
    data = Transitions.from_episodes(ep)
    n, d = data.s.shape
    losses: list[float] = []
    if vcfg.critic == "mc":
        r = torch.from_numpy(
            return_to_go(normalised_returns(ep.rewards, ep.budget, ep.bid_scale))
            .astype(np.float32)
            .reshape(-1)
        )
        q = ActionValue(d, vcfg.critic_hidden, cfg.alpha_max)
        opt = torch.optim.Adam(q.parameters(), lr=vcfg.critic_lr)
        for _ in range(vcfg.critic_steps):
            i = torch.randint(0, n, (256,), generator=g)
            loss = expectile_loss(r[i] - q(data.s[i], data.a[i]), vcfg.expectile)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return q.eval().requires_grad_(False), float(np.mean(losses[-100:]))
    q = TwinQ(d, vcfg.critic_hidden, cfg.alpha_max)
    q_target = TwinQ(d, vcfg.critic_hidden, cfg.alpha_max)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    v = mlp(d, vcfg.critic_hidden)
    opt_q = torch.optim.Adam(q.parameters(), lr=vcfg.critic_lr)
    opt_v = torch.optim.Adam(v.parameters(), lr=vcfg.critic_lr)
    for _ in range(vcfg.critic_steps):
        i = torch.randint(0, n, (256,), generator=g)
        s, a, r, s2, done = data.s[i], data.a[i], data.r[i], data.s2[i], data.done[i]
        with torch.no_grad():
            q_sa = q_target(s, a)
        loss_v = expectile_loss(q_sa - v(s).squeeze(-1), vcfg.expectile)
        opt_v.zero_grad(set_to_none=True)
        loss_v.backward()
        opt_v.step()
        with torch.no_grad():
            target = r + vcfg.gamma * (1 - done) * v(s2).squeeze(-1)
        q1, q2 = q.both(s, a)
        loss_q = ((q1 - target) ** 2 + (q2 - target) ** 2).mean()
        opt_q.zero_grad(set_to_none=True)
        loss_q.backward()
        opt_q.step()
        _soft_update(q_target, q, 0.005)
        losses.append(float(loss_q.detach()))
    return q.eval().requires_grad_(False), float(np.mean(losses[-100:]))


class Block(nn.Module):
    """Pre-norm transformer block with causal self-attention."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.p_attn = cfg.dropout

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``mask``: additive (B, 1, L, L) attention bias (0 allowed, −inf not), or None for plain causal."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        # (B, L, D) -> (B, heads, L, D/heads)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, dropout_p=self.p_attn if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ff(self.ln2(x)))


class DecisionTransformer(nn.Module):
    """(rtg, state, action) tokens → the action at every state token."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed_rtg = nn.Linear(1, d)
        self.embed_state = nn.Linear(cfg.state_dim, d)
        self.embed_action = nn.Linear(1, d)
        self.embed_time = nn.Embedding(cfg.max_steps, d)
        self.ln_in = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self.explore_head = nn.Linear(d, 1) if cfg.explore_epsilon > 0 else None
        # V(s): the return-to-go to ask for from standardised state s (value-guided DT with value_target)
        self.return_value = mlp(cfg.state_dim, cfg.value_hidden) if cfg.value_target else None
        # V(s, λ): the return-to-go from standardised state s when bidding the constant α = λ from there on, read
        # on [s | log λ]; and the λ values compared at play (set by training; value-guided DT with plan_weight)
        self.plan_value = mlp(cfg.state_dim + 1, cfg.value_hidden) if cfg.plan_weight > 0 else None
        # what bidding λ from s on still spends and converts, in budgets (replayed plan value only): the projected
        # period cost per conversion that keeps the target (plan_target_z)
        replayed = cfg.plan_weight > 0 and cfg.plan_source == "replay"
        self.plan_spend = mlp(cfg.state_dim + 1, cfg.value_hidden, 2) if replayed else None
        if cfg.plan_weight > 0:
            self.register_buffer("plan_grid", torch.ones(cfg.plan_points))
        # Q(s, α) that picks among the actions of the searched returns (rtg_search)
        self.search_value = TwinQ(cfg.state_dim, cfg.value_hidden, cfg.alpha_max) if cfg.rtg_search else None

    def forward(
        self, rtg: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, valid: Tensor
    ) -> Tensor:
        """rtg, actions (B, K) float; states (B, K, S); timesteps (B, K) long; valid (B, K) bool (left padding is
        False). Returns (B, K) predicted α; the prediction at step k sees R_≤k, s_≤k and a_<k only."""
        return self.act_head(self.hidden(rtg, states, actions, timesteps, valid))

    def act_head(self, h: Tensor) -> Tensor:
        """(B, K, d) state-token hidden states → (B, K) α in (0, alpha_max)."""
        return torch.sigmoid(self.head(h).squeeze(-1)) * self.cfg.alpha_max

    def explore(self, h: Tensor) -> Tensor:
        """(B, K, d) hidden states → (B, K) exploration factor β = 1 + ε·tanh(·) (value-guided DT only)."""
        if self.explore_head is None:
            raise ValueError("this Decision Transformer has no exploration head (explore_epsilon = 0)")
        return 1.0 + self.cfg.explore_epsilon * torch.tanh(self.explore_head(h).squeeze(-1))

    def hidden(
        self, rtg: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, valid: Tensor
    ) -> Tensor:
        """(B, K, d) hidden states of the state tokens (inputs as in :meth:`forward`)."""
        B, K = rtg.shape
        t = self.embed_time(timesteps)
        r = self.embed_rtg(rtg.unsqueeze(-1)) + t
        s = self.embed_state(states) + t
        a = self.embed_action((actions / self.cfg.alpha_max).unsqueeze(-1)) + t
        x = torch.stack([r, s, a], dim=2).reshape(B, 3 * K, -1)  # (B, 3K, d): R1 s1 a1 R2 s2 a2 ...
        x = self.drop(self.ln_in(x))
        mask = None  # no padding (as at play time): the plain causal mask, without building one
        if not bool(valid.all()):
            L = 3 * K
            causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            keys = valid.repeat_interleave(3, dim=1)  # (B, 3K)
            # a query may attend to earlier valid tokens, and always to itself (so padded rows stay finite)
            allowed = (causal & keys[:, None, :]) | torch.eye(L, dtype=torch.bool, device=x.device)
            # (B, 1, L, L) additive bias shared by the heads and layers (a boolean mask is converted per call)
            mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~allowed, float("-inf"))[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_out(x).reshape(B, K, 3, -1)[:, :, 1]  # hidden states of the s tokens


def token_rows(rtg: np.ndarray, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(3n, S + 5) float32 rows for steps with return-to-go ``rtg`` (n,), ``states`` (n, S) and ``actions`` (n,):
    R1 s1 a1 ... Rn sn an, each row [rtg | state | action | one-hot token type], for
    :meth:`Player.tokens`."""
    n, S = states.shape
    rows = np.zeros((n, 3, S + 5), dtype=np.float32)
    rows[:, 0, 0] = rtg
    rows[:, 1, 1 : S + 1] = states
    rows[:, 2, S + 1] = actions
    rows[:, 0, S + 2] = rows[:, 1, S + 3] = rows[:, 2, S + 4] = 1.0
    return rows.reshape(3 * n, S + 5)


def action_loss(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean squared error of α over the valid (not padded) steps."""
    m = valid.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


# ---- training -------------------------------------------------------------------------------------------------
class Prepared:
    """Episodes as model inputs: featurized, standardised states; normalised return-to-go; actions."""

    def __init__(self, ep: Episodes) -> None:
        T = ep.n_steps
        self.states, self.mean, self.std = standardised_states(ep)
        rewards = normalised_returns(ep.rewards, ep.budget, ep.bid_scale)
        self.rtg = return_to_go(rewards).astype(np.float32)
        self.actions = ep.actions.astype(np.float32)
        self.returns = rewards.sum(axis=1)
        self.T = T

    def windows(self, episodes: np.ndarray, ends: np.ndarray, K: int):
        """Left-padded windows of K steps ending before ``ends`` (exclusive) of the given episodes."""
        offs = np.arange(K) - K
        steps = ends[:, None] + offs[None, :]  # (B, K)
        valid = steps >= 0
        st = np.maximum(steps, 0)
        e = episodes[:, None]
        return (
            torch.from_numpy(np.where(valid, self.rtg[e, st], 0.0).astype(np.float32)),
            torch.from_numpy(np.where(valid[..., None], self.states[e, st], 0.0).astype(np.float32)),
            torch.from_numpy(np.where(valid, self.actions[e, st], 0.0).astype(np.float32)),
            torch.from_numpy(st.astype(np.int64)),
            torch.from_numpy(valid),
        )


def train_dt(
    ep: Episodes,
    cfg: DTConfig,
    tcfg: DTTrainConfig,
    value: ValueConfig | None = None,
    progress: bool = False,
    replayed: Replayed | None = None,
) -> tuple[DTBidder, dict]:
    """Train a Decision Transformer on ``ep`` and return the bidder that plays it, with training statistics.

    With ``value`` this is the value-guided DT, with any of: ``cfg.plan_weight > 0``, the plan value V(s, λ)
    (:func:`fit_plan_value`) fitted after the DT on the constant-bid episodes, which pulls every bid at play towards
    the constant α it rates best; ``cfg.value_target``, a state value that sets the return asked for at play;
    ``cfg.explore_epsilon > 0``, an action value Q(s, α) fitted first (:func:`train_action_value`; by default
    one-step TD on an expectile value), then at every step of the DT an exploration head proposes β ∈ [1 − ε, 1 + ε]
    and the explored action β·a (a = the logged α), trained to raise Q(s, β·a); the DT imitates β·a where
    Q(s, β·a) > Q(s, a) + margin and the logged a elsewhere; ``cfg.rtg_search``, that action value (twin-Q, one-step
    TD) kept in the model to pick, at play, among the DT's actions for several asked returns.

    With ``cfg.plan_source == "replay"`` the plan value learns from ``replayed`` (:func:`bidding.replay.
    replay_values`: every constant of its grid replayed on the impression log of training days) instead of the
    constant-bid episodes, which the logs then need not hold.
    """
    if any(not (math.isfinite(f) and f > 0) for f in cfg.rtg_search):
        raise ValueError(f"rtg_search factors must be positive, got {cfg.rtg_search}")
    if ep.n_steps > cfg.max_steps:
        raise ValueError(f"episodes have {ep.n_steps} steps, the model's max_steps is {cfg.max_steps}")
    if (value is None) == cfg.guided:
        raise ValueError(
            "a value-guided DT needs both a ValueConfig and explore_epsilon > 0, value_target or plan_weight > 0; "
            "a plain DT neither"
        )
    check_plan_weight(cfg.plan_weight)
    if cfg.plan_weight > 0 and cfg.plan_points < 2:
        raise ValueError(f"plan_points must be at least 2, got {cfg.plan_points}")
    if cfg.rtg_search and value.critic != "td":
        raise ValueError("rtg_search picks actions with the twin-Q critic: it needs ValueConfig.critic 'td'")
    if cfg.plan_source not in PLAN_SOURCES:
        raise ValueError(f"plan_source must be one of {PLAN_SOURCES}, got {cfg.plan_source!r}")
    replay = cfg.plan_weight > 0 and cfg.plan_source == "replay"
    if replay and replayed is None:
        raise ValueError(
            "a plan value from replayed logs needs their values: pass replayed= (bidding.replay)"
        )
    if not math.isfinite(cfg.plan_target_z):
        raise ValueError(f"plan_target_z must be a finite number, got {cfg.plan_target_z}")
    if cfg.plan_target_z >= 0 and not replay:
        raise ValueError(
            "plan_target_z keeps the target with the replayed plan's spend: it needs plan_weight > 0 and "
            "plan_source 'replay'"
        )
    if replay and len(replayed.grid) != cfg.plan_points:
        raise ValueError(
            f"the replayed values hold {len(replayed.grid)} constants, plan_points is {cfg.plan_points}"
        )
    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    data = Prepared(ep)
    plan_rows = lam = None
    if cfg.plan_weight > 0 and not replay:  # checked before the DT trains: it needs constant-bid episodes
        plan_rows, lam = plan_episodes(ep, value.plan_policies)
    t_start = time.perf_counter()
    critic, critic_loss = (None, None)
    if value is not None and cfg.rtg_search:  # one critic, the search's shape, serves exploration too
        critic, critic_loss = train_action_value(
            ep, cfg, replace(value, critic_hidden=cfg.value_hidden), tcfg.seed
        )
    elif value is not None and cfg.explore_epsilon > 0:
        critic, critic_loss = train_action_value(ep, cfg, value, tcfg.seed)
    model = DecisionTransformer(cfg)
    if model.search_value is not None:
        model.search_value.load_state_dict(critic.state_dict())
        model.search_value.requires_grad_(False)
    values = ("return_value.", "plan_value.", "plan_spend.", "search_value.")
    own = [(n, p) for n, p in model.named_parameters() if not n.startswith(values)]
    decay = [p for n, p in own if p.ndim >= 2 and "embed_time" not in n]
    rest = [p for n, p in own if not (p.ndim >= 2 and "embed_time" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tcfg.lr,
    )

    def lr_at(step: int) -> float:
        if step < tcfg.warmup:
            return (step + 1) / tcfg.warmup
        frac = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    t0 = time.perf_counter()
    losses: list[float] = []
    gated: list[float] = []
    model.train()
    step = 0
    for step in range(tcfg.steps):
        for g in opt.param_groups:
            g["lr"] = tcfg.lr * lr_at(step)
        idx = rng.integers(0, ep.size, size=tcfg.batch_size)
        ends = rng.integers(1, data.T + 1, size=tcfg.batch_size)
        rtg, states, actions, ts, valid = data.windows(idx, ends, cfg.context)
        h = model.hidden(rtg, states, actions, ts, valid)
        pred = model.act_head(h)
        if critic is None or cfg.explore_epsilon == 0:
            loss = action_loss(pred, actions, valid)
        else:
            beta = model.explore(h)
            explored = beta * actions
            m = valid.to(pred.dtype)
            q_explored = critic(states, explored)
            explore_loss = -(q_explored * m).sum() / m.sum().clamp_min(1.0)
            with torch.no_grad():
                better = q_explored.detach() > critic(states, actions) + value.margin
                target = torch.where(better, explored.detach().clamp(0.0, cfg.alpha_max), actions)
            loss = action_loss(pred, target, valid) + value.explore_weight * explore_loss
            gated.append(float((better & valid).sum()) / max(1.0, float(valid.sum())))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and step % 500 == 0:
            print(f"[dt] step {step} loss {np.mean(losses[-100:]):.4f}", flush=True)
        if tcfg.max_minutes and time.perf_counter() - t0 > 60 * tcfg.max_minutes:
            break
    model.eval()
    value_loss = None
    if model.return_value is not None:
        value_loss = _fit_return_value(model.return_value, data, value, tcfg.seed)
    plan_stats = {}
    if replay:
        with torch.no_grad():
            model.plan_grid.copy_(torch.from_numpy(replayed.grid.astype(np.float32)))
        t_plan = time.perf_counter()
        x = featurize(replayed.states, replayed.budget, replayed.bid_scale, data.T)
        x = ((x - data.mean) / data.std).astype(np.float32)
        loss, r2 = fit_plan_rows(
            model.plan_value, x, replayed.grid, replayed.value, value.plan_steps, tcfg.seed
        )
        # fitted on log(spend + SPEND_FLOOR): one conversion is 1e-4 to 1e-2 of a budget, and an error of the same
        # share matters as much to a small advertiser as to a large one
        spend = np.log(np.stack([replayed.cost, replayed.conversions], axis=-1) + SPEND_FLOOR)  # (R, G, 2)
        spend_loss, spend_r2 = fit_plan_rows(
            model.plan_spend, x, replayed.grid, spend, value.plan_steps, tcfg.seed + 1
        )
        plan_stats = {
            "plan_value_minutes": (time.perf_counter() - t_plan) / 60,
            "plan_value_loss": loss,
            "plan_value_r2_train": r2,
            "plan_spend_loss": spend_loss,
            "plan_spend_r2_train": spend_r2,
            "plan_states": int(x.shape[0]),
            "plan_alpha_low": float(replayed.grid[0]),
            "plan_alpha_high": float(replayed.grid[-1]),
        }
    elif plan_rows is not None:
        lo, hi = plan_range(lam)
        with torch.no_grad():
            model.plan_grid.copy_(torch.from_numpy(np.geomspace(lo, max(hi, lo * 1.0001), cfg.plan_points)))
        t_plan = time.perf_counter()
        loss, r2 = fit_plan_value(
            model.plan_value, data.states[plan_rows], data.rtg[plan_rows], lam, value.plan_steps, tcfg.seed
        )
        plan_stats = {
            "plan_value_minutes": (time.perf_counter() - t_plan) / 60,
            "plan_value_loss": loss,
            "plan_value_r2_train": r2,
            "plan_episodes": int(plan_rows.sum()),
            "plan_alpha_low": float(lo),
            "plan_alpha_high": float(hi),
        }
    target = float(np.quantile(data.returns, tcfg.target_quantile))
    bidder = DTBidder(model, data.mean, data.std, target, n_steps=data.T)
    stats = {
        "steps": step + 1,
        "train_minutes": (time.perf_counter() - t_start) / 60,
        "final_loss": float(np.mean(losses[-100:])),
        "first_loss": float(np.mean(losses[:100])),
        "target_return": target,
    }
    if critic is not None:
        stats["critic_loss"] = critic_loss
    if gated:
        stats["explored_share"] = float(np.mean(gated[-100:]))
    if value_loss is not None:
        stats["return_value_loss"] = value_loss
    stats.update(plan_stats)
    return bidder, stats


PLAN_MIN_EPISODES = 20
"""Fewest constant-bid episodes the plan value is fitted on without a warning."""
PLAN_MIN_RANGE = 4.0
"""Smallest ratio between the highest and lowest constant α it compares (99th / 1st percentile) without a
warning: a narrow range cannot hold the good constants (the earlier simulate default, 0.6-1.3, gives 2.2)."""


def check_plan_weight(w: float, name: str = "plan_weight") -> None:
    """A ValueError naming ``name`` unless the plan value's weight ``w`` is in [0, 1]."""
    if not (math.isfinite(w) and 0 <= w <= 1):
        raise ValueError(f"{name} must be in [0, 1], got {w}")


def plan_range(lam: np.ndarray) -> tuple[float, float]:
    """The constant α the plan value compares run between these: the 1st and 99th percentile of its episodes'."""
    lo, hi = np.quantile(lam, [0.01, 0.99])
    return float(lo), float(hi)


def plan_episodes(ep: Episodes, policies: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(E,) mask of the episodes the plan value learns from (behaviour policy in ``policies``) and their constant α
    (:func:`constant_alphas`). A ValueError when there are none; a warning when they are few or their constant α
    span a narrow range."""
    rows = np.isin(ep.policy, list(policies))
    if not rows.any():
        raise ValueError(
            f"the plan value of the value-guided DT learns from episodes of the constant-bid policies "
            f"{list(policies)}, and the trajectories have none (their policies: {sorted(set(ep.policy.tolist()))}); "
            "simulate with the 'fixed' policy, name others with --value.plan-policies, or turn the plan value off "
            "(--vdt-plan-weight 0)"
        )
    lam = constant_alphas(ep.actions[rows])
    lo, hi = plan_range(lam)
    if rows.sum() < PLAN_MIN_EPISODES or hi < PLAN_MIN_RANGE * lo:
        warnings.warn(
            f"the plan value learns from {int(rows.sum())} constant-bid episodes whose α span {lo:.3g}-{hi:.3g}: "
            f"with fewer than {PLAN_MIN_EPISODES} or a range narrower than {PLAN_MIN_RANGE:g}x it may not hold the "
            "constant that pays (simulate's default draws the fixed bidders' α log-uniformly from 0.03-1.3)",
            stacklevel=3,
        )
    return rows, lam


def constant_alphas(actions: np.ndarray) -> np.ndarray:
    """(E,) the constant α of each episode of a constant-bid policy, from its logged actions (E, T): their geometric
    mean, which removes the logged multiplicative exploration noise exp(σ·z) (z centred). Bids of 0 count as 1e-4."""
    return np.exp(np.log(np.maximum(np.asarray(actions, dtype=np.float64), 1e-4)).mean(axis=1))


def fit_plan_value(
    v: nn.Module, states: np.ndarray, rtg: np.ndarray, lam: np.ndarray, steps: int, seed: int
) -> tuple[float, float]:
    """Fit the plan value V(s, λ) = the normalised return-to-go from state s when bidding the constant α = λ from
    there on, by mean squared error on constant-bid episodes: standardised ``states`` (E, T, S), their normalised
    return-to-go ``rtg`` (E, T) and each episode's constant α ``lam`` (E,). In these episodes the bids after every
    step are λ (up to noise), so the logged return-to-go is an unbiased sample of V(s_t, λ): unlike an action value
    fitted on every policy's episodes, nothing about the later bids is confounded with the one judged.
    Returns the final training loss and the R² of the fit on all the rows."""
    E, T, S = states.shape
    x = np.concatenate([states.reshape(E * T, S), np.repeat(np.log(lam), T)[:, None]], axis=1)
    return _fit_value_rows(v, x, np.asarray(rtg).reshape(-1), steps, seed)


def fit_plan_rows(
    v: nn.Module, states: np.ndarray, grid: np.ndarray, values: np.ndarray, steps: int, seed: int
) -> tuple[float, float]:
    """Fit the plan value V(s, λ) on replayed values (:mod:`bidding.replay`): standardised ``states`` (R, S), the
    constants ``grid`` (G,) and ``values`` (R, G), the normalised score still to be earned bidding grid[g] from
    state r on; every (state, λ) pair is a row. ``values`` (R, G, k) fits a net of k outputs (the plan's spend).
    Returns the final training loss and the R² on all the rows (over every output)."""
    R, S = states.shape
    G = len(grid)
    x = np.concatenate(
        [np.repeat(states, G, axis=0), np.tile(np.log(np.asarray(grid, dtype=np.float64)), R)[:, None]],
        axis=1,
    )
    y = np.asarray(values)
    return _fit_value_rows(v, x, y.reshape(R * G, *y.shape[2:]), steps, seed)


def _fit_value_rows(v: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> tuple[float, float]:
    """Mean squared error of ``v`` on rows ``x`` (n, S + 1) = [state | log λ] and targets ``y`` (n,) or (n, k):
    batches of 512, Adam at 1e-3. Returns the final loss and the R² over all the rows."""
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(y, dtype=np.float32))
    if y.ndim == 1:
        y = y[:, None]
    g = torch.Generator().manual_seed(seed + 3)
    opt = torch.optim.Adam(v.parameters(), lr=1e-3)
    v.train()
    losses = []
    for _ in range(steps):
        i = torch.randint(0, x.shape[0], (512,), generator=g)
        loss = ((v(x[i]) - y[i]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    v.eval()
    with torch.no_grad():
        pred = torch.cat([v(x[j : j + 65536]) for j in range(0, x.shape[0], 65536)])
    var = float(((y - y.mean(0)) ** 2).mean())
    r2 = 1.0 - float(((pred - y) ** 2).mean()) / var if var > 0 else float("nan")
    return float(np.mean(losses[-100:])) if losses else float("nan"), r2


def _fit_return_value(v: nn.Module, data: Prepared, vcfg: ValueConfig, seed: int) -> float:
    """Fit V(s_t) to the normalised return-to-go R_t by τ-expectile regression (τ = ``vcfg.target_expectile``): the
    return that the better logged bidders still earned from states like s_t. Returns the final loss."""
    g = torch.Generator().manual_seed(seed + 2)
    s = torch.from_numpy(data.states.reshape(-1, data.states.shape[-1]))
    r = torch.from_numpy(data.rtg.reshape(-1))
    opt = torch.optim.Adam(v.parameters(), lr=vcfg.critic_lr)
    v.train()
    losses = []
    for _ in range(vcfg.target_steps):
        i = torch.randint(0, s.shape[0], (256,), generator=g)
        loss = expectile_loss(r[i] - v(s[i]).squeeze(-1), vcfg.target_expectile)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    v.eval()
    return float(np.mean(losses[-100:]))


# ---- play-time forward --------------------------------------------------------------------------------------
class Player:
    """A trained :class:`DecisionTransformer` (eval mode) run in numpy for play: one act at a time, with the same
    maths as ``forward`` (a test holds them equal to float32 rounding).

    An act is a few dozen operations on tiny arrays, so on a slow CPU their per-call overhead, not arithmetic, sets
    its time, and a numpy call costs a fraction of a torch one (torch only computes the exact-erf GELU, on a
    shared buffer). It also skips what the last state token cannot see: the action token after it, and in the
    last block every other token's query, attention and feed-forward; and while the window still starts at the
    episode's first step, :meth:`run` takes each block's keys and values of the earlier tokens, so an act runs only
    its new tokens.
    """

    def __init__(self, model: DecisionTransformer) -> None:
        cfg = model.cfg
        self.d, self.heads, self.alpha_max = cfg.d_model, cfg.n_heads, cfg.alpha_max
        self.max_steps = cfg.max_steps

        def arr(t: Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        def norm(ln: nn.LayerNorm) -> tuple[np.ndarray, np.ndarray, float]:
            return arr(ln.weight), arr(ln.bias), float(ln.eps)

        # [rtg | state | action | one-hot token type] rows (token_rows) → embeddings, in one product
        self.w_in = arr(
            torch.cat(
                [
                    model.embed_rtg.weight,
                    model.embed_state.weight,
                    model.embed_action.weight / cfg.alpha_max,
                    torch.stack(
                        [model.embed_rtg.bias, model.embed_state.bias, model.embed_action.bias], dim=1
                    ),
                ],
                dim=1,
            ).t()
        )
        self.time = arr(model.embed_time.weight)
        self.ln_in, self.ln_out = norm(model.ln_in), norm(model.ln_out)
        self.blocks = [
            {
                "ln1": norm(b.ln1),
                "qkv": (arr(b.qkv.weight.t()), arr(b.qkv.bias)),
                "proj": (arr(b.proj.weight.t()), arr(b.proj.bias)),
                "ln2": norm(b.ln2),
                "ff1": (arr(b.ff[0].weight.t()), arr(b.ff[0].bias)),
                "ff2": (arr(b.ff[2].weight.t()), arr(b.ff[2].bias)),
            }
            for b in model.blocks
        ]
        self.head = (arr(model.head.weight[0]), float(model.head.bias.detach()[0]))

        def layers(net: nn.Sequential | None) -> list[tuple[np.ndarray, np.ndarray]] | None:
            return (
                None
                if net is None
                else [(arr(net[i].weight.t()), arr(net[i].bias)) for i in range(0, len(net), 2)]
            )

        self.value = layers(model.return_value)
        self.plan = layers(model.plan_value)
        self.spend = layers(model.plan_spend)
        self.target_z = cfg.plan_target_z
        q = model.search_value
        self.search = None if q is None else (layers(q.q1), layers(q.q2))
        self.plan_weight = cfg.plan_weight
        self.plan_log_grid = None if self.plan is None else np.log(arr(model.plan_grid))
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    @staticmethod
    def _norm(x: np.ndarray, ln: tuple[np.ndarray, np.ndarray, float]) -> np.ndarray:
        w, b, eps = ln
        xc = x - np.add.reduce(x, axis=-1, keepdims=True) / x.shape[-1]
        var = np.add.reduce(xc * xc, axis=-1, keepdims=True) / x.shape[-1]
        return xc / np.sqrt(var + eps) * w + b

    def return_to_ask(self, state: np.ndarray) -> float:
        """The value-guided DT's V(s) for one standardised state (S,) (the MLP of ``return_value``)."""
        if self.value is None:
            raise ValueError("this Decision Transformer has no return value (value_target is off)")
        return float(self._mlp(self.value, state)[0])

    @staticmethod
    def _mlp(layers: list[tuple[np.ndarray, np.ndarray]], h: np.ndarray) -> np.ndarray:
        """An :func:`bidding.offline.mlp` (Linear, ReLU, ..., Linear) from its ``layers``' (weight, bias)."""
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def search_values(self, state: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """The search's Q(s, α) (the twin critic's minimum) for one standardised state (S,) and candidate α (n,)."""
        if self.search is None:
            raise ValueError("this Decision Transformer has no search value (rtg_search is empty)")
        a = np.asarray(alphas, dtype=np.float32)
        x = np.concatenate(
            [np.broadcast_to(state, (len(a), len(state))), (a / self.alpha_max)[:, None]], axis=1
        )
        return np.minimum(self._mlp(self.search[0], x)[:, 0], self._mlp(self.search[1], x)[:, 0])

    def plan_values(self, state: np.ndarray) -> np.ndarray:
        """The plan value V(s, λ) for one standardised state (S,) at every λ of the model's grid."""
        if self.plan is None:
            raise ValueError("this Decision Transformer has no plan value (plan_weight is 0)")
        return self._mlp(self.plan, self._plan_rows(state))[:, 0]

    def _plan_rows(self, state: np.ndarray) -> np.ndarray:
        """(G, S + 1) rows [state | log λ], one per λ of the grid: what the plan's heads read."""
        g = self.plan_log_grid
        return np.concatenate([np.broadcast_to(state, (len(g), len(state))), g[:, None]], axis=1)

    def plan_spends(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What bidding each λ of the grid from ``state`` (standardised, (S,)) on still spends and converts, in
        budgets (cost / budget, counted conversions × bid scale / budget): two (G,) arrays, at least 0."""
        if self.spend is None:
            raise ValueError("this Decision Transformer has no plan spend (it needs a replayed plan value)")
        out = np.maximum(np.exp(self._mlp(self.spend, self._plan_rows(state))) - SPEND_FLOOR, 0.0)
        return out[:, 0], out[:, 1]

    def plan_bid(
        self, state: np.ndarray, alpha: float, slack: float | None = None, unit: float | None = None
    ) -> float:
        """The value-guided bid: the DT's ``alpha`` pulled towards λ*, the constant α of the grid whose plan value
        from ``state`` is highest, as α^(1 − w) · λ*^w (w = plan_weight; a geometric mean, since bids scale).

        Keeping the target (``plan_target_z`` ≥ 0, a replayed plan value): with ``slack`` = (conversions so far ×
        bid scale − cost so far) / budget and ``unit`` = bid scale / budget (one conversion, in budgets), the
        constant λ keeps it when the projected period slack ``slack + conversions(λ) − cost(λ)`` is at least
        ``z · sqrt(conversions(λ) · unit)``, z standard deviations of the remaining conversions' count (Poisson) in
        budgets. λ* is the best of those by the plan value, and the bid is at most the highest of them. Where none
        keeps it, not bidding does if the target is met so far (slack ≥ 0): the bid is 0. Where it is missed so
        far, the bid is at most the constant with the most projected slack, if that is more than now, else 0."""
        values = self.plan_values(state)
        cap = self.alpha_max
        if self.spend is not None and self.target_z >= 0 and slack is not None:
            cost, conv = self.plan_spends(state)
            left = slack + conv - cost
            keeps = left >= self.target_z * np.sqrt(conv * max(unit or 0.0, 0.0))
            if keeps.any():
                best_i = int(np.argmax(np.where(keeps, values, -np.inf)))
                cap = math.exp(float(self.plan_log_grid[np.flatnonzero(keeps)[-1]]))
            else:
                best_i = int(np.argmax(left))
                if slack >= 0 or left[best_i] <= slack:  # bidding nothing keeps what is left
                    return 0.0
                cap = math.exp(float(self.plan_log_grid[best_i]))
        else:
            best_i = int(np.argmax(values))
        best = float(self.plan_log_grid[best_i])
        w = self.plan_weight
        bid = math.exp((1.0 - w) * math.log(max(alpha, 1e-6)) + w * best)
        return min(bid, cap, self.alpha_max)

    def tokens(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """(m, d) input tokens after ``ln_in`` from :func:`token_rows` rows (m, S + 5) and each row's step (m,)."""
        x = rows @ self.w_in + self.time[np.minimum(steps, self.max_steps - 1)]
        return self._norm(x, self.ln_in)

    def run(
        self, x: np.ndarray, past: list[tuple[np.ndarray, np.ndarray]] | None = None
    ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """α for the last of the tokens ``x`` (m, d) (it must be a state token), which follow the tokens whose
        per-block keys and values are ``past`` (None: no earlier tokens). Returns α and the keys and values of
        ``past`` + ``x``, to pass with the next tokens: exact while no token leaves the front of the window."""
        d, H = self.d, self.heads
        dh = d // H
        m = x.shape[0]
        P = 0 if past is None else past[0][0].shape[1]
        mask = self._masks.get((m, P))
        if mask is None:  # (m, P + m) causal bias of the new tokens; few shapes occur, so they are kept
            mask = np.zeros((m, P + m), dtype=np.float32)
            mask[:, P:] = np.triu(np.full((m, m), -np.inf, dtype=np.float32), 1)
            self._masks[(m, P)] = mask
        scale = np.float32(1.0 / math.sqrt(dh))
        last = len(self.blocks) - 1
        kv = []
        for i, blk in enumerate(self.blocks):
            h = self._norm(x, blk["ln1"])
            w, b = blk["qkv"]
            if i < last:
                q, k, v = (h @ w + b).reshape(m, 3, H, dh).transpose(1, 2, 0, 3)  # each (H, m, dh)
            else:  # the last block: only the last token's output is read
                q = (h[-1] @ w[:, :d] + b[:d]).reshape(H, 1, dh)
                k, v = (h @ w[:, d:] + b[d:]).reshape(m, 2, H, dh).transpose(1, 2, 0, 3)
                x, mask = x[-1:], mask[-1:]
            if P:
                k = np.concatenate([past[i][0], k], axis=1)
                v = np.concatenate([past[i][1], v], axis=1)
            kv.append((k, v))
            a = q @ k.transpose(0, 2, 1) * scale + mask
            a = np.exp(a - a.max(axis=-1, keepdims=True))
            a /= np.add.reduce(a, axis=-1, keepdims=True)
            o = (a @ v).transpose(1, 0, 2).reshape(-1, d)
            w, b = blk["proj"]
            x = x + o @ w + b
            h = self._norm(x, blk["ln2"])
            (w1, b1), (w2, b2) = blk["ff1"], blk["ff2"]
            x = x + F.gelu(torch.from_numpy(h @ w1 + b1)).numpy() @ w2 + b2
        w, b = self.head
        z = float(self._norm(x[-1], self.ln_out) @ w) + b
        return self.alpha_max * 0.5 * (1.0 + math.tanh(0.5 * z)), kv  # sigmoid, without overflow


@functools.cache
def _blas_controller() -> threadpoolctl.ThreadpoolController:
    """The thread pools of the loaded BLAS libraries (numpy's), found once."""
    return threadpoolctl.ThreadpoolController()


# ---- the bidder -----------------------------------------------------------------------------------------------
class DTBidder:
    """Plays a trained Decision Transformer through the bidder protocol (needs ``observe`` every step).

    The model's weights are copied into a :class:`Player` when the bidder is built: a model changed afterwards
    needs a new bidder."""

    @property
    def name(self) -> str:
        return "vdt" if self.cfg.guided else "dt"

    def __init__(
        self,
        model: DecisionTransformer,
        mean: np.ndarray,
        std: np.ndarray,
        target_return: float,
        n_steps: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.n_steps = int(n_steps or model.cfg.max_steps)
        """Steps per period of the training data (used to scale the state features)."""
        self.cfg = model.cfg
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.target_return = float(target_return)
        self.player = Player(self.model)

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser
        self.states: list[np.ndarray] = []
        self.rtgs: list[float] = []
        self.actions: list[float] = []
        self.dt_actions: list[float] = []  # what the DT itself proposed (= actions without a plan value)
        self._tokens: np.ndarray | None = None  # input tokens of the episode so far (Player.tokens)
        # per-block keys and values of the tokens so far, while the window grows
        self._kv: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.rtg = self.target_return
        self.cost = 0.0
        self.conversions = 0.0
        self.score = 0.0

    def act(self, state: np.ndarray) -> float:
        """α for this step. The model runs in numpy through :class:`Player` on one thread: numpy's BLAS and torch
        (which computes the GELU) are held to one thread for the act. For arrays this small a second thread saves
        little, and while another process keeps the cores busy, waiting for it costs far more (with torch on two
        threads and a training job on both cores, 22 ms per act against 3 ms)."""
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            with _blas_controller().limit(limits=1, user_api="blas"):
                return self._act(state)
        finally:
            if threads != 1:
                torch.set_num_threads(threads)

    def _act(self, state: np.ndarray) -> float:
        x = featurize_state(state, self.advertiser, self.n_steps)
        self.states.append(((x - self.mean) / self.std).astype(np.float32))
        if self.player.value is not None:  # ask for what the value expects from here
            self.rtg = self.player.return_to_ask(self.states[-1])
        self.rtgs.append(self.rtg)
        t = len(self.states) - 1
        if t == 0:  # R0 s0
            rows = token_rows(np.array(self.rtgs), self.states[0][None], np.zeros(1))[:2]
            steps, r_row = np.zeros(2, dtype=np.int64), 0
        else:  # a(t-1) R(t) s(t): rows 2-4 of steps t-1 and t (an a token carries its own step's time)
            rtg, states = np.array(self.rtgs[-2:]), np.stack(self.states[-2:])
            rows = token_rows(rtg, states, np.array([self.actions[-1], 0.0]))[2:5]
            steps, r_row = np.array([t - 1, t, t]), 1
        factors = self.cfg.rtg_search or (1.0,)
        tried = []
        for (
            f
        ) in factors:  # GAS-style: the DT's action for each return asked, Q picks (one pass without search)
            cand = rows.copy()
            cand[r_row, 0] = self.rtg * f
            new = self.player.tokens(cand, steps)
            if (
                t < self.cfg.context
            ):  # the window still starts at step 0: earlier tokens' keys and values stand
                a, kv = self.player.run(new, self._kv)
            else:  # the window has slid: every hidden state changes, so the window runs whole
                window = np.concatenate([self._tokens[3 * (t + 1 - self.cfg.context) :], new])
                a, kv = self.player.run(window)[0], None
            tried.append((a, new, kv, self.rtg * f))
        pick = 0
        if self.player.search is not None:
            pick = int(np.argmax(self.player.search_values(self.states[-1], np.array([c[0] for c in tried]))))
        a, new, kv, asked = tried[pick]
        self.rtgs[-1] = asked
        self._tokens = new if t == 0 else np.concatenate([self._tokens, new])  # R0 s0 a0 ... R(t) s(t)
        if t < self.cfg.context:
            self._kv = kv
        self.dt_actions.append(a)
        # the plan value pulls the bid towards the best constant bid from here; the DT reads the bid made
        if self.player.plan is not None:
            adv = self.advertiser
            b = max(float(adv.budget), 1e-9)
            slack = (self.conversions * adv.bid_scale - self.cost) / b
            a = self.player.plan_bid(self.states[-1], a, slack, adv.bid_scale / b)
        self.actions.append(a)
        return a

    def observe(self, feedback: Feedback) -> None:
        adv = self.advertiser
        self.cost += float(feedback.outcome.cost[adv.index])
        self.conversions += float(feedback.outcome.conversions[adv.index])
        score = float(adv.rules.score(self.conversions, self.cost, adv.bid_scale))
        self.rtg -= (score - self.score) * adv.bid_scale / max(adv.budget, 1e-9)
        self.score = score

    # ---- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``dt.safetensors`` and ``dt.json`` (with the weights' hash) as the folder ``path``, replaced whole
        (:func:`onesearch.io.save_weights`)."""
        meta = {
            "config": asdict(self.cfg),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_return": self.target_return,
            "n_steps": self.n_steps,
        }
        return save_weights(path, "dt", self.model.state_dict(), meta)

    @classmethod
    def load(
        cls, path: str | Path, plan_weight: float | None = None, plan_target_z: float | None = None
    ) -> DTBidder:
        """The bidder saved in the folder ``path``; ``plan_weight`` (in [0, 1]) replaces the saved weight of its
        plan value (w = 0 bids the DT's own α, held under the target's cap when it keeps one) and
        ``plan_target_z`` the margin by which it keeps the target (below 0: not kept), for a sensitivity check
        without retraining. A replayed plan value saved before the spend head existed loads without it (it cannot
        keep a target)."""
        src = Path(path)
        weights, meta = load_weights(src, "dt", "Decision Transformer")
        cfg = DTConfig(**meta["config"])
        model = DecisionTransformer(cfg)
        if model.plan_spend is not None and not any(k.startswith("plan_spend.") for k in weights):
            model.plan_spend = None  # saved before the spend head: plays as it did then
        model.load_state_dict(weights)
        if plan_weight is not None:
            if cfg.plan_weight == 0:
                raise ValueError(f"{src}: this Decision Transformer has no plan value to weigh")
            check_plan_weight(plan_weight)
            model.cfg = cfg = replace(cfg, plan_weight=float(plan_weight))
        if plan_target_z is not None:
            if not math.isfinite(plan_target_z):
                raise ValueError(f"plan_target_z must be a finite number, got {plan_target_z}")
            if plan_target_z >= 0 and model.plan_spend is None:
                raise ValueError(
                    f"{src}: this Decision Transformer has no replayed plan spend to keep a target with"
                )
            model.cfg = replace(cfg, plan_target_z=float(plan_target_z))
        return cls(
            model, np.array(meta["mean"]), np.array(meta["std"]), meta["target_return"], meta["n_steps"]
        )
