"""Frozen-dataclass job configs turned into command lines, MLflow params and back.

A job config is a frozen dataclass whose every field has a one-line docstring (a string literal right under
the field, as in CleanRL). :func:`field_docs` reads those lines; :func:`add_arguments` turns the fields into
``--kebab-case`` options whose help text is that line (a field of a nested section ``train: TrainConfig`` is
``--train.<field>``, always, so a flag's name depends only on where its field lives); :func:`config_from_args` starts from a named preset and
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


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int; leave other types alone."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _leaves(
    cls: type, default: Any, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any, Any, str]]:
    """(path, type, default, doc) of every scalar field; a nested dataclass field contributes its own fields under
    its name (``train: TrainConfig`` gives the path ``("train", "lr")``)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        value = getattr(default, f.name) if default is not None else f.default
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, value if dataclasses.is_dataclass(value) else None, (*path, f.name))
        else:
            out.append(((*path, f.name), tp, value, docs.get(f.name) or f.name))
    return out


def option_name(path: tuple[str, ...]) -> str:
    """The option (and its dest) of the field at ``path``: its names in kebab case joined by dots, as tyro names
    them: ``("train", "max_minutes")`` -> ``--train.max-minutes`` (a bool field also gets ``--train.no-<name>``).
    It depends only on where the field lives, so adding a field anywhere renames no other option."""
    return "--" + ".".join(name.replace("_", "-") for name in path)


def _sections(cls: type, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """{path of every nested dataclass field: its docstring}, outermost first."""
    docs, hints, out = field_docs(cls), typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            out[(*path, f.name)] = docs.get(f.name, "")
            out.update(_sections(tp, (*path, f.name)))
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, presets: dict[str, Any] | None = None) -> None:
    """Add one option per field of ``cls`` (defaults None: only what the user types overrides the preset); the
    fields of each nested section are listed under their own heading in ``--help``."""
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help=f"start from a named preset (default: {next(iter(presets))}); options below override it",
        )
    default_cfg = next(iter(presets.values())) if presets else None
    groups = {
        section: parser.add_argument_group(option_name(section) + ".*", doc or None)
        for section, doc in _sections(cls).items()
    }
    for path, tp, default, doc in _leaves(cls, default_cfg):
        name = option_name(path)
        dest = name[2:]
        add = groups[path[:-1]].add_argument if len(path) > 1 else parser.add_argument
        shown = "" if default is dataclasses.MISSING else f" (default: {default})"
        help_ = doc + shown
        if tp is bool:
            *section, last = path
            negative = option_name((*section, "no_" + last))  # --train.no-progress, as tyro names it
            add(
                name,
                dest=dest,
                action="store_const",
                const=True,
                default=None,
                help=f"{help_}; {negative} turns it off",
            )
            add(negative, dest=dest, action="store_const", const=False, help=argparse.SUPPRESS)
        elif tp in (int, float, str):
            add(name, dest=dest, type=tp, default=None, help=help_, metavar=tp.__name__.upper())
        elif typing.get_origin(tp) is tuple:
            elem = typing.get_args(tp)[0]
            add(
                name, dest=dest, type=elem, nargs="+", default=None, help=help_, metavar=elem.__name__.upper()
            )
        else:
            raise TypeError(f"{cls.__name__}.{'.'.join(path)}: type {tp!r} has no command-line form")


def _replace_path(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_path(getattr(obj, path[0]), path[1:], value)})


def config_from_args(cls: type, ns: argparse.Namespace, presets: dict[str, Any] | None = None) -> Any:
    """Build a ``cls`` from the chosen preset (or the class defaults) plus the options given."""
    preset_name = getattr(ns, "preset", None)
    if presets:
        cfg = presets[preset_name] if preset_name else next(iter(presets.values()))
    else:
        cfg = cls()
    for path, *_ in _leaves(cls, cfg):
        v = getattr(ns, option_name(path)[2:], None)
        if v is not None:
            cfg = _replace_path(cfg, path, tuple(v) if isinstance(v, list) else v)
    return cfg


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
