"""Every job command written in the README and docs/ uses options the job has.

A command is ``python -m pipelines <job> ...`` (to the end of the line, with backslash continuations) or, in running
text, an inline code span that starts with a job's name (```bench-search --trainer.dataset beauty ...```). Only the
``--options`` of a command are checked; placeholders such as ``[lever]`` or ``...`` are ignored.
"""

import re
from pathlib import Path

import pytest

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _options() -> dict[str, set[str]]:
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return {job: {s for a in p._actions for s in a.option_strings} for job, p in sub.items()}


OPTIONS = _options()
_JOB = "|".join(sorted(OPTIONS, key=len, reverse=True))
_CMD = re.compile(r"-m pipelines (" + _JOB + r")(?=\s|`|$)|`(" + _JOB + r") (?=-)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9.-]*[a-z0-9]")


def commands(text: str):
    """(job, command text, line number) of every job command in ``text``."""
    for m in _CMD.finditer(text):
        job = m.group(1) or m.group(2)
        if m.group(2):  # inline code span: to its closing backtick
            end = text.find("`", m.end())
        else:
            end = text.find("\n", m.end())
            while end >= 0 and text[:end].rstrip().endswith("\\"):
                end = text.find("\n", end + 1)
            inline_end = text.find("`", m.end())
            if 0 <= inline_end < (end if end >= 0 else len(text)):
                end = inline_end
        yield job, text[m.end() : end if end >= 0 else len(text)], text.count("\n", 0, m.start()) + 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_documented_commands_use_options_the_job_has(page):
    bad = []
    for job, cmd, line in commands(page.read_text()):
        for flag in _FLAG.findall(cmd):
            if flag not in OPTIONS[job]:
                bad.append(f"{page.name}:{line}: {job} has no {flag}")
    assert not bad, "\n".join(bad)


def test_the_checker_finds_a_wrong_option():
    text = "run `bench-search --trainer.dataset x --epochs 3` and\n.venv/bin/python -m pipelines simulate --beta 2\n"
    found = [
        (job, flag)
        for job, cmd, _ in commands(text)
        for flag in _FLAG.findall(cmd)
        if flag not in OPTIONS[job]
    ]
    assert found == [("bench-search", "--epochs"), ("simulate", "--beta")]
