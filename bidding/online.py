"""Online RL bidders: Stable-Baselines3 PPO and SAC trained directly in ``simulators/Auction-v0``.

The agent sees the state featurized per advertiser (``bidding.data.featurize``: money / bid scale, conversions per
step / what the budget buys at target per step) and then standardised by a running mean (SB3 ``VecNormalize``), so one
policy serves advertisers of every size; rewards are the change of the score, normalised the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np

from bidding.data import featurize_state
from simulators.env import AuctionEnv
from simulators.market import Advertiser, MarketConfig

ALGORITHMS = ("ppo", "sac")


@dataclass(frozen=True)
class OnlineConfig:
    """Online training of an SB3 bidder."""

    algorithm: str = "ppo"
    """ppo or sac."""
    timesteps: int = 50_000
    """Environment steps of training."""
    impressions: int = 100_000
    """Impressions per period while training (fewer than the test market's, for speed)."""
    max_minutes: float = 15.0
    """Stop after this much training time (0 = no limit)."""
    seed: int = 0
    """Seed of the env and the agent."""


class FeaturizedAuction(gym.ObservationWrapper):
    """The auction env with observations featurized for the advertiser the agent bids for."""

    def __init__(self, env: AuctionEnv) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(16,), dtype=np.float32)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        env = self.env.unwrapped
        spec = env.market.advertisers.spec(env.agent_index)
        return featurize_state(obs, spec, env.cfg.n_steps)


def _time_limit(minutes: float):
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            return not minutes or time.perf_counter() - self.t0 < 60 * minutes

    return Stop()


def train_online(market: MarketConfig, cfg: OnlineConfig) -> tuple[SB3Bidder, dict]:
    """Train PPO or SAC in the env; returns the bidder and training statistics."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown online algorithm {cfg.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    env_market = replace(market, impressions=max(market.n_steps, min(cfg.impressions, market.impressions)))
    venv = VecNormalize(DummyVecEnv([lambda: FeaturizedAuction(AuctionEnv(config=env_market))]), gamma=0.99)
    venv.seed(cfg.seed)
    if cfg.algorithm == "ppo":
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=min(2048, max(64, cfg.timesteps)),
            batch_size=64,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
    else:
        model = SAC(
            "MlpPolicy",
            venv,
            learning_starts=min(1000, cfg.timesteps // 4),
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.timesteps, callback=_time_limit(cfg.max_minutes), progress_bar=False)
    stats = {"timesteps": int(model.num_timesteps), "train_minutes": (time.perf_counter() - t0) / 60}
    rms = venv.obs_rms
    bidder = SB3Bidder(
        cfg.algorithm,
        model,
        rms.mean.astype(np.float32),
        rms.var.astype(np.float32),
        market.n_steps,
        float(venv.clip_obs),
    )
    return bidder, stats


class SB3Bidder:
    """A trained SB3 policy as a bidder (deterministic actions)."""

    def __init__(self, name: str, model, mean: np.ndarray, var: np.ndarray, n_steps: int, clip: float = 10.0):
        self.name = name
        self.model = model
        self.mean = np.asarray(mean, dtype=np.float32)
        self.var = np.asarray(var, dtype=np.float32)
        self.n_steps = int(n_steps)
        self.clip = float(clip)
        self.deterministic = True
        """False: sample the policy's actions (behaviour data) instead of taking its mean."""

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser

    def act(self, state: np.ndarray) -> float:
        x = featurize_state(state, self.advertiser, self.n_steps)
        x = np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)
        return float(self.model.predict(x, deterministic=self.deterministic)[0][0])

    def save(self, path: str | Path) -> Path:
        """Write ``model.zip`` (SB3) and ``sb3.json`` (normalisation) into the folder ``path``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save(out / "model.zip")
        meta = {
            "name": self.name,
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "n_steps": self.n_steps,
            "clip": self.clip,
        }
        (out / "sb3.json.tmp").write_text(json.dumps(meta, indent=2))
        (out / "sb3.json.tmp").replace(out / "sb3.json")
        return out

    @classmethod
    def load(cls, path: str | Path) -> SB3Bidder:
        from stable_baselines3 import PPO, SAC

        src = Path(path)
        if not (src / "sb3.json").is_file() or not (src / "model.zip").is_file():
            raise FileNotFoundError(f"{src}: not a saved SB3 bidder (needs sb3.json and model.zip)")
        meta = json.loads((src / "sb3.json").read_text())
        algo = {"ppo": PPO, "sac": SAC}[meta["name"]]
        model = algo.load(src / "model.zip", device="cpu")
        return cls(
            meta["name"], model, np.array(meta["mean"]), np.array(meta["var"]), meta["n_steps"], meta["clip"]
        )


__all__ = ["ALGORITHMS", "FeaturizedAuction", "OnlineConfig", "SB3Bidder", "train_online"]
