"""The docs describe the code that exists: every schema column, every job."""

from pathlib import Path

from onesearch.data import schema as S
from pipelines.cli import JOBS

ROOT = Path(__file__).resolve().parents[1]


def test_every_schema_column_is_documented_with_its_type_and_meaning():
    doc = (ROOT / "docs" / "data.md").read_text()
    for sch in S.SCHEMAS.values():
        assert f"### `{sch.name}`" in doc
        for c in sch.columns:
            assert f"| `{c.name}` | {c.dtype} | {'yes' if c.nullable else 'no'} |" in doc, (sch.name, c.name)
            assert c.doc in doc, (sch.name, c.name)


def test_every_job_is_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for job in JOBS:
        assert f"`{job}`" in doc, job


def test_readme_opens_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert [b.split("#")[0].strip() for b in block] == ["make quickstart", "make test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
