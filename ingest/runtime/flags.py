"""Command lines built from the settings models: the one way a service maps flags to settings.

A service lists which settings get a flag (:class:`Flag`, a dotted path into its pydantic model); the flag's type,
choices, help and default are read from the field itself, so ``--help`` never restates a default by hand and a flag
can only exist for a setting that exists. Flags the user did not give stay out of the overrides, so the config
file's value (or the field default) holds.

We use argparse over the model rather than pydantic-settings' own ``CliSettingsSource``: the product's flag names
are short (``--max-steps`` for ``max_steps``, ``--group-id`` for ``data.group_id``) and the precedence is
file < flags < environment, which CliSettingsSource (flags above the environment) would invert.
"""

from __future__ import annotations

import argparse
import enum
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


@dataclass(frozen=True)
class Flag:
    """A flag for the setting at ``setting`` (dotted for nested models, e.g. ``data.batch_size``).

    ``name`` defaults to ``--`` + the last part with dashes; a name starting ``--no-`` turns a boolean setting off.
    ``help`` replaces the field's description where that does not read well as flag help.
    """

    setting: str
    name: str | None = None
    metavar: str | None = None
    help: str | None = None

    @property
    def option(self) -> str:
        return self.name or "--" + self.setting.rsplit(".", 1)[-1].replace("_", "-")

    @property
    def dest(self) -> str:
        return "setting__" + self.setting.replace(".", "__")


CONFIG_FLAG_HELP = "YAML settings; flags override it, STREAMSSL_* variables override both"
COMMON_FLAGS = (
    Flag("bus", metavar="URL"),
    Flag("topic", metavar="NAME"),
    Flag("metrics_port", metavar="N"),
    Flag("log_format"),
    Flag("log_level"),
)


def add_common_flags(parser: argparse.ArgumentParser, settings: type[BaseModel], *, topic: bool = True) -> None:
    """``--config`` and the flags every service shares (``--topic`` only where the service reads that topic)."""
    group = parser.add_argument_group("common options (also from --config YAML and STREAMSSL_* variables)")
    group.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_FLAG_HELP)
    add_flags(group, settings, common_flags(topic=topic))


def common_flags(*, topic: bool = True) -> tuple[Flag, ...]:
    return tuple(flag for flag in COMMON_FLAGS if topic or flag.setting != "topic")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: type[BaseModel], flags: Sequence[Flag]
) -> None:
    """Add one argument per flag, typed, with choices, help and default taken from the settings field."""
    for flag in flags:
        info = field_info(settings, flag.setting)
        kind, choices = _kind(info.annotation)
        text = flag.help or info.description or flag.setting.replace("_", " ")
        default = info.get_default(call_default_factory=True)
        if kind is bool:
            turns_off = flag.option.startswith("--no-")
            action = "store_false" if turns_off else "store_true"
            parser.add_argument(flag.option, dest=flag.dest, action=action, default=None, help=text)
            continue
        if default is PydanticUndefined:
            text += " (required)"
        elif default is not None:
            text += f" (default: {_shown(default)})"
        # argparse would name the value after the internal dest (SETTING__FPS); name it after the flag instead.
        metavar = flag.metavar or (None if choices else flag.option.lstrip("-").replace("-", "_").upper())
        parser.add_argument(
            flag.option, dest=flag.dest, type=kind, choices=choices, metavar=metavar, default=None, help=text
        )


def given_settings(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The flags the user gave, as a nested settings mapping (``data.batch_size`` → ``{"data": {...}}``)."""
    given: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.dest)
        if value is None:
            continue
        *parents, leaf = flag.setting.split(".")
        target = given
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return given


def field_info(settings: type[BaseModel], path: str) -> FieldInfo:
    """The pydantic field at a dotted ``path``; ``KeyError`` naming the path if the model has no such setting."""
    model: Any = settings
    *parents, leaf = path.split(".")
    for part in parents:
        model = _optional_inner(model.model_fields[part].annotation)
    if leaf not in model.model_fields:
        raise KeyError(f"{settings.__name__} has no setting {path!r}")
    info: FieldInfo = model.model_fields[leaf]
    return info


def _kind(annotation: Any) -> tuple[Any, list[str] | None]:
    """argparse ``type`` and ``choices`` for a field annotation."""
    inner = _optional_inner(annotation)
    if get_origin(inner) is Literal:
        values = get_args(inner)
        return type(values[0]), list(values) if isinstance(values[0], str) else None
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return str, [str(member.value) for member in inner]
    if inner in (bool, int, float, str, Path):
        return inner, None
    return str, None


def _optional_inner(annotation: Any) -> Any:
    """``X`` for ``X | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _shown(default: Any) -> str:
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)
