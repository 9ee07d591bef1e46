"""Frozen-dataclass job configs turned into command lines, MLflow params and back.

A job config is a frozen dataclass whose every field has a one-line docstring (a string literal right under
the field, as in CleanRL). :func:`field_docs` reads those lines; :func:`add_arguments` turns the fields into
``--kebab-case`` options whose help text is that line; :func:`config_from_args` starts from a named preset and
replaces only the options given on the command line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` to the docstring written under it (empty when there is none)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int; leave other types alone."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def add_arguments(parser: argparse.ArgumentParser, cls: type, presets: dict[str, Any] | None = None) -> None:
    """Add one option per field of ``cls`` (defaults None: only what the user types overrides the preset)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help=f"start from a named preset (default: {next(iter(presets))}); options below override it",
        )
    default_cfg = next(iter(presets.values())) if presets else None
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        default = getattr(default_cfg, f.name) if default_cfg is not None else f.default
        shown = "" if default is dataclasses.MISSING else f" (default: {default})"
        help_ = (docs.get(f.name) or f.name) + shown
        if tp is bool:
            parser.add_argument(
                _option(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_
            )
        elif tp in (int, float, str):
            parser.add_argument(
                _option(f.name), type=tp, default=None, help=help_, metavar=tp.__name__.upper()
            )
        elif typing.get_origin(tp) is tuple:
            elem = typing.get_args(tp)[0]
            parser.add_argument(_option(f.name), type=elem, nargs="+", default=None, help=help_)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: type {tp!r} has no command-line form")


def config_from_args(cls: type, ns: argparse.Namespace, presets: dict[str, Any] | None = None) -> Any:
    """Build a ``cls`` from the chosen preset (or the class defaults) plus the options given."""
    preset_name = getattr(ns, "preset", None)
    if presets:
        base = presets[preset_name] if preset_name else next(iter(presets.values()))
    else:
        base = cls()
    given = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name, None)
        if v is not None:
            given[f.name] = tuple(v) if isinstance(v, list) else v
    return dataclasses.replace(base, **given)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) dataclass or dict into ``{"a.b": value}`` for MLflow params."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix[:-1]] = obj
    return out
