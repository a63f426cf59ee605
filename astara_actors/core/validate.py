"""What an id or a string from outside (bus, HTTP, CLI) must look like before anything uses it.

Every parser returns the value in its one canonical form or raises :class:`InvalidValue`, whose
message names the field and the problem and shows the value escaped and shortened, so it can be
logged or printed as is. The edges wrap it in their own error (``MalformedMessage`` on the bus,
``InvalidCommand`` for commands, a usage error in astara-ctl, 400 in the HTTP API).

- **Neutron ids** (router, port, subnet, network, floating IP): a UUID, 36 characters with
  hyphens or the 32 hex digits without (:data:`UUID_PATTERN`, as the HTTP API documents it),
  any case; returned lower-case with hyphens, Neutron's own form.
- **Keystone project (tenant) ids**: 32 hex digits (what Keystone issues) or a UUID with
  hyphens, any case; returned lower-case, without hyphens if given without (Neutron compares
  them as strings).
- **Reasons**: at most :data:`MAX_REASON` characters (the original's ``reason varchar(255)``)
  and no control, format or line-separator character (Unicode Cc, Cf, Zl, Zp, Cs: newline,
  tab, ESC, bidi overrides, zero-width...); :func:`reason_pattern` says so as a regex.
- **Image refs**: a Glance id or a name-like ref, :data:`IMAGE_PATTERN`, at most 255.

:func:`escape` and :func:`bounded` are for text that is shown rather than refused (log lines).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

from astara_actors.errors import AstaraError

__all__ = [
    "IMAGE_PATTERN",
    "MAX_IMAGE_REF",
    "MAX_REASON",
    "UUID_PATTERN",
    "InvalidValue",
    "bounded",
    "escape",
    "image_ref",
    "is_shown",
    "is_tenant_id",
    "is_uuid",
    "label",
    "neutron_id",
    "one_line",
    "reason",
    "reason_pattern",
    "shown",
    "tenant_id",
]

MAX_REASON = 255
MAX_IMAGE_REF = 255

#: A UUID with or without its hyphens, any case (the HTTP API's OpenAPI document uses it).
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
IMAGE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
_UUID = re.compile(UUID_PATTERN, re.ASCII)
_IMAGE_REF = re.compile(IMAGE_PATTERN, re.ASCII)
# Refused in reasons: controls, format characters (bidi, zero-width), line/paragraph
# separators, lone surrogates. Unassigned and private-use characters are only escaped in logs.
_UNSAFE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
_SHOWN = 40  # characters of a refused value quoted in an error message


class InvalidValue(AstaraError, ValueError):
    """Raised when an id or a string from outside has the wrong type or shape; says which."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def is_uuid(value: object) -> bool:
    """True for a UUID, with or without its hyphens, any case (:data:`UUID_PATTERN`)."""
    return isinstance(value, str) and 32 <= len(value) <= 36 and bool(_UUID.fullmatch(value))


def is_tenant_id(value: object) -> bool:
    """True for a Keystone project id: 32 hex digits or a UUID with hyphens, any case."""
    return is_uuid(value)


def neutron_id(value: object, field: str = "id") -> str:
    """A Neutron resource id in canonical form (lower-case, hyphenated); else InvalidValue."""
    text = _string(value, field)
    if not is_uuid(text):
        raise InvalidValue(field, f"{shown(text)} is not a UUID")
    return _hyphenated(text)


def tenant_id(value: object, field: str = "tenant_id") -> str:
    """A Keystone project id, lower-cased, form kept; else InvalidValue."""
    text = _string(value, field)
    if not is_tenant_id(text):
        raise InvalidValue(
            field, f"{shown(text)} is not a UUID or a Keystone project id (32 hex digits)"
        )
    return text.lower() if "-" not in text else _hyphenated(text)


def reason(value: object, field: str = "reason") -> str:
    """An operator's reason: surrounding blanks stripped, bounded, printable; else InvalidValue."""
    if value is None:
        return ""
    text = _string(value, field)
    if len(text) > 4 * MAX_REASON:  # strip() below must not copy megabytes first
        raise InvalidValue(field, _too_long(len(text), MAX_REASON))
    text = text.strip(" ")
    if len(text) > MAX_REASON:
        raise InvalidValue(field, _too_long(len(text), MAX_REASON))
    if not text.isprintable():  # the fast path: printable text has none of _UNSAFE
        at = next((i for i, c in enumerate(text) if unicodedata.category(c) in _UNSAFE), None)
        if at is not None:
            raise InvalidValue(
                field, f"contains a control character ({_escape_char(text[at])} at position {at})"
            )
    return text


@functools.cache
def reason_pattern() -> str:
    """A regex matching the reasons :func:`reason` accepts by content (the length is
    ``maxLength``), for the OpenAPI document; ``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``
    escapes (Python's ``re`` and Rust's ``regex`` read them alike)."""
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        # Lone surrogates (Cs) cannot be in UTF-8 text, and regex engines other than
        # Python's refuse them in a class: left out of the pattern, still refused here.
        if unicodedata.category(chr(code)) in _UNSAFE - {"Cs"}:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))

    def char(code: int) -> str:
        return (
            f"\\x{code:02x}"
            if code < 0x100
            else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        )

    spans = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[^{spans}]*$"


def image_ref(value: object, field: str = "image") -> str:
    """A Glance image id (or a name-like ref of the simulated cloud); else InvalidValue."""
    text = _string(value, field)
    if len(text) > MAX_IMAGE_REF:
        raise InvalidValue(field, _too_long(len(text), MAX_IMAGE_REF))
    if not _IMAGE_REF.fullmatch(text):
        raise InvalidValue(
            field,
            f"{shown(text)} is not an image id (letters, digits, '.', '_', "
            f"'-', starting with a letter or digit)",
        )
    return text


# ----------------------------------------------------------------------- shown, not refused
def is_shown(c: str) -> bool:
    """True for a character shown as itself: printable, or a space of any kind. Others (line
    breaks, controls, bidi and other format characters, unassigned...) are escaped."""
    return c.isprintable() or unicodedata.category(c) == "Zs"


def escape(text: str) -> str:
    """``text`` with every character :func:`is_shown` refuses written as its Python escape
    (``\\n``, ``\\x1b``, ``\\u202e``): one line, no terminal control; other text as is."""
    if text.isprintable():
        return text
    return "".join(c if is_shown(c) else _escape_char(c) for c in text)


def one_line(text: str, limit: int) -> str:
    """:func:`escape` of ``text``, cut to ``limit`` characters (an escape is never split), then
    "… (N more characters)" counting the characters of ``text`` not shown."""
    if len(text) <= limit and text.isprintable():
        return text
    out: list[str] = []
    size = shown_chars = 0
    for c in text[:limit]:  # an escape is never shorter than its character
        piece = c if is_shown(c) else _escape_char(c)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
        shown_chars += 1
    line = "".join(out)
    return (
        line if shown_chars == len(text) else f"{line}… ({len(text) - shown_chars} more characters)"
    )


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def label(value: object, limit: int = 255) -> str:
    """A free-form label from outside (a publisher id), escaped and cut to ``limit``."""
    if not isinstance(value, str):
        return ""
    text = escape(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object, limit: int = _SHOWN) -> str:
    """A refused value as an error message quotes it: repr-escaped, at most ``limit`` long."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}… ({len(value)} characters)"
    return type(value).__name__


def _escape_char(c: str) -> str:
    code = ord(c)
    if c == "\n":
        return "\\n"
    if c == "\r":
        return "\\r"
    if c == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidValue(field, f"must be a string, not {type(value).__name__}")
    return value


def _hyphenated(text: str) -> str:
    hex32 = text.replace("-", "").lower()
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def _too_long(length: int, limit: int) -> str:
    return f"is {length} characters long; at most {limit} are allowed"
