"""bench-simulator: how fast the auction simulator plays full delivery periods.

Each episode is a full period of ``--impressions`` impression opportunities over ``--n-steps`` steps with
``--n-advertisers`` advertisers bidding on every impression (one GSP auction per impression, all bids each), played
through ``simulators/Auction-v0`` with the default heuristic competitors and a fixed-α agent. ``auctions_per_second``
is impressions / ``episode_seconds``, the median over ``--episodes`` timed episodes (after one warm-up episode).
``engine_*`` times the market alone (every advertiser at a fixed α, no bidder code) in the same run.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from pipelines import tracking
from simulators.auction import AuctionRules
from simulators.env import AuctionEnv
from simulators.market import Market, MarketConfig

JOB = "bench-simulator"


@dataclass(frozen=True)
class Config:
    """Settings of the bench-simulator job."""

    impressions: int = 500_000
    """Impression opportunities per episode."""
    n_advertisers: int = 48
    """Advertisers bidding on every impression."""
    n_steps: int = 48
    """Steps per episode."""
    n_slots: int = 3
    """Ad slots per auction."""
    episodes: int = 5
    """Timed episodes (the median is reported)."""
    seed: int = 0
    """Seed of the first episode."""


PRESETS = {"default": Config(), "tiny": Config(impressions=5_000, n_advertisers=8, n_steps=8, episodes=2)}


def _market_cfg(cfg: Config) -> MarketConfig:
    exposure = tuple(max(0.2, 1.0 - 0.2 * k) for k in range(cfg.n_slots))
    return MarketConfig(
        impressions=cfg.impressions,
        n_advertisers=cfg.n_advertisers,
        n_steps=cfg.n_steps,
        rules=AuctionRules(n_slots=cfg.n_slots, exposure=exposure),
    )


def _env_episode(env: AuctionEnv, seed: int) -> float:
    t = time.perf_counter()
    env.reset(seed=seed)
    action = np.array([1.0], dtype=np.float32)
    done = False
    while not done:
        _, _, done, _, _ = env.step(action)
    return time.perf_counter() - t


def _engine_episode(mcfg: MarketConfig, seed: int) -> float:
    t = time.perf_counter()
    market = Market(mcfg, np.random.default_rng(seed))
    alphas = np.ones(mcfg.n_advertisers)
    while not market.done:
        market.step(alphas)
    return time.perf_counter() - t


def main(cfg: Config) -> dict:
    if cfg.episodes < 1:
        raise ValueError(f"episodes must be positive, got {cfg.episodes}")
    mcfg = _market_cfg(cfg)
    env = AuctionEnv(config=mcfg)
    with tracking.job_run(JOB, cfg):
        _env_episode(env, cfg.seed + cfg.episodes)  # warm-up, on a seed not timed
        env_times, engine_times = [], []
        for e in range(cfg.episodes):
            env_times.append(_env_episode(env, cfg.seed + e))
            engine_times.append(_engine_episode(mcfg, cfg.seed + e))
            print(
                f"[bench-simulator] episode {e + 1}/{cfg.episodes}: env {env_times[-1]:.3f} s, "
                f"engine {engine_times[-1]:.3f} s",
                file=sys.stderr,
            )
        ep = statistics.median(env_times)
        eng = statistics.median(engine_times)
        result = {
            "impressions": cfg.impressions,
            "n_advertisers": cfg.n_advertisers,
            "n_steps": cfg.n_steps,
            "n_slots": cfg.n_slots,
            "episodes": cfg.episodes,
            "episode_seconds": ep,
            "auctions_per_second": cfg.impressions / ep,
            "bids_per_second": cfg.impressions * cfg.n_advertisers / ep,
            "engine_episode_seconds": eng,
            "engine_auctions_per_second": cfg.impressions / eng,
            "episode_seconds_all": env_times,
        }
        tracking.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
    return result
