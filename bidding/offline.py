"""Offline RL baselines in torch: behaviour cloning, IQL and CQL, with one policy-network bidder.

All three read the same transitions (``Transitions.from_episodes``): featurized, standardised states; the logged α;
rewards normalised by budget / bid scale (a period that spends its budget at the target cost earns 1). The policy is
an MLP whose output ``alpha_max · sigmoid(·)`` is the bid coefficient.

* **BC**: mean squared error to the logged α.
* **IQL** (Kostrikov et al. 2021): V by expectile regression on twin-Q targets, Q by TD on V(s'), and the policy by
  advantage-weighted regression ``exp(β·(Q − V))·(π(s) − a)²`` (weights clipped at 100).
* **CQL** (Kumar et al. 2020, deterministic-actor form): twin-Q TD loss plus ``α_cql · (logsumexp over sampled
  actions of Q − Q(s, a_logged))``; the actor maximises Q with a BC term (as in TD3+BC) to stay on the data.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bidding.data import Episodes, featurize_state, normalised_returns, standardised_states
from onesearch.io import load_weights, save_weights
from simulators.auction import AuctionRules
from simulators.market import Advertiser

ALGORITHMS = ("bc", "iql", "cql")


@dataclass(frozen=True)
class OfflineConfig:
    """Settings shared by BC, IQL and CQL."""

    algorithm: str = "iql"
    """bc, iql or cql."""
    hidden: int = 256
    """Width of the two hidden layers of every network."""
    steps: int = 20_000
    """Optimiser steps."""
    batch_size: int = 256
    """Transitions per step."""
    lr: float = 3e-4
    """Adam learning rate of every network."""
    gamma: float = 0.99
    """Discount."""
    tau_target: float = 0.005
    """Polyak rate of the target Q networks."""
    expectile: float = 0.7
    """IQL: expectile τ of the value regression."""
    beta: float = 3.0
    """IQL: inverse temperature of the advantage weights."""
    cql_alpha: float = 1.0
    """CQL: weight of the conservative penalty."""
    cql_samples: int = 10
    """CQL: uniformly sampled actions per state in the penalty."""
    bc_weight: float = 0.25
    """CQL actor: λ of the TD3+BC normalisation (larger = more Q, less cloning). TD3+BC's 2.5 lets the actor follow
    an under-trained conservative Q to α ≈ 0 in these markets; 0.25 keeps it on the logged bids (docs/bidding.md)."""
    alpha_max: float = AuctionRules.alpha_max
    """Highest bid coefficient (bench-bidding sets the market's rule)."""
    max_minutes: float = 15.0
    """Stop after this much training time (0 = no limit)."""
    seed: int = 0
    """Seed of initialisation and sampling."""


class Transitions(NamedTuple):
    """(s, a, r, s', done) as tensors, plus the state normalisation."""

    s: Tensor
    a: Tensor
    r: Tensor
    s2: Tensor
    done: Tensor
    mean: np.ndarray
    std: np.ndarray
    n_steps: int

    @classmethod
    def from_episodes(cls, ep: Episodes) -> Transitions:
        T = ep.n_steps
        x, mean, std = standardised_states(ep)
        r = normalised_returns(ep.rewards, ep.budget, ep.bid_scale).astype(np.float32)
        nxt = np.concatenate([x[:, 1:], np.zeros_like(x[:, :1])], axis=1)
        done = np.zeros((ep.size, T), dtype=np.float32)
        done[:, -1] = 1.0
        f = lambda a, d: torch.from_numpy(np.ascontiguousarray(a.reshape(-1, d) if d else a.reshape(-1)))  # noqa: E731
        return cls(
            f(x, x.shape[-1]), f(ep.actions, 0), f(r, 0), f(nxt, x.shape[-1]), f(done, 0), mean, std, T
        )


def mlp(d_in: int, hidden: int, d_out: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out)
    )


class Policy(nn.Module):
    """State → α in (0, alpha_max)."""

    def __init__(self, d_state: int, hidden: int, alpha_max: float) -> None:
        super().__init__()
        self.net = mlp(d_state, hidden)
        self.alpha_max = alpha_max

    def forward(self, s: Tensor) -> Tensor:
        return torch.sigmoid(self.net(s).squeeze(-1)) * self.alpha_max


class TwinQ(nn.Module):
    """Two Q networks over (state, α / alpha_max)."""

    def __init__(self, d_state: int, hidden: int, alpha_max: float) -> None:
        super().__init__()
        self.q1, self.q2 = mlp(d_state + 1, hidden), mlp(d_state + 1, hidden)
        self.alpha_max = alpha_max

    def both(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([s, (a / self.alpha_max).unsqueeze(-1)], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return torch.minimum(*self.both(s, a))


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    """Mean of ``|τ − 1(diff < 0)| · diff²`` (IQL's asymmetric L2; τ = 0.5 is half the squared error)."""
    w = torch.where(diff < 0, 1.0 - tau, tau)
    return (w * diff**2).mean()


def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1 - tau).add_(s, alpha=tau)


def train_offline(ep: Episodes, cfg: OfflineConfig, progress: bool = False) -> tuple[PolicyBidder, dict]:
    """Train ``cfg.algorithm`` on the episodes; returns the policy as a bidder, and training statistics."""
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown offline algorithm {cfg.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    data = Transitions.from_episodes(ep)
    d = data.s.shape[1]
    n = data.s.shape[0]
    pi = Policy(d, cfg.hidden, cfg.alpha_max)
    opt_pi = torch.optim.Adam(pi.parameters(), lr=cfg.lr)
    if cfg.algorithm != "bc":
        q = TwinQ(d, cfg.hidden, cfg.alpha_max)
        q_target = copy.deepcopy(q).requires_grad_(False)
        opt_q = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    if cfg.algorithm == "iql":
        v = mlp(d, cfg.hidden)
        opt_v = torch.optim.Adam(v.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    log: dict[str, list[float]] = {"pi": [], "q": [], "v": []}
    step = 0
    for step in range(cfg.steps):
        i = torch.randint(0, n, (cfg.batch_size,), generator=g)
        s, a, r, s2, done = data.s[i], data.a[i], data.r[i], data.s2[i], data.done[i]
        if cfg.algorithm == "bc":
            loss_pi = ((pi(s) - a) ** 2).mean()
        elif cfg.algorithm == "iql":
            with torch.no_grad():
                q_sa = q_target(s, a)
            loss_v = expectile_loss(q_sa - v(s).squeeze(-1), cfg.expectile)
            opt_v.zero_grad(set_to_none=True)
            loss_v.backward()
            opt_v.step()
            with torch.no_grad():
                target = r + cfg.gamma * (1 - done) * v(s2).squeeze(-1)
            q1, q2 = q.both(s, a)
            loss_q = ((q1 - target) ** 2 + (q2 - target) ** 2).mean()
            opt_q.zero_grad(set_to_none=True)
            loss_q.backward()
            opt_q.step()
            _soft_update(q_target, q, cfg.tau_target)
            with torch.no_grad():
                w = torch.exp(cfg.beta * (q_sa - v(s).squeeze(-1))).clamp_max(100.0)
            loss_pi = (w * (pi(s) - a) ** 2).mean()
            log["v"].append(float(loss_v.detach()))
            log["q"].append(float(loss_q.detach()))
        else:  # cql
            with torch.no_grad():
                target = r + cfg.gamma * (1 - done) * q_target(s2, pi(s2))
            q1, q2 = q.both(s, a)
            td = ((q1 - target) ** 2 + (q2 - target) ** 2).mean()
            B, m = s.shape[0], cfg.cql_samples
            a_rand = torch.rand(B, m, generator=g) * cfg.alpha_max
            s_rep = s.unsqueeze(1).expand(B, m, d).reshape(B * m, d)
            r1, r2 = q.both(s_rep, a_rand.reshape(-1))
            gap1 = torch.logsumexp(r1.view(B, m), dim=1) - math.log(m) - q1
            gap2 = torch.logsumexp(r2.view(B, m), dim=1) - math.log(m) - q2
            loss_q = td + cfg.cql_alpha * (gap1.mean() + gap2.mean())
            opt_q.zero_grad(set_to_none=True)
            loss_q.backward()
            opt_q.step()
            _soft_update(q_target, q, cfg.tau_target)
            act = pi(s)
            q_pi = q(s, act)
            lam = cfg.bc_weight / q_pi.abs().mean().detach().clamp_min(1e-6)
            loss_pi = -lam * q_pi.mean() + ((act - a) ** 2).mean()
            log["q"].append(float(loss_q.detach()))
        opt_pi.zero_grad(set_to_none=True)
        loss_pi.backward()
        opt_pi.step()
        log["pi"].append(float(loss_pi.detach()))
        if progress and step % 2000 == 0:
            print(f"[{cfg.algorithm}] step {step} policy loss {np.mean(log['pi'][-200:]):.4f}", flush=True)
        if cfg.max_minutes and time.perf_counter() - t0 > 60 * cfg.max_minutes:
            break
    bidder = PolicyBidder(cfg.algorithm, pi.eval(), data.mean, data.std, data.n_steps)
    stats = {
        "steps": step + 1,
        "train_minutes": (time.perf_counter() - t0) / 60,
        "first_policy_loss": float(np.mean(log["pi"][:100])),
        "final_policy_loss": float(np.mean(log["pi"][-100:])),
    }
    if log["q"]:
        stats["final_q_loss"] = float(np.mean(log["q"][-100:]))
    return bidder, stats


class PolicyBidder:
    """A trained policy network as a bidder (BC, IQL, CQL)."""

    def __init__(self, name: str, policy: Policy, mean: np.ndarray, std: np.ndarray, n_steps: int) -> None:
        self.name = name
        self.policy = policy.eval()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.n_steps = int(n_steps)

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser

    @torch.no_grad()
    def act(self, state: np.ndarray) -> float:
        x = featurize_state(state, self.advertiser, self.n_steps)
        x = torch.from_numpy(((x - self.mean) / self.std).astype(np.float32)[None])
        return float(self.policy(x)[0])

    def save(self, path: str | Path) -> Path:
        """Write ``policy.safetensors`` and ``policy.json`` (with the weights' hash) as the folder ``path``, replaced
        whole (:func:`onesearch.io.save_weights`)."""
        meta = {
            "name": self.name,
            "d_state": self.mean.shape[0],
            "hidden": self.policy.net[0].out_features,
            "alpha_max": self.policy.alpha_max,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "n_steps": self.n_steps,
        }
        return save_weights(path, "policy", self.policy.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path) -> PolicyBidder:
        weights, meta = load_weights(path, "policy", "policy")
        pi = Policy(meta["d_state"], meta["hidden"], meta["alpha_max"])
        pi.load_state_dict(weights)
        return cls(meta["name"], pi, np.array(meta["mean"]), np.array(meta["std"]), meta["n_steps"])


__all__ = ["ALGORITHMS", "OfflineConfig", "PolicyBidder", "Transitions", "expectile_loss", "train_offline"]
