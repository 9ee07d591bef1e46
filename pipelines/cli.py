"""``python -m pipelines <job> [options]``: the command line over the jobs.

Every job is a module with a ``Config`` dataclass, a ``PRESETS`` dict (the first entry is the default) and
``main(cfg) -> dict``. The command line builds the config (preset, then the options given), calls ``main``, and
prints the result as one JSON object on the last line of stdout. Progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from polars.exceptions import PolarsError

from pipelines.config import add_arguments, config_from_args
from pipelines.tracking import json_default

JOBS: dict[str, str] = {
    "prepare-data": "pipelines.prepare_data",
    "quickstart": "pipelines.quickstart",
    "tokenize": "pipelines.tokenize",
    "train-generator": "pipelines.train_generator",
    "align": "pipelines.align",
    "bench-generative": "pipelines.bench_generative",
    "bench-search": "pipelines.bench_search",
    "simulate": "pipelines.simulate",
    "bench-simulator": "pipelines.bench_simulator",
    "bench-bidding": "pipelines.bench_bidding",
    "bench-scale": "pipelines.bench_scale",
    "score": "pipelines.score",
    "figures": "pipelines.figures",
}
"""Job name -> module (each is imported when the parser is built, for its options)."""

REPRODUCIBLE_BLAS = {"score": "AUTO,STRICT"}
"""Jobs run with MKL's strict conditional numerical reproducibility (``MKL_CBWR``, read when torch loads MKL, so set
before any job module is imported): matrix products then give the same bits whatever the number of threads, so the
local engine and Ray's single-thread actors rank near-ties identically. It costs training 10-30% of its speed, so the
training jobs do not use it. An ``MKL_CBWR`` already in the environment wins."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Jobs of the onesearch toolkit. Each is one MLflow run and prints one JSON object last.",
    )
    sub = parser.add_subparsers(dest="job", metavar="JOB")
    for name, module_name in JOBS.items():
        mod = importlib.import_module(module_name)
        doc = (mod.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else name,
            description=doc,
            usage=f"python -m pipelines {name} [--preset NAME] [--<option> VALUE ...]",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(p, mod.Config, getattr(mod, "PRESETS", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in REPRODUCIBLE_BLAS:
        os.environ.setdefault("MKL_CBWR", REPRODUCIBLE_BLAS[args[0]])
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not ns.job:
        parser.print_help()
        return 2
    mod = importlib.import_module(JOBS[ns.job])
    try:
        cfg = config_from_args(mod.Config, ns, getattr(mod, "PRESETS", None))
        result = mod.main(cfg)
    except (ValueError, OSError, KeyError, PolarsError) as e:
        print(f"error: {ns.job}: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    print(json.dumps(result, default=json_default))
    return 0
