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
