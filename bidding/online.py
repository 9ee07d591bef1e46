"""Online RL bidders: Stable-Baselines3 PPO and SAC trained directly in ``simulators/Auction-v0``.

The agent sees the state featurized per advertiser (``bidding.data.featurize``: money / bid scale, conversions per
step / what the budget buys at target per step) and then standardised by a running mean (SB3 ``VecNormalize``), so one
policy serves advertisers of every size. Its reward is the change of the score in units of what the advertiser's
budget buys at its target (score · bid scale / budget, :func:`bidding.data.normalised_returns`), so a period scores
about the same for a small advertiser as for a large one and the large ones do not drown the gradient
(``scale_reward``; off, the raw change of the score is standardised by SB3's running return scale, one scale for
every advertiser).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np

from bidding.data import featurize_state
from onesearch.io import load_weights, save_weights
from simulators.env import AuctionEnv
from simulators.market import Advertiser, MarketConfig

ALGORITHMS = ("ppo", "sac")

ACTIONS = ("alpha", "log_alpha")
"""What the policy outputs: the bid coefficient α itself, or ln α (mapped back by ``exp``)."""
LOG_ALPHA_FLOOR = 1e-3
"""The smallest α a ``log_alpha`` policy can bid (its action space is [ln LOG_ALPHA_FLOOR, ln alpha_max])."""


@dataclass(frozen=True)
class OnlineConfig:
    """Online training of an SB3 bidder."""

    algorithm: str = "ppo"
    """ppo or sac."""
    timesteps: int = 50_000
    """Environment steps of training."""
    impressions: int = 0
    """Impressions per period while training: 0 = the market's own (train where the bidder is tested). Fewer scale
    the budgets down with them, so that the market binds the same way."""
    max_minutes: float = 15.0
    """Stop after this much training time (0 = no limit). A cap that is reached makes the result depend on the
    machine's load (``stats["stopped_by_time"]`` says when it was); a step budget alone does not."""
    seed: int = 0
    """Seed of the env and the agent."""
    envs: int = 1
    """Copies of the env stepped together (the policy acts for all of them in one forward pass)."""
    net: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy and of the value / Q networks (SB3's default for SAC is 256, 256: four
    times slower per gradient step here, for no better bidder)."""
    scale_reward: bool = True
    """Reward in units of what the budget buys at the target (score · bid scale / budget), instead of the raw change
    of the score standardised by one running scale."""
    rollout: int = 1024
    """PPO: environment steps per update, over all env copies (each copy steps ``rollout / envs`` of them; fewer
    when ``timesteps`` is smaller). SB3's default is 2,048; half of it updates twice as often on the same steps,
    and in the budget-bound market PPO reached 80% of the hindsight bound by 30-50k steps where 2,048 took 80-100k
    (two seeds, docs/bidding.md). SAC updates after every step and ignores it."""
    learning_rate: float = 0.0
    """The optimiser's step size (0 = SB3's default for the algorithm: 3e-4 for both)."""
    action: str = ""
    """What the policy outputs: ``alpha`` (the env's own action, [0, alpha_max]) or ``log_alpha`` (ln α in
    [ln LOG_ALPHA_FLOOR, ln alpha_max]; α = exp of it); empty = the algorithm's own (:attr:`policy_action`): PPO
    ``log_alpha``, SAC ``alpha``. PPO's Gaussian policy starts at mean 0 with sd 1: over α itself half of its first
    actions clip to a bid of 0, over ln α they start at α = 1 and spread by a factor e (docs/bidding.md: it learns
    in fewer steps). SAC squashes its actions into the box, so its first ones already spread over it."""

    @property
    def policy_action(self) -> str:
        """The action the policy outputs, ``action`` or the algorithm's own."""
        return self.action or ("log_alpha" if self.algorithm == "ppo" else "alpha")

    def __post_init__(self) -> None:
        if self.action and self.action not in ACTIONS:
            raise ValueError(f"action must be empty or one of {', '.join(ACTIONS)}, got {self.action!r}")
        if not (np.isfinite(self.learning_rate) and 0 <= self.learning_rate < 1):
            raise ValueError(f"learning_rate must be in [0, 1) (0 = SB3's default), got {self.learning_rate}")
        if self.rollout < 8 * self.envs:
            raise ValueError(
                f"rollout must be at least 8 steps per env copy, got {self.rollout} for {self.envs}"
            )
        if self.timesteps < 1 or self.envs < 1 or self.max_minutes < 0:
            raise ValueError(
                f"timesteps and envs must be positive and max_minutes >= 0, got {self.timesteps}, {self.envs} and "
                f"{self.max_minutes}"
            )
        try:
            _check_net_arch(list(self.net))
            if not self.net:
                raise ValueError("no layer")
        except ValueError as e:
            raise ValueError(
                f"net must list 1-8 hidden layer widths in [1, {MAX_LAYER}], got {self.net} ({e})"
            ) from None


class FeaturizedAuction(gym.ObservationWrapper):
    """The auction env with observations featurized for the advertiser the agent bids for."""

    def __init__(self, env: AuctionEnv) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(16,), dtype=np.float32)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        env = self.env.unwrapped
        spec = env.market.advertisers.spec(env.agent_index, env.cfg.rules)
        return featurize_state(obs, spec, env.cfg.n_steps)


class LogAlphaAction(gym.ActionWrapper):
    """The agent acts in ln α: its action u in [ln LOG_ALPHA_FLOOR, ln alpha_max] bids α = exp(u)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        hi = float(env.unwrapped.alpha_max)
        self.action_space = log_alpha_space(hi)

    def action(self, action: np.ndarray) -> np.ndarray:
        return log_alpha_to_alpha(action, float(self.action_space.high[0]))


def log_alpha_space(alpha_max: float) -> gym.spaces.Box:
    """The action space of a ``log_alpha`` policy for a market whose bids stop at ``alpha_max``."""
    lo, hi = np.float32(np.log(LOG_ALPHA_FLOOR)), np.float32(np.log(alpha_max))
    return gym.spaces.Box(lo, hi, shape=(1,), dtype=np.float32)


def log_alpha_to_alpha(u, log_alpha_max: float) -> np.ndarray:
    """α = exp(u), u clipped to [ln LOG_ALPHA_FLOOR, ln alpha_max] first (a NaN stays NaN: the env refuses it)."""
    u = np.asarray(u, dtype=np.float64)
    return np.exp(np.clip(u, np.log(LOG_ALPHA_FLOOR), log_alpha_max)).astype(np.float32)


class ScaledReward(gym.RewardWrapper):
    """The reward in units of what the agent's budget buys at its target: reward · bid scale / budget."""

    def reward(self, reward: float) -> float:
        env = self.env.unwrapped
        adv = env.market.advertisers
        i = env.agent_index
        return float(reward) * float(adv.bid_scale[i]) / max(float(adv.budget[i]), 1e-9)


def _monitor(minutes: float, every: int, check, n_steps: int, action: str):
    """The SB3 callback of :func:`train_online`: stops after ``minutes`` of training and runs the checks."""
    from stable_baselines3.common.callbacks import BaseCallback

    checking = check is not None and every > 0

    class Progress(BaseCallback):
        stopped = False

        def _on_training_start(self) -> None:
            self.t0, self.paused, self.next, self.checks = time.perf_counter(), 0.0, every, []

        def trained_s(self) -> float:
            return time.perf_counter() - self.t0 - self.paused

        def run_check(self) -> None:
            t = time.perf_counter()
            value = float(check(_bidder(self.model, self.training_env, n_steps, action)))
            self.paused += time.perf_counter() - t
            self.checks.append((int(self.num_timesteps), self.trained_s() / 60, value))
            self.next = (self.num_timesteps // every + 1) * every

        def _on_rollout_start(self) -> None:
            # a rollout starts after the last update (PPO updates once a rollout, SAC after every step), so the
            # policy checked here has learned from every step counted
            if checking and self.num_timesteps >= self.next:
                self.run_check()

        def _on_step(self) -> bool:
            self.stopped = bool(minutes) and self.trained_s() >= 60 * minutes
            return not self.stopped

        def finish(self) -> None:
            """The last check, at the end of training, unless one was just taken there."""
            done = self.checks[-1][0] if self.checks else -1
            if checking and done < self.num_timesteps:
                self.run_check()

    return Progress()


def _bidder(model, venv, n_steps: int, action: str) -> SB3Bidder:
    """The deterministic bidder of ``model`` with the running observation normalisation of ``venv`` (copied)."""
    rms = venv.obs_rms
    return SB3Bidder(
        model.__class__.__name__.lower(),
        model,
        rms.mean.astype(np.float32).copy(),
        rms.var.astype(np.float32).copy(),
        n_steps,
        float(venv.clip_obs),
        action,
    )


def train_online(
    market: MarketConfig, cfg: OnlineConfig, every: int = 0, check: Callable[[SB3Bidder], float] | None = None
) -> tuple[SB3Bidder, dict]:
    """Train PPO or SAC in the env; returns the bidder and training statistics. With ``check``, the policy as it
    stands is handed to ``check`` (as the deterministic bidder training returns) at the first update boundary after
    every ``every`` environment steps (PPO updates once per rollout of ``rollout`` steps, SAC after every step) and at the
    end, and what it gives is kept in ``stats["checks"]`` as (steps learned from, training minutes so far, value);
    the time the checks take counts neither as training time nor against ``max_minutes``."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown online algorithm {cfg.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    env_market = market
    if 0 < cfg.impressions < market.impressions:
        n = max(market.n_steps, cfg.impressions)
        shrink = n / market.impressions
        lo, hi = market.budget_range
        env_market = replace(market, impressions=n, budget_range=(lo * shrink, hi * shrink))
    from stable_baselines3.common.monitor import Monitor

    def make_env():
        # Monitor records the score of every episode (the raw change of the score adds up to it)
        env = Monitor(FeaturizedAuction(AuctionEnv(config=env_market)))
        env = ScaledReward(env) if cfg.scale_reward else env
        return LogAlphaAction(env) if cfg.policy_action == "log_alpha" else env

    venv = VecNormalize(DummyVecEnv([make_env] * cfg.envs), gamma=0.99, norm_reward=not cfg.scale_reward)
    venv.seed(cfg.seed)
    kwargs = dict(seed=cfg.seed, device="cpu", verbose=0, policy_kwargs={"net_arch": list(cfg.net)})
    if cfg.learning_rate:
        kwargs["learning_rate"] = cfg.learning_rate
    if cfg.algorithm == "ppo":
        rollout = min(cfg.rollout, max(64, cfg.timesteps))
        model = PPO("MlpPolicy", venv, n_steps=max(8, rollout // cfg.envs), batch_size=64, **kwargs)
    else:
        model = SAC("MlpPolicy", venv, learning_starts=min(1000, cfg.timesteps // 4), **kwargs)
    stop = _monitor(cfg.max_minutes, every, check, market.n_steps, cfg.policy_action)
    model.learn(total_timesteps=cfg.timesteps, callback=stop, progress_bar=False)
    stop.finish()
    episodes = []  # (end time, score) of every training episode of every env copy
    for env in venv.venv.envs:
        while not isinstance(env, Monitor):
            env = env.env
        episodes += zip(env.get_episode_times(), env.get_episode_rewards(), strict=True)
    episodes.sort(key=lambda e: e[0])
    stats = {
        "timesteps": int(model.num_timesteps),
        "train_minutes": stop.trained_s() / 60,
        "stopped_by_time": stop.stopped,
        "checks": stop.checks,
        # the learning curve: every training episode's score (its raw rewards add up to it), in the order they ended
        "episode_scores": [float(r) for _, r in episodes],
    }
    return _bidder(model, venv, market.n_steps, cfg.policy_action), stats


_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU")
"""Activation functions a saved SB3 policy may name (looked up in ``torch.nn`` by name, nothing else)."""


def _box_dict(space) -> dict:
    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    # JSON has no infinity: unbounded sides are written as null
    as_list = lambda a: [None if not np.isfinite(v) else float(v) for v in a.reshape(-1)]  # noqa: E731
    return {"shape": list(space.shape), "low": as_list(low), "high": as_list(high)}


def _unbox(d: dict) -> dict:
    shape = tuple(d["shape"])
    low = np.array([-np.inf if v is None else v for v in d["low"]], dtype=np.float64).reshape(shape)
    high = np.array([np.inf if v is None else v for v in d["high"]], dtype=np.float64).reshape(shape)
    return {"low": low, "high": high}


class SB3Bidder:
    """A trained SB3 policy as a bidder (deterministic actions). ``model`` is the SB3 algorithm or its policy
    (anything with SB3's ``predict``); a loaded bidder holds the policy only."""

    def __init__(
        self,
        name: str,
        model,
        mean: np.ndarray,
        var: np.ndarray,
        n_steps: int,
        clip: float = 10.0,
        action: str = "alpha",
    ):
        if action not in ACTIONS:
            raise ValueError(f"SB3 bidder action must be one of {', '.join(ACTIONS)}, got {action!r}")
        self.name = name
        self.action = action
        """``alpha``: the policy's action is the bid coefficient; ``log_alpha``: it is ln α (clipped, then exp)."""
        self.model = model
        self.mean = np.asarray(mean, dtype=np.float32)
        self.var = np.asarray(var, dtype=np.float32)
        self.n_steps = int(n_steps)
        self.clip = float(clip)
        self.deterministic = True
        """False: sample the policy's actions (behaviour data) instead of taking its mean."""
        # the top of a ln α policy's box, read once: act() maps every step's action with it
        self._log_alpha_max = float(self.policy.action_space.high[0]) if action == "log_alpha" else None

    def reset(self, advertiser: Advertiser) -> None:
        self.advertiser = advertiser

    def act(self, state: np.ndarray) -> float:
        x = featurize_state(state, self.advertiser, self.n_steps)
        x = np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)
        a = self.model.predict(x, deterministic=self.deterministic)[0]
        if self._log_alpha_max is not None:
            a = log_alpha_to_alpha(a, self._log_alpha_max)
        return float(a[0])

    @property
    def policy(self):
        return getattr(self.model, "policy", self.model)

    def save(self, path: str | Path) -> Path:
        """Write the policy's weights (``sb3.safetensors``) and what rebuilds it (``sb3.json``: algorithm, spaces,
        network shape, normalisation, the weights' hash) as the folder ``path``, replaced whole. SB3's own
        ``model.zip`` is not written: it is read back through pickle, which runs code from the file."""
        pol = self.policy
        fn = pol.activation_fn if hasattr(pol, "activation_fn") else pol.actor.activation_fn  # a class
        act = fn.__name__
        if act not in _ACTIVATIONS:
            raise ValueError(
                f"SB3 policy activation {act} is not one a save can name ({', '.join(_ACTIVATIONS)})"
            )
        meta = {
            "name": self.name,
            "policy": {
                "net_arch": pol.net_arch,
                "activation_fn": act,
                "observation_space": _box_dict(pol.observation_space),
                "action_space": _box_dict(pol.action_space),
            },
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "n_steps": self.n_steps,
            "clip": self.clip,
            "action": self.action,
        }
        return save_weights(path, "sb3", pol.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path) -> SB3Bidder:
        """Rebuild the policy from ``sb3.json`` and load ``sb3.safetensors`` into it; nothing is unpickled (an old
        ``model.zip`` save is refused, not opened)."""
        import torch
        from stable_baselines3 import PPO, SAC

        src = Path(path)
        if (src / "model.zip").exists() and not (src / "sb3.safetensors").exists():
            raise ValueError(
                f"{src}: an SB3 bidder saved as model.zip (SB3's pickle format, which can run code when read); "
                "it is not opened: delete the folder and train again"
            )
        weights, meta = load_weights(src, "sb3", "SB3 bidder")
        try:
            algo = {"ppo": PPO, "sac": SAC}[meta["name"]]
            p = meta["policy"]
            _check_net_arch(p["net_arch"])
            if p["activation_fn"] not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {p['activation_fn']!r}")
            action = meta.get("action", "alpha")  # saves from before log_alpha acted on α itself
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
            space = _box_from(p["action_space"])
            _check_action_space(action, space)
            policy = algo.policy_aliases["MlpPolicy"](
                observation_space=_box_from(p["observation_space"]),
                action_space=space,
                lr_schedule=lambda _: 0.0,
                net_arch=p["net_arch"],
                activation_fn=getattr(torch.nn, p["activation_fn"]),
            )
            policy.load_state_dict(weights)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"{src}: cannot rebuild the saved SB3 policy ({type(e).__name__}: {e})"
            ) from None
        policy.set_training_mode(False)
        return cls(
            meta["name"],
            policy,
            np.array(meta["mean"]),
            np.array(meta["var"]),
            meta["n_steps"],
            meta["clip"],
            action,
        )


MAX_LAYER = 4096
"""Widest hidden layer a saved SB3 policy may ask for (checked before anything is allocated)."""


def _check_net_arch(arch) -> None:
    """A saved ``net_arch``: a list of layer widths, or a dict of such lists (pi / vf / qf), at most 8 layers of at
    most :data:`MAX_LAYER` units each; anything else is refused before a network is built from it."""
    lists = list(arch.values()) if isinstance(arch, dict) else [arch]
    if isinstance(arch, dict) and not set(arch) <= {"pi", "vf", "qf"}:
        raise ValueError(f"net_arch keys must be pi / vf / qf, got {sorted(arch)}")
    for widths in lists:
        if not isinstance(widths, list) or len(widths) > 8:
            raise ValueError(f"net_arch must list at most 8 layer widths, got {widths!r}")
        for w in widths:
            if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= MAX_LAYER:
                raise ValueError(f"net_arch layer widths must be integers in [1, {MAX_LAYER}], got {w!r}")


def _check_action_space(action: str, space: gym.spaces.Box) -> None:
    """A saved policy's action space must be the one its action is read in: ln α spans negative values (its
    floor is ln LOG_ALPHA_FLOOR), α itself starts at 0."""
    if space.shape != (1,):
        raise ValueError(f"the action space must hold one value, got shape {space.shape}")
    low = float(space.low[0])
    want = np.float32(np.log(LOG_ALPHA_FLOOR)) if action == "log_alpha" else 0.0
    if not np.isclose(low, want, rtol=0, atol=1e-6):
        raise ValueError(
            f"action {action!r} is read in an action space starting at {want:.4g}, but the saved one starts at "
            f"{low:.4g}"
        )


def _box_from(d: dict):
    # the bounds were written from float32 ones: the cast back loses nothing
    return gym.spaces.Box(dtype=np.float32, **{k: v.astype(np.float32) for k, v in _unbox(d).items()})


__all__ = [
    "ACTIONS",
    "ALGORITHMS",
    "FeaturizedAuction",
    "LogAlphaAction",
    "OnlineConfig",
    "SB3Bidder",
    "ScaledReward",
    "log_alpha_space",
    "log_alpha_to_alpha",
    "train_online",
]
