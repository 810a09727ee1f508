"""absl flags made from a configuration dataclass: one flag per field, its help from the field.

`define_flags(TrainConfig, presets)` defines `--FIELD` for every field of the dataclass, typed
by the field's annotation (`bool`, `int`, `float`, `str`, or one of them `| None`), an enum
where the class lists the field's `CHOICES`, with the help of the class docstring's
`Attributes:` entry and the field's default under each preset. A field without a default is a
required flag. Flags default to `None`, meaning "the preset's value"; `overrides()` returns the
values the command line gives. So a hyperparameter is added in one place: its field.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from absl import flags

from video_reloc.errors import UserError

# The flags defined here belong to the binary that asks for them (its key flags, listed by
# its --help), not to this module.
flags.disclaim_key_flags()

FLAGS = flags.FLAGS
_DEFINE = {
    bool: flags.DEFINE_boolean,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
_ENTRY = re.compile(r"^(\s+)(\w+): (.*)$")


def field_help(config_class: type) -> dict[str, str]:
    """Field name -> its entry in the `Attributes:` section of the class docstring, one line."""
    doc = inspect.getdoc(config_class) or ""
    found: dict[str, str] = {}
    name, indent, inside = None, None, False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line[0].isspace():
            break  # the next section
        match = _ENTRY.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, name = len(match.group(1)), match.group(2)
            found[name] = match.group(3).strip()
        elif name is not None and line.strip():
            found[name] += " " + line.strip()
    return found


def _scalar_type(kind: Any, name: str) -> type:
    """`int` for `int` and for `int | None`, and so on."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kinds = [k for k in typing.get_args(kind) if k is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind not in _DEFINE:
        raise TypeError(f"field {name}: no flag for type {kind}")
    return kind


def define_flags(
    config_class: type,
    presets: Mapping[str, Any],
    exclude: Iterable[str] = (),
    flag_values: flags.FlagValues = FLAGS,
) -> list[str]:
    """Defines a flag per field of `config_class`; returns their names.

    Args:
        config_class: A config dataclass, such as `video_reloc.training.TrainConfig`. Its
            docstring's `Attributes:` give the help; its `CHOICES` (field -> allowed values),
            if any, make enum flags.
        presets: Preset name -> a config of that class, whose values the help shows as the
            defaults.
        exclude: Fields that get no flag.
        flag_values: Where to define them.

    Raises:
        TypeError: A field of a type no flag can hold, or without help.
    """
    hints = typing.get_type_hints(config_class)
    helps = field_help(config_class)
    choices = getattr(config_class, "CHOICES", {})
    names = []
    for field in dataclasses.fields(config_class):
        if field.name in exclude:
            continue
        kind = _scalar_type(hints[field.name], field.name)
        if field.name not in helps:
            raise TypeError(f"field {field.name} of {config_class.__name__} has no help")
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        text = helps[field.name] + ("" if required else _defaults(field.name, presets))
        if field.name in choices:
            flags.DEFINE_enum(
                field.name, None, list(choices[field.name]), text, flag_values=flag_values
            )
        else:
            _DEFINE[kind](field.name, None, text, flag_values=flag_values)
        if required:
            flags.mark_flag_as_required(field.name, flag_values=flag_values)
        names.append(field.name)
    return names


def _defaults(name: str, presets: Mapping[str, Any]) -> str:
    values = {preset: getattr(config, name) for preset, config in presets.items()}
    texts = {preset: _text(value) for preset, value in values.items()}
    if len(set(texts.values())) == 1:
        return f" Default: {next(iter(texts.values()))}."
    return " Default: " + ", ".join(f"{text} (preset {k})" for k, text in texts.items()) + "."


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def parse_overrides(config_class: type, items: Iterable[str], flag: str) -> dict[str, Any]:
    """`KEY=VALUE` items (as `--flag=normalization=standardize,units=64`) as typed field values.

    Each value is read as its field's type (see `define_flags`); `none` gives `None` where the
    field admits it.

    Args:
        config_class: The config dataclass whose fields the keys name.
        items: The `KEY=VALUE` strings.
        flag: The flag they came from, named in errors.

    Raises:
        UserError: An item that is not `KEY=VALUE` of a field, or a value its field cannot
            hold (`field` is `flag`).
    """
    hints = typing.get_type_hints(config_class)
    names = sorted(f.name for f in dataclasses.fields(config_class))
    choices = getattr(config_class, "CHOICES", {})
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in names:
            raise UserError(f"{item!r} is not KEY=VALUE of {names}", field=flag)
        hint = hints[key]
        optional = type(None) in typing.get_args(hint)
        if optional and text.lower() == "none":
            values[key] = None
            continue
        kind = _scalar_type(hint, key)
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            else:
                value = kind(text)
        except ValueError:
            raise UserError(f"{key}={text!r} is not a {kind.__name__}", field=flag) from None
        if key in choices and value not in choices[key]:
            raise UserError(f"{key} must be one of {list(choices[key])}, got {text!r}", field=flag)
        values[key] = value
    return values


def overrides(names: Iterable[str], flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """The values of the flags of `names` that the command line gives (others are `None`)."""
    return {name: flag_values[name].value for name in names if flag_values[name].value is not None}
