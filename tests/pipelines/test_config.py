import argparse
from dataclasses import dataclass

import pytest

from pipelines.config import add_arguments, config_from_args, field_docs, flatten


@dataclass(frozen=True)
class Toy:
    """A toy config."""

    size: int = 3
    """How many things
    (continued on a second line)."""
    rate: float = 0.5
    """A rate."""
    name: str = "x"
    fast: bool = False
    """Go fast."""
    seed: int | None = None
    """Optional seed."""
    levels: tuple[int, ...] = (8, 8)
    """Codebook sizes."""


PRESETS = {"default": Toy(), "tiny": Toy(size=1, name="tiny")}


def _parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p, Toy, PRESETS)
    return config_from_args(Toy, p.parse_args(argv), PRESETS), p


def test_field_docs_reads_the_line_under_each_field():
    docs = field_docs(Toy)
    assert docs["size"] == "How many things (continued on a second line)."
    assert docs["fast"] == "Go fast."
    assert "name" not in docs


def test_preset_then_explicit_options_override():
    cfg, _ = _parse([])
    assert cfg == Toy()
    cfg, _ = _parse(["--preset", "tiny"])
    assert cfg == Toy(size=1, name="tiny")
    cfg, _ = _parse(["--preset", "tiny", "--size", "7", "--fast", "--seed", "4", "--levels", "4", "2"])
    assert cfg == Toy(size=7, name="tiny", fast=True, seed=4, levels=(4, 2))
    cfg, _ = _parse(["--no-fast", "--rate", "0.25"])
    assert cfg.fast is False and cfg.rate == 0.25


def test_help_shows_docs_and_defaults(capsys):
    _, p = _parse([])
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "How many things (continued on a second line). (default: 3)" in " ".join(out.split())
    with pytest.raises(SystemExit):
        p.parse_args(["--size", "many"])


def test_flatten_nested():
    assert flatten({"a": Toy(), "b": {"c": 1}})["a.levels"] == (8, 8)
    assert flatten({"a": {"b": {"c": 1}}, "d": None}) == {"a.b.c": 1, "d": None}
