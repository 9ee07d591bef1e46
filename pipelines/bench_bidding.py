"""bench-bidding: in every market regime, train and tune every bidder, then judge them on the same fresh test periods.

For each regime of ``--regimes`` (``simulators.regimes``; ``--scale`` sets the market's size, impressions and budgets
together):

1. **Data.** The offline bidders learn from logs of heuristic advertisers bidding in that regime (``simulate``; or
   ``--trajectories``/<regime>). By default the logged constant-bid advertisers draw α where the market's own
   competitors do (0.6–1.3): logs a platform could hold, with no day placed around a hindsight optimum. vdt's plan
   value needs constant-bid days that reach the constant that pays, so it is judged twice: ``vdt`` on those logs,
   ``vdt_wide`` on logs whose constant bids spread log-uniformly over 0.03–1.3 (<regime>/offline-wide, or
   ``--trajectories``/<regime>-wide).
2. **Training and tuning, on training periods only.** bc, iql, cql, dt, vdt (offline) and ppo, sac (online, in the
   test-size market) train with ``--seeds`` seeds each; ``constant`` is the constant α of a grid, and ``pid`` the
   budget-and-CPA PID (:class:`simulators.bidders.DualPIDBidder`) of a grid of gains and setpoints, that score best
   on the tuning periods (``--tuning-periods``, ``--tuning-seed``: not the test seed); ``onlinelp`` is AuctionNet's
   OnlineLP (:mod:`bidding.history_lp`) on the impressions of those days as the default competitors played them
   (kept by advertiser index: an index keeps its category, not its budget or level), its cap tuned the same way.
   Trained bidders are kept under <output>/<regime>/<bidder>/seed-<s>, and the classic bidders' tuned choices under
   <output>/<regime>/<bidder>/tuned.json; both are reused while what they depend on is unchanged (``--retrain``
   trains and tunes again), so the evaluation alone can be rerun.
3. **Evaluation.** Every bidder plays the same test periods (``--evaluation.*``; ``--evaluation.test-seed`` picks them: keep
   0 for development, use a fresh seed for final figures), every advertiser slot in turn (``--evaluation.rotate``), against
   the default heuristic competitors, with common random numbers; a learned bidder's seeds take the periods in turn.
   ``--evaluation.workers`` processes play in parallel.
4. **Figures.** Mean score with a paired, period-clustered bootstrap 95% CI, the ratio to the DT with its CI, the
   share of the hindsight bound (:mod:`bidding.bound`) with its CI (and the bound of a bidder that keeps the target,
   a row of its own), the target violation rate (CPA, ROI or CAC), budget used, train minutes and act ms.

The last stdout line is ``{"regimes": {regime: {"test_periods", "plays", "bound": {"score_mean", "score_ci",
"budget_used", "cpa_ratio", "kept_score_mean", "kept_score_ci", "kept_budget_used"}, "bidders": {bidder:
{"score_mean", "score_ci", "ratio_to_dt", "ratio_ci", "share_of_bound", "share_ci", "violation_rate",
"budget_used", "train_minutes", "act_ms", "seeds"}}}}, "wall_minutes"}``. MLflow gets each regime's table
(``<regime>.md``), plots (``<regime>.png``) and ``bench.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bidding.bound import hindsight_bound
from bidding.data import load_trajectories
from bidding.dt import (
    DTBidder,
    DTConfig,
    DTTrainConfig,
    ValueConfig,
    check_plan_weight,
    plan_episodes,
    train_dt,
)
from bidding.evaluate import EvalConfig, _check_slots, evaluate
from bidding.history_lp import HistoryLPBidder, log_days, log_history
from bidding.offline import OfflineConfig, PolicyBidder, train_offline
from bidding.online import LOG_ALPHA_FLOOR, OnlineConfig, SB3Bidder, train_online
from bidding.plots import plot_bidders
from bidding.replay import replay_grid, replay_values
from bidding.stats import paired_bootstrap
from onesearch.io import atomic_write
from pipelines import simulate, tracking
from pipelines.engines import executor
from simulators.bidders import DualPIDBidder, FixedBidder
from simulators.market import MarketConfig
from simulators.regimes import REGIMES, regime

JOB = "bench-bidding"
BIDDERS = ("constant", "pid", "onlinelp", "bc", "iql", "cql", "ppo", "sac", "dt", "vdt", "vdt_wide")
"""The bidders a run judges by default."""
KNOWN = (*BIDDERS, "vdt_replay", "gas")
"""Every bidder ``--bidders`` may name (vdt_replay: vdt whose plan value learns from replayed impression logs,
:mod:`bidding.replay`; gas: the DT with a GAS-style search over the asked return at play, its actions judged by a
learned action value; neither in the default run until it is measured there)."""
LEARNED = ("bc", "iql", "cql", "ppo", "sac", "dt", "vdt", "vdt_wide", "vdt_replay", "gas")
OFFLINE = ("bc", "iql", "cql", "dt", "vdt", "vdt_replay", "gas")
DT_FAMILY = ("dt", "vdt", "vdt_wide", "vdt_replay", "gas")
WIDE_ALPHA = (0.03, 1.3)
"""vdt_wide is vdt trained on logs whose constant-bid advertisers draw α log-uniformly from this range (vdt's plan
value needs constant-bid days that reach the constant that pays; platform logs need not hold them)."""

CONSTANT_GRID: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0)
"""The constant α values tried on the tuning periods (``constant``)."""

PID_GRID: tuple[dict, ...] = tuple(
    {"alpha0": a, "setpoint": sp, "budget_kp": bk, "cpa_kp": ck}
    for a in (0.2, 0.5, 1.0, 1.5)
    for sp in (1.0, 1.25)
    for bk, ck in ((0.1, 0.3), (0.3, 1.0))
)
"""The DualPIDBidder settings tried on the tuning periods (``pid``)."""

LP_CAPS: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0)
"""The caps on α tried on the tuning periods (``onlinelp``)."""

REPLAY_Z_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
"""The margins z tried, smallest first, when vdt_replay's margin is calibrated (``--replay-miss-rate``)."""

_PLATFORM_LOGS = simulate.Config(
    policies=("fixed", "pid", "pacing", "lp"), fixed_alpha=(0.6, 1.3), fixed_alpha_log=False
)


@dataclass(frozen=True)
class Config:
    """Settings of the bench-bidding job."""

    regimes: tuple[str, ...] = tuple(REGIMES)
    """Market regimes to run (simulators.regimes): budget-bound, cpa-bound, roi, acquisition."""
    scale: float = 0.2
    """Size of every market against its regime's (impressions and budgets together; 0.2 = 100,000 impressions)."""
    trajectories: str = ""
    """Folder holding one trajectory folder per regime (<folder>/<regime>/part-*.parquet); empty = simulate them."""
    simulate: simulate.Config = field(default_factory=lambda: _PLATFORM_LOGS)
    """Data generation. Its market settings that differ from the default market apply to every regime."""
    bidders: tuple[str, ...] = BIDDERS
    """Bidders to train and judge."""
    seeds: int = 3
    """Training seeds per learned bidder (they take the test periods in turn)."""
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(periods=20, rotate=4, workers=2))
    """Test periods, slots and worker processes (--evaluation.test-seed 0 is the development seed; final figures use a
    fresh one, docs/bidding.md)."""
    engine: str = "local"
    """Where training and the plays run in parallel: local (--evaluation.workers spawned processes) or ray (Ray
    tasks on a local cluster of --evaluation.workers CPUs, or on --ray-address); the figures are the same."""
    ray_address: str = ""
    """An existing Ray cluster to use with --engine ray (empty: start a local one)."""
    ray_temp_dir: str = ""
    """Ray's session folder for a local cluster (empty: Ray's default)."""
    tuning_periods: int = 4
    """Training periods on which constant and pid are tuned (numbered from 0, drawn from --tuning-seed)."""
    tuning_rotate: int = 8
    """Slot rotation of the tuning periods (every tuning_rotate-th slot a period)."""
    tuning_seed: int = 1
    """Seed of the tuning periods (never the test seed)."""
    gas_factors: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    """gas: the factors on the asked return searched at every step (DTConfig.rtg_search)."""
    replay_plan_weight: float = 1.0
    """vdt_replay's plan weight w (as --vdt-plan-weight for vdt): with the target kept, the plan alone (w = 1) scores
    1-5% more than w = 0.75 at every margin from 0 on, in cpa-bound on development periods (docs/bidding.md)."""
    replay_target_z: float = 1.0
    """vdt_replay: keep the target with this many standard deviations of the remaining conversions to spare
    (DTConfig.plan_target_z; below 0: the plan value alone picks the constant). With --replay-miss-rate the margin
    is calibrated instead and this one is only what the saved models carry."""
    replay_miss_rate: float = 0.05
    """vdt_replay: the share of plays that may miss the target. Its margin z is calibrated on training periods: the
    smallest z of REPLAY_Z_GRID whose plays miss at most this often on --replay-calibration-periods periods of
    --tuning-seed after the replayed days (every 2nd slot), its trained seeds taking them in turn (0: no
    calibration, --replay-target-z as trained)."""
    replay_calibration_periods: int = 8
    """vdt_replay: training periods its margin is calibrated on (periods --replay-days, ... of --tuning-seed)."""
    replay_days: int = 16
    """vdt_replay: training days (periods 0, 1, ... of --tuning-seed) whose impression log its plan value is replayed
    on."""
    retrain: bool = False
    """Train and tune every bidder, and compute the hindsight bound, again even when one made with the same settings
    is kept."""
    dt: DTConfig = field(default_factory=DTConfig)
    """Decision Transformer shape (vdt uses it with the vdt_* settings below)."""
    dt_train: DTTrainConfig = field(default_factory=lambda: DTTrainConfig(steps=1_000, max_minutes=0))
    """Decision Transformer training (dt and vdt): 1,000 steps, about 2 minutes a seed on one core here (vdt's
    values besides, about 0.4 minutes). Every trainer of the bench has a step budget, not a time cap, so what it
    learns does not depend on the machine's load; the budgets keep a full run (4 regimes × 3 seeds) near two hours
    on 2 cores (docs/bidding.md)."""
    value: ValueConfig = field(default_factory=ValueConfig)
    """The learned value of vdt."""
    vdt_epsilon: float = 0.0
    """Exploration range of vdt: β ∈ [1 − ε, 1 + ε] (0 = no action exploration)."""
    vdt_value_target: bool = True
    """vdt asks at every step for the return its learned state value expects (DTConfig.value_target)."""
    vdt_plan_weight: float = 0.75
    """vdt pulls each bid towards the constant α its plan value V(s, λ) rates best from the current state, as
    α_DT^(1 − w) · λ*^w (DTConfig.plan_weight; 0 = off)."""
    bc: OfflineConfig = field(
        default_factory=lambda: OfflineConfig(algorithm="bc", steps=20_000, max_minutes=0)
    )
    """BC (the seed is set per bidder): 20,000 steps, about 0.7 minutes a seed on one core here."""
    iql: OfflineConfig = field(
        default_factory=lambda: OfflineConfig(algorithm="iql", steps=7_000, max_minutes=0)
    )
    """IQL: 7,000 steps, about a minute a seed."""
    cql: OfflineConfig = field(
        default_factory=lambda: OfflineConfig(algorithm="cql", steps=1_800, max_minutes=0)
    )
    """CQL: 1,800 steps, about a minute a seed (it scores 10 sampled α per state at every step)."""
    ppo: OnlineConfig = field(
        default_factory=lambda: OnlineConfig(algorithm="ppo", timesteps=60_000, envs=8, max_minutes=0)
    )
    """PPO (the seed is set per bidder; it trains in the test market's size): 60,000 environment steps of 8 env
    copies, about 3 minutes a seed on one core here; its curve still rises there (docs/bidding.md)."""
    sac: OnlineConfig = field(
        default_factory=lambda: OnlineConfig(algorithm="sac", timesteps=30_000, max_minutes=0)
    )
    """SAC (as PPO): 30,000 environment steps, one gradient step each, about 3.5 minutes a seed; where its curve on
    the development periods flattens (docs/bidding.md, experiments/online_convergence.py)."""
    bound: bool = True
    """Compute the hindsight bound of every test play (bidding.bound)."""
    output: str = "artifacts/bidding"
    """Folder for the trajectories and the trained bidders (<output>/<regime>/...)."""


_TINY_SIM = replace(
    _PLATFORM_LOGS,
    periods=6,
    part_periods=3,
    market=MarketConfig(n_steps=8, n_advertisers=8, n_categories=2),
)
PRESETS = {
    "default": Config(),
    "tiny": Config(
        scale=0.004,  # 2,000 impressions
        simulate=_TINY_SIM,
        seeds=2,
        evaluation=EvalConfig(periods=3, rotate=4, workers=1),
        tuning_periods=2,
        tuning_rotate=4,
        dt=DTConfig(context=4, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_steps=8),
        dt_train=DTTrainConfig(steps=40, batch_size=16, warmup=5),
        value=ValueConfig(critic_steps=40, critic_hidden=32, target_steps=40, plan_steps=40),
        bc=OfflineConfig(algorithm="bc", hidden=32, steps=40, batch_size=64),
        iql=OfflineConfig(algorithm="iql", hidden=32, steps=40, batch_size=64),
        cql=OfflineConfig(algorithm="cql", hidden=32, steps=40, batch_size=64),
        ppo=OnlineConfig(algorithm="ppo", timesteps=128),
        sac=OnlineConfig(algorithm="sac", timesteps=128),
    ),
}


def market_of(cfg: Config, name: str) -> MarketConfig:
    """The market of regime ``name``: the regime at ``cfg.scale``, with the simulate market's non-default settings."""
    default, given = MarketConfig(), cfg.simulate.market
    changes = {
        f.name: getattr(given, f.name)
        for f in fields(MarketConfig)
        if getattr(given, f.name) != getattr(default, f.name)
    }
    return regime(name, cfg.scale, **changes)


def tuning_of(cfg: Config) -> EvalConfig:
    """The tuning periods: training periods 0, 1, ... of the tuning seed, with the evaluation's budget ratios."""
    return EvalConfig(
        periods=cfg.tuning_periods,
        first_period=0,
        budget_ratios=cfg.evaluation.budget_ratios,
        test_seed=cfg.tuning_seed,
        rotate=cfg.tuning_rotate,
    )


def _check(cfg: Config) -> None:
    for what, given, known in (("bidders", cfg.bidders, KNOWN), ("regimes", cfg.regimes, tuple(REGIMES))):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            raise ValueError(f"unknown {what} {unknown or '(none given)'}; choose from {', '.join(known)}")
    if not cfg.gas_factors or any(not f > 0 for f in cfg.gas_factors):
        raise ValueError(f"--gas-factors must be positive numbers, got {cfg.gas_factors}")
    if cfg.replay_days < 1:
        raise ValueError(f"--replay-days must be at least 1, got {cfg.replay_days}")
    if not math.isfinite(cfg.replay_target_z):
        raise ValueError(f"--replay-target-z must be a finite number, got {cfg.replay_target_z}")
    if cfg.dt.plan_target_z >= 0:
        raise ValueError(
            "--dt.plan-target-z would make the plain dt keep a target it has no replayed plan for; "
            "vdt_replay's margin is --replay-target-z (or calibrated, --replay-miss-rate)"
        )
    if not (0 <= cfg.replay_miss_rate < 1) or cfg.replay_calibration_periods < 1:
        raise ValueError(
            f"--replay-miss-rate must be in [0, 1) and --replay-calibration-periods at least 1, got "
            f"{cfg.replay_miss_rate} and {cfg.replay_calibration_periods}"
        )
    if cfg.seeds < 1 or cfg.tuning_periods < 1 or cfg.tuning_rotate < 1:
        raise ValueError(
            f"seeds, tuning_periods and tuning_rotate must be positive, got {cfg.seeds}, {cfg.tuning_periods} and "
            f"{cfg.tuning_rotate}"
        )
    for name in ("bc", "iql", "cql", "ppo", "sac"):
        if getattr(cfg, name).algorithm != name:
            raise ValueError(
                f"--{name}.algorithm is {getattr(cfg, name).algorithm!r}: the {name} section trains {name} only"
            )
    if cfg.tuning_seed == cfg.evaluation.test_seed:
        raise ValueError(f"the tuning periods must not use the test seed ({cfg.evaluation.test_seed})")
    guided = [
        flag
        for flag, on in (
            ("--dt.explore-epsilon", cfg.dt.explore_epsilon > 0),
            ("--dt.value-target", cfg.dt.value_target),
            ("--dt.plan-weight", cfg.dt.plan_weight > 0),
        )
        if on
    ]
    if guided:
        raise ValueError(
            f"{', '.join(guided)} would make the plain dt value-guided too; "
            "set vdt's guidance with --vdt-epsilon, --vdt-value-target and --vdt-plan-weight"
        )
    check_plan_weight(cfg.vdt_plan_weight, "--vdt-plan-weight")
    check_plan_weight(cfg.replay_plan_weight, "--replay-plan-weight")
    for name in cfg.regimes:
        market = market_of(cfg, name)  # a bad market setting fails here, before anything trains
        for what, ev in (("--evaluation.rotate", cfg.evaluation), ("--tuning-rotate", tuning_of(cfg))):
            try:
                _check_slots(market, ev)
            except ValueError as e:
                raise ValueError(f"{what}: {e}") from None


def main(cfg: Config) -> dict:
    _check(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.output)
    regimes: dict[str, dict] = {}
    pool = executor(cfg.engine, cfg.evaluation.workers, cfg.ray_address, cfg.ray_temp_dir)
    try:
        with tracking.job_run(JOB, cfg):
            for name in cfg.regimes:
                regimes[name] = _run_regime(cfg, name, out / name, pool)
                table = markdown(name, regimes[name])
                tracking.log_text(table, f"{name}.md")
                print(table, file=sys.stderr)
            wall = (time.perf_counter() - t0) / 60
            result = {"regimes": regimes, "wall_minutes": wall}
            tracking.log_json(result, "bench.json")
            tracking.log_metrics({"wall_minutes": wall})
    finally:
        if pool is not None:
            pool.shutdown()
    return result


def _say(regime_name: str, text: str) -> None:
    print(f"[bench-bidding] {regime_name}: {text}", file=sys.stderr, flush=True)


def wide_simulate(cfg: Config) -> simulate.Config:
    """The data of vdt_wide: the same logs, but constant-bid advertisers spread log-uniformly over WIDE_ALPHA."""
    return replace(cfg.simulate, fixed_alpha=WIDE_ALPHA, fixed_alpha_log=True)


def _data(cfg: Config, name: str, market: MarketConfig, out: Path, wide: bool) -> Path:
    """The trajectory folder of regime ``name`` (simulated here unless --trajectories gives it), checked."""
    kind = "offline-wide" if wide else "offline"
    if cfg.trajectories:
        folder = Path(cfg.trajectories) / (f"{name}-wide" if wide else name)
    else:
        folder = out / kind
        sim = wide_simulate(cfg) if wide else cfg.simulate
        _say(name, f"simulating {sim.periods} periods of logs" + (" (wide constant bids)" if wide else ""))
        simulate.main(replace(sim, market=market, output=str(folder)))
    episodes = load_trajectories(folder)
    if episodes.n_steps != market.n_steps:
        raise ValueError(
            f"{folder}: trajectories have {episodes.n_steps} steps, the test market {market.n_steps}"
        )
    if episodes.rules is not None and episodes.rules != market.rules:
        raise ValueError(
            f"{folder}: trajectories were played under other auction rules ({episodes.rules}) than the "
            f"test market's ({market.rules})"
        )
    vdt = "vdt_wide" if wide else "vdt"
    if vdt in cfg.bidders and cfg.vdt_plan_weight > 0:  # before anything trains, not after an hour
        plan_episodes(episodes, cfg.value.plan_policies)
    return folder


def _run_regime(cfg: Config, name: str, out: Path, pool) -> dict:
    market = market_of(cfg, name)
    data = {}
    if set(OFFLINE) & set(cfg.bidders):
        data[False] = _data(cfg, name, market, out, wide=False)
    if "vdt_wide" in cfg.bidders:
        data[True] = _data(cfg, name, market, out, wide=True)
    trained = _train_all(cfg, name, market, data, out, pool)
    results: dict[str, dict] = {}
    for bidder in cfg.bidders:
        if bidder in LEARNED:
            paths = [out / bidder / f"seed-{s}" for s in range(cfg.seeds)]
            minutes = sum(trained[bidder])
            if bidder == "vdt_replay" and cfg.replay_plan_weight > 0:  # its margin: calibrated, or as given
                z, extra = (cfg.replay_target_z, 0.0)
                if cfg.replay_miss_rate > 0:
                    z, extra = _calibrate_replay(cfg, name, market, paths, pool)
                makers = [_Factory(DTBidder.load(p, plan_target_z=z)) for p in paths]
                minutes += extra
            else:
                makers = [_Factory(_load(bidder, p)) for p in paths]
        else:
            makers, minutes = _prepare(
                cfg, bidder, market, pool, out, lambda t, b=bidder: _say(name, f"{b}: {t}")
            )
        _say(name, f"{bidder}: evaluating")
        res = evaluate(makers, market, cfg.evaluation, curves=True, executor=pool)
        res["train_minutes"] = minutes
        results[bidder] = res
        tracking.log_metrics(_numbers(f"{name}.{bidder}", res))
    bound = None
    if cfg.bound:
        bound = _bound(cfg, name, market, out, pool)
    plot_bidders(results, cfg.evaluation.budget_ratios, out / "bidding.png")
    tracking.log_file(out / "bidding.png")
    return summarise(results, bound, cfg.evaluation)


def summarise(results: dict[str, dict], bound: dict | None, ev: EvalConfig) -> dict:
    """The regime's figures: bootstrap CIs of every bidder's score, its ratio to the DT and its share of the bound."""
    scores = {k: r["period_scores"] for k, r in results.items()}
    to_dt = paired_bootstrap(scores, reference="dt" if "dt" in scores else None, seed=ev.test_seed)
    to_bound = (
        paired_bootstrap(
            {**scores, "__bound__": bound["period_scores"]}, reference="__bound__", seed=ev.test_seed
        )
        if bound is not None
        else None
    )
    bidders = {}
    for k, r in results.items():
        bidders[k] = {
            "score_mean": to_dt[k]["score_mean"],
            "score_ci": to_dt[k]["score_ci"],
            "ratio_to_dt": to_dt[k]["ratio_to_ref"],
            "ratio_ci": to_dt[k]["ratio_ci"],
            "share_of_bound": to_bound[k]["ratio_to_ref"] if to_bound else None,
            "share_ci": to_bound[k]["ratio_ci"] if to_bound else None,
            "violation_rate": r["cpa_violation_rate"],
            "budget_used": r["budget_used"],
            "train_minutes": r["train_minutes"],
            "act_ms": r["act_ms"],
            "seeds": r["seeds"],
        }
    first = next(iter(results.values()))
    out = {"test_periods": ev.periods, "plays": first["plays"], "bidders": bidders, "bound": None}
    if to_bound is not None:
        b = to_bound["__bound__"]
        out["bound"] = {
            "score_mean": b["score_mean"],
            "score_ci": b["score_ci"],
            "budget_used": bound["budget_used"],
            "cpa_ratio": bound["cpa_ratio"],
        }
        if "kept_period_scores" in bound:  # the bound of a bidder that keeps the target
            kept = paired_bootstrap({"kept": bound["kept_period_scores"]}, seed=ev.test_seed)["kept"]
            out["bound"]["kept_score_mean"] = kept["score_mean"]
            out["bound"]["kept_score_ci"] = kept["score_ci"]
            out["bound"]["kept_budget_used"] = bound["kept_budget_used"]
    return out


# ---- training and tuning ----------------------------------------------------------------------------------------
def _kept(path: Path, settings: str, retrain: bool, keys: tuple[str, ...]) -> dict | None:
    """The JSON object at ``path`` when it was written with ``settings`` and holds ``keys`` (and ``retrain`` is
    off), else None: a damaged or foreign file is made again, not trusted."""
    if retrain or not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except ValueError:  # not JSON, or not UTF-8
        return None
    ok = isinstance(old, dict) and old.get("settings") == settings and all(k in old for k in keys)
    return old if ok else None


def _keep(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, default=repr)))


_PLAY_CODE = ("simulators", "bidding/bound.py", "bidding/evaluate.py", "bidding/history_lp.py")
"""The code a play and its bound depend on (the market, the competitors, the bound, OnlineLP): its source is part of
the digest of a kept bound or tuned choice, so that changed code makes them again."""


_BIDDER_CODE = ("bidding/dt.py", "bidding/replay.py", "bidding/data.py")
"""The code that plays vdt_replay's trained seeds: part of the digest of its calibrated margin."""


@functools.cache
def _code_digest() -> str:
    return _source_digest(_PLAY_CODE)


def _source_digest(parts: tuple[str, ...]) -> str:
    """A hash of the source files (folders: every .py below) of ``parts``, paths relative to the repository."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for part in parts:
        p = root / part
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _digest(*parts) -> str:
    return hashlib.sha256(
        json.dumps([_code_digest(), *parts], sort_keys=True, default=repr).encode()
    ).hexdigest()


def _bound(cfg: Config, name: str, market: MarketConfig, out: Path, pool) -> dict:
    """The hindsight bound of every test play, kept in <out>/bound.json and reused while the market and the test
    plays are unchanged (it depends on nothing else)."""
    path = out / "bound.json"
    settings = _digest(
        "bound", 2, asdict(market), asdict(replace(cfg.evaluation, workers=1))
    )  # 2: kept bound
    old = _kept(path, settings, cfg.retrain, ("bound",))
    if old is not None:
        _say(name, "hindsight bound (kept from an earlier run)")
        return old["bound"]
    _say(name, "hindsight bound")
    bound = hindsight_bound(market, cfg.evaluation, executor=pool)
    _keep(path, {"settings": settings, "bound": bound})
    return bound


def calibration_of(cfg: Config) -> EvalConfig:
    """vdt_replay's calibration periods: training periods of the tuning seed after the replayed days, every 2nd slot."""
    return EvalConfig(
        periods=cfg.replay_calibration_periods,
        first_period=cfg.replay_days,
        budget_ratios=cfg.evaluation.budget_ratios,
        test_seed=cfg.tuning_seed,
        rotate=2,
    )


def _calibrate_replay(
    cfg: Config, name: str, market: MarketConfig, paths: list[Path], pool
) -> tuple[float, float]:
    """vdt_replay's margin z, calibrated for its trained seeds at ``paths`` (``--replay-miss-rate``): the smallest z
    of REPLAY_Z_GRID whose plays on the calibration periods miss the target at most that often (the largest if none
    does). The choice is kept in calibrated.json beside the seeds while they, the market and the periods are
    unchanged. Returns z and the minutes the calibration took (when it ran)."""
    t = time.perf_counter()
    calib = calibration_of(cfg)
    weights = [json.loads((p / "dt.json").read_text())["weights_sha256"] for p in paths]
    path = paths[0].parent / "calibrated.json"
    settings = _digest(
        "calibrated", asdict(market), asdict(calib), REPLAY_Z_GRID, cfg.replay_miss_rate, weights,
        _source_digest(_BIDDER_CODE),
    )  # fmt: skip
    old = _kept(path, settings, cfg.retrain, ("z", "train_minutes"))
    if old is not None and old["z"] in REPLAY_Z_GRID:
        z, minutes = float(old["z"]), float(old["train_minutes"])
        _say(name, f"vdt_replay: margin z = {z:g} kept from an earlier calibration")
    else:
        _say(name, f"vdt_replay: calibrating its margin to miss at most {cfg.replay_miss_rate:.1%} of plays")
        rates = {}
        for z in REPLAY_Z_GRID:
            makers = [_Factory(DTBidder.load(p, plan_target_z=z)) for p in paths]
            rates[z] = evaluate(makers, market, calib, executor=pool)["cpa_violation_rate"]
            if rates[z] <= cfg.replay_miss_rate:
                break
        z = next((k for k, r in rates.items() if r <= cfg.replay_miss_rate), REPLAY_Z_GRID[-1])
        minutes = (time.perf_counter() - t) / 60
        _say(name, f"vdt_replay: margin z = {z:g} (misses {rates[z]:.1%} of calibration plays)")
        _keep(path, {"settings": settings, "z": z, "miss_rates": rates, "train_minutes": minutes})
    return z, minutes


def _prepare(cfg: Config, bidder: str, market: MarketConfig, pool, out: Path, say=lambda text: None):
    """(bidder factories, minutes of tuning) of the classic ``bidder`` in ``market``. The choice of the tuning is
    kept in <out>/<bidder>/tuned.json and reused while the market, the tuning periods and the grid are unchanged."""
    t = time.perf_counter()
    tuning = tuning_of(cfg)
    grid = {"constant": CONSTANT_GRID, "pid": PID_GRID, "onlinelp": LP_CAPS}.get(bidder)
    if grid is None:
        raise ValueError(f"{bidder} is not a classic bidder")
    path = out / bidder / "tuned.json"
    settings = _digest("tuned", bidder, asdict(market), asdict(tuning), grid)
    old = _kept(path, settings, cfg.retrain, ("choice", "train_minutes"))
    chosen = old["choice"] if old is not None else None
    if not (isinstance(chosen, int) and 0 <= chosen < len(grid)):
        chosen = None  # not a choice of this grid: tune again
    if bidder == "onlinelp":  # AuctionNet's OnlineLP: the training days' impressions, its cap tuned
        history = log_history(
            market, tuning.test_seed, range(tuning.first_period, tuning.first_period + tuning.periods), 128
        )
        cands = dict(enumerate(HistoryLPBidder(history, cap=c, n_steps=market.n_steps) for c in LP_CAPS))
    elif bidder == "constant":
        cands = dict(enumerate(FixedBidder(a) for a in CONSTANT_GRID))
    else:
        cands = {i: DualPIDBidder(**g, n_steps=market.n_steps) for i, g in enumerate(PID_GRID)}
    if chosen is None:
        say("tuning on training periods")
        chosen = _tune(cands, market, tuning, pool)
        minutes = (time.perf_counter() - t) / 60
        _keep(
            path, {"settings": settings, "choice": chosen, "setting": grid[chosen], "train_minutes": minutes}
        )
    else:
        say("tuned setting kept from an earlier run")
        minutes = float(old["train_minutes"])  # the time the tuning took when it ran
    return [_Factory(cands[chosen])], minutes


def _train_all(cfg: Config, name: str, market: MarketConfig, data: dict, out: Path, pool) -> dict[str, list]:
    """Train every learned bidder of ``cfg`` with every seed (in the pool's processes when given, two at a time),
    or reuse the one kept with the same settings; returns each bidder's training minutes per seed."""
    jobs, kept = {}, 0
    for bidder in (b for b in cfg.bidders if b in LEARNED):
        for seed in range(cfg.seeds):
            path = out / bidder / f"seed-{seed}"
            folder = None if bidder in ("ppo", "sac") else data[bidder == "vdt_wide"]
            settings = _settings(cfg, bidder, market, seed, folder)
            meta = path / "train.json"
            if not cfg.retrain and meta.is_file():
                old = json.loads(meta.read_text())
                if old.get("settings") == settings:
                    jobs[bidder, seed] = float(old["train_minutes"])
                    kept += 1
                    continue
            data_path = None if folder is None else str(folder)
            args = (cfg, bidder, market, data_path, str(path), seed, settings)
            jobs[bidder, seed] = pool.submit(_train_job, *args) if pool is not None else _train_job(*args)
    if jobs:
        _say(name, f"training {len(jobs) - kept} learned bidder seeds ({kept} kept from an earlier run)")
    minutes: dict[str, list] = {}
    for (bidder, _), job in jobs.items():
        minutes.setdefault(bidder, []).append(float(job.result() if hasattr(job, "result") else job))
    return minutes


class _Factory:
    """A bidder factory that hands out one bidder (reset at every play), picklable for worker processes."""

    def __init__(self, bidder) -> None:
        self.bidder = bidder

    def __call__(self):
        return self.bidder


def _tune(cands: dict, market: MarketConfig, tuning: EvalConfig, pool) -> object:
    """The key of the candidate bidder with the best mean score on the tuning periods."""
    scores = {k: evaluate(_Factory(b), market, tuning, executor=pool)["score_mean"] for k, b in cands.items()}
    return max(scores, key=lambda k: scores[k])


def _train_job(
    cfg: Config, bidder: str, market: MarketConfig, data: str | None, path: str, seed: int, settings: str
):
    """Train ``bidder`` with ``seed`` on the trajectories in ``data`` (offline) or in ``market`` (online), save it at
    ``path`` with its settings' digest; returns the training minutes. Runs in a worker process: one torch thread."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rules = market.rules
    if bidder in ("bc", "iql", "cql", *DT_FAMILY):
        episodes = load_trajectories(data)
    if bidder in ("bc", "iql", "cql"):
        ocfg = replace(getattr(cfg, bidder), algorithm=bidder, alpha_max=rules.alpha_max, seed=seed)
        trained, stats = train_offline(episodes, ocfg)
    elif bidder in DT_FAMILY:
        dcfg = replace(cfg.dt, max_steps=max(cfg.dt.max_steps, episodes.n_steps), alpha_max=rules.alpha_max)
        replayed = None
        if bidder == "gas":  # the plain DT, plus the search over the return it asks for
            dcfg = replace(dcfg, rtg_search=tuple(cfg.gas_factors))
        elif bidder != "dt":
            dcfg = replace(
                dcfg,
                explore_epsilon=cfg.vdt_epsilon,
                value_target=cfg.vdt_value_target,
                plan_weight=cfg.replay_plan_weight if bidder == "vdt_replay" else cfg.vdt_plan_weight,
                plan_source="replay" if bidder == "vdt_replay" else "constant",
            )
        if bidder == "vdt_replay" and dcfg.plan_weight > 0:  # the impression log of training days, replayed
            # the margin saved with the seed; the bench sets the one it plays with at load
            dcfg = replace(dcfg, plan_target_z=cfg.replay_target_z)
            days = log_days(market, cfg.tuning_seed, range(cfg.replay_days), 128)
            replayed = replay_values(days, replay_grid(rules.alpha_max, dcfg.plan_points), rules)
        tcfg = replace(cfg.dt_train, seed=seed)
        trained, stats = train_dt(
            episodes, dcfg, tcfg, cfg.value if bidder != "dt" else None, replayed=replayed
        )
    else:
        ocfg = replace(cfg.ppo if bidder == "ppo" else cfg.sac, algorithm=bidder, seed=seed)
        trained, stats = train_online(market, ocfg)
    minutes = (time.perf_counter() - t0) / 60  # all of it: a value-guided DT's critics too
    trained.save(path)
    _keep(Path(path, "train.json"), {"settings": settings, "train_minutes": minutes, "stats": stats})
    return minutes


def _load(bidder: str, path: Path):
    if bidder in ("bc", "iql", "cql"):
        return PolicyBidder.load(path)
    if bidder in DT_FAMILY:
        return DTBidder.load(path)
    return SB3Bidder.load(path)


class _Repr:
    """An object whose repr is ``text`` (a setting keyed by a repr of our own)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _online_key(ocfg: OnlineConfig, bidder: str) -> _Repr:
    """An online bidder's settings as it trains them: the action its policy outputs resolved (an empty ``action``
    follows the algorithm), with the floor of a ln α policy's box."""
    ocfg = replace(ocfg, algorithm=bidder)
    ocfg = replace(ocfg, action=ocfg.policy_action)
    floor = f", log_alpha_floor={LOG_ALPHA_FLOOR!r}" if ocfg.action == "log_alpha" else ""
    return _Repr(repr(ocfg) + floor)


def _settings(cfg: Config, bidder: str, market: MarketConfig, seed: int, folder: Path | None = None) -> str:
    """A digest of everything a trained bidder depends on: market, data, its own settings, seed.

    Simulated data is named by the simulate settings; given trajectories (``folder``) by their ``simulate.json`` and
    their part files' names and sizes, so data rewritten in place retrains. (Settings that do not change what is
    learned, such as the trainers' own seed fields, which the bench overrides, still count: they retrain needlessly,
    never wrongly.)"""
    dt = _Repr(repr(cfg.dt).replace(f", plan_target_z={cfg.dt.plan_target_z!r}", ""))  # play-time: keyed out
    own = {
        "bc": cfg.bc, "iql": cfg.iql, "cql": cfg.cql,
        "ppo": _online_key(cfg.ppo, "ppo"), "sac": _online_key(cfg.sac, "sac"),
        "dt": (dt, cfg.dt_train),
    }.get(bidder, (dt, cfg.dt_train, cfg.value, cfg.vdt_epsilon, cfg.vdt_value_target, cfg.vdt_plan_weight))  # fmt: skip
    if bidder == "vdt_replay":  # its margin (--replay-target-z, or calibrated) is set at load
        own = (*own[:-1], cfg.replay_plan_weight, cfg.replay_days, cfg.tuning_seed)
    if bidder == "gas":
        own = (dt, cfg.dt_train, cfg.value, tuple(cfg.gas_factors))
    sim = wide_simulate(cfg) if bidder == "vdt_wide" else cfg.simulate
    data = None if bidder in ("ppo", "sac") else (cfg.trajectories, replace(sim, output="", progress=False))
    if data is not None and cfg.trajectories and folder is not None:
        meta = folder / "simulate.json"
        parts = sorted((f.name, f.stat().st_size) for f in folder.glob("part-*.parquet"))
        data = (str(folder), meta.read_text() if meta.is_file() else None, parts)
    blob = json.dumps([bidder, seed, asdict(market), repr(data), repr(own)], sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- reporting ----------------------------------------------------------------------------------------------------
def _numbers(prefix: str, figures: dict) -> dict[str, float]:
    """The numeric figures of ``figures`` (not lists, not booleans) as MLflow metrics named ``prefix.key``."""
    return {
        f"{prefix}.{k}": v
        for k, v in figures.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _ci(lo_hi, pct: bool = False) -> str:
    if lo_hi is None:
        return "–"
    return f"[{lo_hi[0]:.1%}, {lo_hi[1]:.1%}]" if pct else f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]"


def markdown(name: str, res: dict) -> str:
    """One regime's table, best mean score first; the hindsight bound last."""
    lines = [
        f"### {name} ({res['test_periods']} test periods, {res['plays']} plays per bidder)",
        "",
        "| bidder | score (95% CI) | ratio to dt (95% CI) | share of bound (95% CI) | violations | budget used "
        "| train min | act ms | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in sorted(res["bidders"].items(), key=lambda kv: -kv[1]["score_mean"]):
        ratio = "–" if r["ratio_to_dt"] is None else f"{r['ratio_to_dt']:.3f} {_ci(r['ratio_ci'])}"
        share = (
            "–"
            if r["share_of_bound"] is None
            else f"{r['share_of_bound']:.1%} {_ci(r['share_ci'], pct=True)}"
        )
        lines.append(
            f"| {k} | {r['score_mean']:.1f} {_ci(r['score_ci'])} | {ratio} | {share} | {r['violation_rate']:.0%} "
            f"| {r['budget_used']:.0%} | {r['train_minutes']:.1f} | {r['act_ms']:.2f} | {r['seeds']} |"
        )
    b = res.get("bound")
    if b:
        lines.append(
            f"| *hindsight bound* | {b['score_mean']:.1f} {_ci(b['score_ci'])} | | | | {b['budget_used']:.0%} | | | |"
        )
        if "kept_score_mean" in b:
            lines.append(
                f"| *hindsight bound, target kept* | {b['kept_score_mean']:.1f} {_ci(b['kept_score_ci'])} | | | "
                f"| {b['kept_budget_used']:.0%} | | | |"
            )
    return "\n".join(lines)
