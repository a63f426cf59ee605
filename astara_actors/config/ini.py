"""Read ini sections into frozen dataclasses, with errors that name section, key and problem.

Values are read the way oslo.config reads them (``True``/``False``/``yes``/``1``, comma-separated
lists, dashes and underscores alike in key names), with the standard ``configparser`` and no
interpolation. Unknown keys are warned about, never silently ignored.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from astara_actors.errors import SettingsError

__all__ = ["read_ini", "section_to"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Parser(configparser.ConfigParser):
    """Option names are matched loosely: ``Log-Level`` and ``log_level`` are one option."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr.strip().lower().replace("-", "_")


def read_ini(path: str | os.PathLike[str]) -> configparser.ConfigParser:
    """Parse ``path``; a missing or unreadable file or bad syntax is a :class:`SettingsError`."""
    parser = _Parser(interpolation=None, default_section="__no_defaults__")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise SettingsError(
            "-", str(path), f"cannot read the config file: {exc.strerror}"
        ) from None
    except configparser.Error as exc:
        raise SettingsError("-", str(path), f"not a valid ini file: {exc.message}") from None
    return parser


def section_to(
    parser: configparser.ConfigParser,
    section: str,
    cls: type[T],
    *,
    overrides: dict[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> T:
    """Build ``cls`` (a dataclass) from ``[section]``; missing keys keep their defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if parser.has_section(section):
        for key, raw in parser.items(section):
            if key not in fields:
                (warn or LOG.warning)(f"[{section}] {key}: unknown option, ignored")
                continue
            values[key] = _convert(section, key, raw, hints[key])
    values.update(overrides or {})
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        # A check of one value says so by naming it first ("log_level must be ...").
        key, _, problem = str(exc).partition(" ")
        if key in fields and problem:
            raise SettingsError(section, key, problem) from None
        raise SettingsError(section, "-", str(exc)) from None


def _convert(section: str, key: str, raw: str, hint: Any) -> Any:
    text = raw.strip()
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in args if a is not type(None)]
        if text == "" and type(None) in args:
            return None
        return _convert(section, key, raw, options[0])
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_convert(section, key, part, item) for part in _split(text))
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(section, key, f"{text!r} is not a boolean (use true or false)")
    if hint in (int, float):
        try:
            value = hint(text)
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise SettingsError(section, key, f"{text!r} is not {kind}") from None
        if value < 0:
            raise SettingsError(section, key, f"{text} must not be negative")
        return value
    return text


def _split(text: str) -> Iterable[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
