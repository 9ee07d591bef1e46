"""Every job's command-line options, pinned: a renamed, added or removed option is a visible diff in job_flags.json.

After an intended change, write the snapshot again and commit it with the change:

    .venv/bin/python tests/pipelines/test_job_flags.py
"""

import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("job_flags.json")


def job_flags() -> dict[str, list[str]]:
    from pipelines.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return {
        job: sorted(s for a in p._actions for s in a.option_strings if s not in ("-h", "--help"))
        for job, p in sub.items()
    }


def test_every_jobs_options_match_the_snapshot():
    want, got = json.loads(SNAPSHOT.read_text()), job_flags()
    diff = {
        job: {
            "added": sorted(set(got.get(job, [])) - set(want.get(job, []))),
            "removed": sorted(set(want.get(job, [])) - set(got.get(job, []))),
        }
        for job in sorted(set(want) | set(got))
    }
    diff = {job: d for job, d in diff.items() if d["added"] or d["removed"]}
    assert not diff, (
        f"options changed (if intended, run {Path(__file__).name} and commit job_flags.json): {diff}"
    )


def test_nested_options_are_section_dot_field():
    flags = job_flags()
    assert "--evaluation.test-seed" in flags["bench-bidding"]
    assert "--train.epochs" in flags["train-generator"]
    assert "--trainer.train.epochs" in flags["bench-search"]
    assert "--align.lr" in flags["align"] and "--align.lr" in flags["bench-search"]
    assert "--market.rules.beta" in flags["simulate"]
    assert "--simulate.market.rules.beta" in flags["bench-bidding"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    SNAPSHOT.write_text(json.dumps(job_flags(), indent=1) + "\n")
    print(f"wrote {SNAPSHOT}")


def test_a_field_added_to_a_nested_config_renames_no_option_of_any_job():
    """Give the trainer's TrainConfig a field named like a top-level option of train-generator (``dataset``): the
    jobs that nest it gain exactly that one option, under its section, and every other option keeps its name."""
    import argparse
    from dataclasses import field, make_dataclass

    from onesearch.model.train import TrainConfig
    from pipelines import bench_generative, train_generator
    from pipelines.config import add_arguments

    def options(cls) -> set[str]:
        p = argparse.ArgumentParser()
        add_arguments(p, cls)
        return {s for a in p._actions for s in a.option_strings} - {"-h", "--help"}

    train2 = make_dataclass(
        "TrainConfig2", [("dataset", str, field(default="x"))], bases=(TrainConfig,), frozen=True
    )
    trainer2 = make_dataclass(
        "Config2",
        [("train", train2, field(default_factory=train2))],
        bases=(train_generator.Config,),
        frozen=True,
    )
    bench2 = make_dataclass(
        "Bench2", [("trainer", trainer2, field(default_factory=trainer2))], bases=(bench_generative.Config,),
        frozen=True,
    )  # fmt: skip
    assert options(trainer2) - options(train_generator.Config) == {"--train.dataset"}
    assert options(train_generator.Config) <= options(trainer2)  # --dataset is still --dataset
    assert options(bench2) - options(bench_generative.Config) == {"--trainer.train.dataset"}
    assert options(bench_generative.Config) <= options(bench2)
