"""Where the jobs run their parallel work: worker processes of this machine, or Ray.

:func:`start_ray` starts (or joins) a Ray cluster; a local one binds loopback only. :class:`RayExecutor` is a
``concurrent.futures.Executor`` over Ray tasks, so code that takes an executor (``bidding.evaluate``, the bound,
bench-bidding's training) runs on Ray unchanged, with the same results as on a process pool.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future
from pathlib import Path

LOOPBACK = "127.0.0.1"


def start_ray(init: dict) -> None:
    """``ray.init(**init)``. Without an ``address`` it starts a local cluster whose every service (GCS, raylet,
    workers, object manager) binds 127.0.0.1, never the machine's network address, and checks that from the
    cluster's own node table; Ray's token authentication stays as Ray sets it (on for a new local cluster unless
    ``RAY_AUTH_MODE`` says otherwise). With an ``address`` it joins that cluster as Ray is told."""
    import ray

    if init.get("address"):
        ray.init(**init)
        return
    if ray.is_initialized():
        raise RuntimeError(
            "Ray is already initialised in this process; pass --ray-address to use that cluster"
        )
    if os.environ.get("RAY_ADDRESS"):
        raise RuntimeError(
            f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} is set, so Ray would join that cluster instead of starting a "
            "local one: pass it as --ray-address, or unset it"
        )
    # Ray picks the node's address from the route to the outside unless clusters are "disabled" (its switch for
    # laptops), in which case it takes loopback; the switch is a module constant read at call time.
    from ray._private import ray_constants

    env_name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_flag, old_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(env_name)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[env_name] = "0"
    try:
        ray.init(_node_ip_address=LOOPBACK, **init)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = old_env
    where = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
    if where != [LOOPBACK]:
        ray.shutdown()
        raise RuntimeError(
            f"the local Ray cluster came up on {where}, not on {LOOPBACK} only; refusing to use it"
        )


def executor(engine: str, workers: int, ray_address: str = "", ray_temp_dir: str = "") -> Executor | None:
    """Where a job's parallel work goes: a :class:`RayExecutor` for ``engine`` ray, a pool of ``workers`` spawned
    processes for local, or None (run in this process) for local with one worker."""
    if engine not in ("local", "ray") or workers < 1:
        raise ValueError(f"engine must be 'local' or 'ray' and workers >= 1, got {engine!r} and {workers}")
    if engine == "ray":
        return RayExecutor(workers, ray_address, ray_temp_dir)
    if workers == 1:
        return None
    from bidding.evaluate import process_pool

    return process_pool(workers)


class _RayFuture(Future):
    """A Future whose result is a Ray object reference's value."""

    def __init__(self, ref) -> None:
        super().__init__()
        self._ref = ref

    def result(self, timeout: float | None = None):
        import ray

        return ray.get(self._ref, timeout=timeout)


class RayExecutor(Executor):
    """``submit(fn, *args)`` runs ``fn(*args)`` as a Ray task (one CPU each). Without ``address`` it starts a local
    cluster of ``num_cpus`` CPUs (loopback only, :func:`start_ray`) and stops it on :meth:`shutdown`; with one it
    joins that cluster and leaves it running."""

    def __init__(self, num_cpus: int, address: str = "", temp_dir: str = "") -> None:
        import ray

        init: dict = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
        if address:
            init["address"] = address
        else:
            init["num_cpus"] = num_cpus
            if temp_dir:
                init["_temp_dir"] = str(Path(temp_dir).resolve())
        start_ray(init)
        self._ray, self._remote = ray, {}

    def submit(self, fn, /, *args, **kwargs) -> Future:
        task = self._remote.get(fn)
        if task is None:
            task = self._remote[fn] = self._ray.remote(fn)
        return _RayFuture(task.remote(*args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()
