"""Typer options generated from a pydantic config's fields, so a setting's default, help text and
constraints are written once, in the config.

:func:`config_options` adds one ``--field-name`` option per field to a command (lists are given
comma-separated); the command receives them as keyword arguments and builds the config with
:func:`build_config`, which parses the lists and reports a rejected value as a usage error (exit 2)
naming the option.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from seqedit.errors import one_line

Command = TypeVar("Command", bound=Callable[..., Any])
ConfigT = TypeVar("ConfigT", bound=BaseModel)
SCALARS = (bool, int, float, str, Path)


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(annotation, False)``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _is_list(annotation: Any) -> bool:
    return get_origin(_without_none(annotation)[0]) is list


def option_flags(name: str, flags: Mapping[str, Sequence[str]]) -> list[str]:
    """The command-line spelling of field ``name``: ``flags[name]`` if given, else ``--name-with-dashes``."""
    return list(flags.get(name, [f"--{name.replace('_', '-')}"]))


def _option(name: str, info: FieldInfo, flags: Mapping[str, Sequence[str]]) -> inspect.Parameter:
    base, optional = _without_none(info.annotation)
    default = info.get_default(call_default_factory=True) if not info.is_required() else ...
    if get_origin(base) is list:
        # Lists are typed as comma-separated text on the command line; build_config splits them.
        item = get_args(base)[0] if get_args(base) else str
        item_hint = "integers" if item is int else "values"
        help_text = f"{info.description or ''} Comma-separated {item_hint}.".strip()
        cli_type: Any = str
        if isinstance(default, list):
            default = ",".join(str(v) for v in default)
    elif base in SCALARS or get_origin(base) is Literal:  # typer offers a Literal's values as choices
        cli_type, help_text = base, info.description or ""
    else:
        raise TypeError(f"no command-line option for field {name!r} of type {info.annotation!r}")
    value_type = cli_type | None if optional or default is None else cli_type
    # Without its own spelling typer names the option after the field (and adds --no-X to a flag).
    option = typer.Option(*flags.get(name, ()), help=help_text)
    annotation = Annotated[value_type, option]  # type: ignore[valid-type]  # built at run time, read by typer
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def config_options(
    model: type[BaseModel], *, exclude: Iterable[str] = (), flags: Mapping[str, Sequence[str]] | None = None
) -> Callable[[Command], Command]:
    """Give the decorated command one option per field of ``model`` (less ``exclude``).

    The command takes them as ``**settings``; ``flags`` spells chosen fields differently (``{"model":
    ["--model", "-m"]}``). The command's own parameters (those not settings) come first in ``--help``.
    """
    skip = set(exclude)
    spelled = dict(flags or {})
    generated = [_option(name, info, spelled) for name, info in model.model_fields.items() if name not in skip]

    def decorate(command: Command) -> Command:
        # The command's own annotations resolved (a module with postponed annotations holds them as text,
        # and typer would then drop their Option metadata, help texts included).
        hints = get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
        command.__signature__ = inspect.Signature([*own, *generated])  # type: ignore[attr-defined]
        return command

    return decorate


def parse_list(text: str, integers: bool, flag: str) -> list[Any]:
    """``"-3,-2,-1"`` -> ``[-3, -2, -1]`` (or the stripped strings when not ``integers``)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise typer.BadParameter("give at least one value", param_hint=flag)
    if not integers:
        return parts
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=flag) from None


def config_values(
    model: type[BaseModel], values: Mapping[str, Any], flags: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """The entries of ``values`` that are fields of ``model``, with comma-separated lists parsed."""
    spelled = dict(flags or {})
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        info = model.model_fields.get(name)
        if info is None:
            continue
        if isinstance(value, str) and _is_list(info.annotation):
            item = get_args(_without_none(info.annotation)[0])
            value = parse_list(value, bool(item) and item[0] is int, option_flags(name, spelled)[0])
        parsed[name] = value
    return parsed


def build_config(
    model: type[ConfigT], values: Mapping[str, Any], flags: Mapping[str, Sequence[str]] | None = None
) -> ConfigT:
    """Validate ``values`` (fields of ``model``, lists already parsed) into the config; a rejected value
    is a usage error naming its option."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        spelled = dict(flags or {})
        problems = [
            f"{option_flags(str(err['loc'][0]), spelled)[0] if err['loc'] else '(settings)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise typer.BadParameter(one_line("\n".join(problems))) from None
