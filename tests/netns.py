"""Run a ``python -m pipelines`` job in a network namespace with only loopback (how the tests keep Ray local)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_netns = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare as root (netns)"
)


def run_job(job: str, *args: str, cwd: Path) -> dict:
    """Run ``job`` with ``args`` (plus ``--ray-temp-dir``) in its own network namespace, this checkout's code and a
    store under ``cwd``; return its last stdout line as JSON (the job must succeed)."""
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    cmd = " ".join(["ip link set lo up;", "RAY_AUTH_MODE=disabled", sys.executable, "-m", "pipelines", job,
                    *args, "--ray-temp-dir", ray_tmp])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}  # fmt: skip
    try:
        r = subprocess.run(["unshare", "--net", "sh", "-c", cmd], capture_output=True, text=True, timeout=600,
                           env=env, cwd=cwd)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
