"""simulate: run behaviour policies over many delivery periods and write every advertiser's trajectory as parquet.

Each period, every one of the N advertisers gets a behaviour policy drawn from ``--policies`` (the heuristics
``fixed``, ``pid``, ``pacing``, ``lp`` with perturbed settings, and ``ppo``: a Stable-Baselines3 PPO agent trained
in ``simulators/Auction-v0`` first, sampling its actions). One row per (period, advertiser, step); the schema is in
docs/simulator.md. Periods are written in parts of ``--part-periods`` (``part-00000.parquet``, ...), each written to a
temporary name and renamed, so an interrupted run resumes at the first missing part. Query with DuckDB (the
Python package; the ``duckdb`` command-line tool is not installed)::

    import duckdb
    duckdb.sql("select policy, avg(reward) from 'artifacts/offline/*.parquet' group by policy").show()
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from bidding.auctionnet import RawLog, to_training
from bidding.online import OnlineConfig, SB3Bidder, train_online
from onesearch.io import atomic_write, remove_temporaries
from pipelines import tracking
from pipelines.engines import executor
from simulators.bidders import HEURISTICS, Bidder, ExploringBidder, check_alpha_range, heuristic
from simulators.market import STATE_FEATURES, MarketConfig
from simulators.rollout import TRAJECTORY_COLUMNS, run_period

JOB = "simulate"
POLICIES = (*HEURISTICS, "ppo")


@dataclass(frozen=True)
class Config:
    """Settings of the simulate job."""

    periods: int = 200
    """Delivery periods to simulate (each gives n_advertisers trajectories)."""
    policies: tuple[str, ...] = POLICIES
    """Behaviour policies to draw from, per advertiser and period: fixed, pid, pacing, lp, ppo."""
    market: MarketConfig = field(default_factory=MarketConfig)
    """The market of every period."""
    fixed_alpha: tuple[float, float] = (0.03, 1.3)
    """Range of the ``fixed`` behaviour bidders' α. It reaches well below the best constant α in hindsight (about
    0.12 on the default market), so the data also logs days that end with budget left, and the value-guided DT's
    plan value sees what each constant α brings; the evaluation's competitors keep their own range (0.6-1.3)."""
    fixed_alpha_log: bool = True
    """Draw the fixed α log-uniformly from ``fixed_alpha`` (uniformly when off)."""
    explore_sigma: float = 0.2
    """Behaviour exploration: every logged bid is the policy's α times exp(σ·z), z ~ N(0, 1) per step (0 = none),
    so that offline values see what nearby bids bring."""
    ppo_steps: int = 20_000
    """Environment steps of PPO training (when ppo is among the policies)."""
    ppo_impressions: int = 100_000
    """Impressions per period while PPO trains (fewer than the market's, for speed)."""
    part_periods: int = 50
    """Periods per parquet part."""
    auctionnet: bool = False
    """Also write every part in AuctionNet's training layout (<output>/auctionnet/part-*.parquet, with a copy of
    simulate.json; bidding.auctionnet), which the offline trainers read as well."""
    raw_log_periods: int = 0
    """Also write AuctionNet's raw log of the first N periods (<output>/auctionnet/raw/period-*.parquet: one row per
    advertiser, step and impression, so N × impressions × advertisers rows)."""
    output: str = "artifacts/offline"
    """Folder of the parquet parts (and ppo/, the PPO behaviour policy)."""
    seed: int = 0
    """Seed of the whole dataset."""
    progress: bool = True
    """Show progress on stderr."""
    workers: int = 1
    """Parts simulated at once: spawned processes (engine local) or Ray tasks (engine ray); the data are the
    same whatever the number."""
    engine: str = "local"
    """local (this machine's processes) or ray (a local loopback-only Ray cluster, or --ray-address)."""
    ray_address: str = ""
    """An existing Ray cluster to use with --engine ray (empty: start a local one of --workers CPUs)."""
    ray_temp_dir: str = ""
    """Ray's session folder for a local cluster (empty: Ray's default)."""


PRESETS = {
    "default": Config(),
    "tiny": Config(
        periods=4,
        market=MarketConfig(impressions=2_000, n_steps=8, n_advertisers=6, n_categories=2),
        ppo_steps=64,
        ppo_impressions=2_000,
        part_periods=3,
    ),
}

COLUMNS = TRAJECTORY_COLUMNS


def train_ppo(cfg: Config, path: Path) -> SB3Bidder:
    """Train (or load, when ``path`` holds one) the PPO behaviour policy of ``bidding.online``."""
    if (path / "sb3.json").is_file():
        if (path / "sb3.safetensors").is_file():
            return SB3Bidder.load(path)
        # a cache from before bidders were saved without pickle: never opened, trained again in its place
        print(f"[simulate] {path} holds a pickled SB3 save (model.zip); not opening it, training again",
              file=sys.stderr)  # fmt: skip
    ocfg = OnlineConfig(
        algorithm="ppo",
        timesteps=cfg.ppo_steps,
        impressions=cfg.ppo_impressions,
        max_minutes=0,
        seed=cfg.seed,
        # the behaviour policy the logs were made with: their figures stay reproducible
        scale_reward=False,
        action="alpha",
        rollout=2048,
    )
    bidder, _ = train_online(cfg.market, ocfg)
    bidder.save(path)
    return bidder


def _simulate_part(cfg: Config, out: Path, part: int, ppo) -> float:
    """Simulate the periods of part ``part`` and write it (and its AuctionNet copies); returns the seconds it took.
    ``ppo`` is the PPO behaviour policy, or the folder it is saved in (a worker process loads it)."""
    t1 = time.perf_counter()
    if isinstance(ppo, (str, Path)):
        ppo = SB3Bidder.load(ppo)
    path = out / f"part-{part:05d}.parquet"
    first = part * cfg.part_periods
    frames, expected = [], []
    for p in range(first, min(cfg.periods, first + cfg.part_periods)):
        # one generator per period: a resumed run draws exactly what a straight run would
        rng = np.random.default_rng([cfg.seed, p])
        if ppo is not None:
            import torch

            torch.manual_seed(cfg.seed * 1_000_003 + p)  # PPO samples its actions with torch
        bidders, names = _bidders(cfg, rng, ppo)
        raw = RawLog(p) if p < cfg.raw_log_periods else None
        traj = run_period(cfg.market, bidders, rng, after_step=raw)
        frames.append(period_frame(p, traj, names))
        if cfg.auctionnet:
            expected.append(_expected_frame(p, traj))
        if raw is not None:
            _write(raw.frame(), out / "auctionnet" / "raw" / f"period-{p:05d}.parquet")
    if cfg.auctionnet:  # before the native part: its presence marks the part done
        native = pl.concat(frames)
        _write(
            to_training(native, cfg.market.n_categories, pl.concat(expected)), out / "auctionnet" / path.name
        )
    _write(pl.concat(frames), path)
    return time.perf_counter() - t1


def _bidders(cfg: Config, rng: np.random.Generator, ppo) -> tuple[list[Bidder], list[str]]:
    names = [str(cfg.policies[i]) for i in rng.integers(0, len(cfg.policies), size=cfg.market.n_advertisers)]
    bidders: list[Bidder] = []
    for name in names:
        if name == "ppo":
            b = copy.copy(ppo)  # one per advertiser: they share the network, not the advertiser
            b.deterministic = False  # behaviour data: sample the policy's actions
            bidders.append(b)
        else:
            bidders.append(heuristic(name, rng, cfg.market.n_steps, cfg.fixed_alpha, cfg.fixed_alpha_log))
    if cfg.explore_sigma > 0:
        bidders = [ExploringBidder(b, cfg.explore_sigma, rng) for b in bidders]
    return bidders, names


def period_frame(period: int, traj, names: list[str]) -> pl.DataFrame:
    """The rows of one period: (step, advertiser) in order."""
    T, N = traj.actions.shape
    adv = traj.advertisers
    step = np.repeat(np.arange(T, dtype=np.int16), N)
    who = np.tile(np.arange(N, dtype=np.int16), T)
    cols: dict[str, object] = {
        "period": np.full(T * N, period, dtype=np.int32),
        "advertiser": who,
        "step": step,
        "policy": [names[i] for i in who],
        "kind": adv.kind[who].astype(str),
    }
    flat_states = traj.states.reshape(T * N, -1)
    for j, name in enumerate(STATE_FEATURES):
        cols[name] = flat_states[:, j]
    cols.update(
        action=traj.actions.reshape(-1),
        reward=traj.rewards.reshape(-1),
        cost=traj.cost.reshape(-1),
        conversions=traj.conversions.reshape(-1),
        exposures=traj.exposures.reshape(-1),
        budget=adv.budget[who].astype(np.float32),
        target=adv.target[who].astype(np.float32),
        bid_scale=adv.bid_scale[who].astype(np.float32),
        done=step == T - 1,
    )
    return pl.DataFrame(cols).select(COLUMNS)


def main(cfg: Config) -> dict:
    unknown = sorted(set(cfg.policies) - set(POLICIES))
    if unknown or not cfg.policies:
        raise ValueError(f"unknown policies {unknown or '(none given)'}; choose from {', '.join(POLICIES)}")
    if cfg.periods < 1 or cfg.part_periods < 1 or cfg.raw_log_periods < 0:
        raise ValueError(
            f"periods and part_periods must be positive and raw_log_periods >= 0, got {cfg.periods}, "
            f"{cfg.part_periods} and {cfg.raw_log_periods}"
        )
    check_alpha_range(cfg.fixed_alpha)  # before the output folder is made
    if cfg.engine not in ("local", "ray") or cfg.workers < 1:
        raise ValueError(
            f"engine must be 'local' or 'ray' and workers >= 1, got {cfg.engine!r} and {cfg.workers}"
        )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, cfg)
    remove_temporaries(out, "part-*")  # half-written parts of a run that was killed
    with tracking.job_run(JOB, cfg):
        t0 = time.perf_counter()
        ppo = train_ppo(cfg, out / "ppo") if "ppo" in cfg.policies else None
        ppo_seconds = time.perf_counter() - t0
        n_parts = -(-cfg.periods // cfg.part_periods)
        todo = [part for part in range(n_parts) if not (out / f"part-{part:05d}.parquet").exists()]
        skipped = n_parts - len(todo)
        sim_seconds = 0.0
        pool = executor(cfg.engine, cfg.workers, cfg.ray_address, cfg.ray_temp_dir) if len(todo) > 1 else None
        try:
            if pool is None:
                done = ((part, _simulate_part(cfg, out, part, ppo)) for part in todo)
            else:  # the workers read the PPO policy from its folder
                futures = [(part, pool.submit(_simulate_part, cfg, out, part, out / "ppo" if ppo else None))
                           for part in todo]  # fmt: skip
                done = ((part, f.result()) for part, f in futures)
            for part, seconds in done:
                sim_seconds += seconds
                if cfg.progress:
                    first = part * cfg.part_periods
                    last = min(cfg.periods, first + cfg.part_periods) - 1
                    print(f"[simulate] part {part + 1}/{n_parts}: periods {first}-{last}", file=sys.stderr)
        finally:
            if pool is not None:
                pool.shutdown()
        written = len(todo)
        summary = summarise(out)
        result = {
            "output": str(out),
            "periods": cfg.periods,
            "rows": summary.pop("rows"),
            "parts_written": written,
            "parts_resumed": skipped,
            "ppo_seconds": ppo_seconds,
            "simulate_seconds": sim_seconds,
            **summary,
        }
        tracking.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        tracking.log_json(result, "summary.json")
    return result


def _write(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` whole or not at all (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, df.write_parquet)


def _expected_frame(period: int, traj) -> pl.DataFrame:
    """(period, advertiser, step, expected_conversions) of one period, for AuctionNet's reward_continuous."""
    T, N = traj.actions.shape
    return pl.DataFrame(
        {
            "period": np.full(T * N, period, dtype=np.int32),
            "advertiser": np.tile(np.arange(N, dtype=np.int16), T),
            "step": np.repeat(np.arange(T, dtype=np.int16), N),
            "expected_conversions": traj.expected.reshape(-1).astype(np.float64),
        }
    )


def _check_settings(out: Path, cfg: Config) -> None:
    """Parts are resumed only from a run with the same settings: ``simulate.json`` records them."""
    where = (
        "output",
        "progress",
        "periods",
        "workers",
        "engine",
        "ray_address",
        "ray_temp_dir",
    )  # not the data's
    settings = {k: v for k, v in asdict(cfg).items() if k not in where}
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they read back
    path = out / "simulate.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            values = "; ".join(
                f"{k}: {old.get(k)} there, {settings.get(k)} now" for k in diff if k != "market"
            )
            raise ValueError(
                f"{out} holds trajectories simulated with other settings ({', '.join(diff)} differ"
                + (f": {values}" if values else "")
                + "); pass the same settings to resume, or use another --output or delete that folder"
            )
    elif any(out.glob("part-*.parquet")):
        raise ValueError(
            f"{out} holds trajectory parts but no simulate.json; use another --output or delete them"
        )
    else:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2)))
    if cfg.auctionnet:  # the AuctionNet folder reads as trajectories on its own: it carries the rules too
        (out / "auctionnet").mkdir(exist_ok=True)
        text = path.read_text()
        atomic_write(out / "auctionnet" / "simulate.json", lambda tmp: Path(tmp).write_text(text))


def summarise(folder: Path) -> dict:
    """Per-policy statistics of a trajectory folder, computed with DuckDB over the parquet parts."""
    import duckdb

    glob = str(folder / "part-*.parquet")
    con = duckdb.connect()
    rows = con.execute(f"select count(*) from read_parquet('{glob}')").fetchone()[0]
    per = con.execute(
        f"""
        with ep as (
            select period, advertiser, any_value(policy) as policy, sum(reward) as score, sum(cost) as cost,
                   sum(conversions) as conv, any_value(budget) as budget, any_value(bid_scale) as bid_scale
            from read_parquet('{glob}') group by period, advertiser)
        select policy, count(*) as trajectories, avg(score) as score, avg(cost / budget) as budget_used,
               avg(case when conv > 0 then cost / conv / bid_scale end) as cpa_ratio
        from ep group by policy order by policy
        """
    ).fetchall()
    out: dict = {"rows": int(rows)}
    for policy, n, score, used, cpa in per:
        out[f"{policy}_trajectories"] = int(n)
        out[f"{policy}_score"] = float(score)
        out[f"{policy}_budget_used"] = float(used)
        out[f"{policy}_cpa_ratio"] = None if cpa is None else float(cpa)
    return out
