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


@dataclass(frozen=True)
class Inner:
    """Nested settings."""

    lr: float = 0.1
    """Learning rate."""
    seed: int = 0
    """Inner seed."""


@dataclass(frozen=True)
class Outer:
    """A config with nested ones."""

    name: str = "x"
    """Name."""
    seed: int = 1
    """Outer seed."""
    train: Inner = Inner()
    """Training."""
    other: Inner = Inner(lr=0.5)
    """Another."""


def test_a_nested_field_is_its_section_dot_its_name():
    p = argparse.ArgumentParser()
    presets = {"default": Outer()}
    add_arguments(p, Outer, presets)
    ns = p.parse_args(["--train.lr", "0.2", "--other.seed", "7", "--seed", "3", "--train.seed", "4"])
    cfg = config_from_args(Outer, ns, presets)
    assert cfg == Outer(seed=3, train=Inner(lr=0.2, seed=4), other=Inner(lr=0.5, seed=7))
    assert flatten(cfg)["other.lr"] == 0.5
    with pytest.raises(SystemExit):  # no short form of a nested field, even where its name is unique
        p.parse_args(["--lr", "0.2"])


@dataclass(frozen=True)
class Inner2:
    """Inner with one more field, named like a field of the outer config and of a sibling section."""

    lr: float = 0.1
    """Learning rate."""
    seed: int = 0
    """Inner seed."""
    name: str = "y"
    """Added later."""


@dataclass(frozen=True)
class Outer2:
    name: str = "x"
    """Name."""
    seed: int = 1
    """Outer seed."""
    train: Inner = Inner()
    """Training."""
    other: Inner2 = Inner2()
    """Another."""


def _options(cls) -> set[str]:
    p = argparse.ArgumentParser()
    add_arguments(p, cls)
    return {s for a in p._actions for s in a.option_strings} - {"-h", "--help"}


def test_adding_a_field_to_one_section_renames_no_other_option():
    before, after = _options(Outer), _options(Outer2)
    assert after - before == {"--other.name"}
    assert before <= after  # --name, --seed, --train.seed, --other.seed all kept their names


@dataclass(frozen=True)
class Flags:
    fast: bool = False
    """Go fast."""
    train: Toy = Toy(fast=True)
    """Nested, with a bool."""


def test_a_nested_bool_turns_off_with_section_dot_no_name():
    p = argparse.ArgumentParser()
    add_arguments(p, Flags)
    cfg = config_from_args(Flags, p.parse_args(["--fast", "--train.no-fast"]))
    assert cfg.fast is True and cfg.train.fast is False
    assert config_from_args(Flags, p.parse_args([])) == Flags()
    with pytest.raises(SystemExit):
        p.parse_args(["--no-train.fast"])
