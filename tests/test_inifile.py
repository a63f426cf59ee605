"""Reading ini sections into frozen settings, and the errors a user sees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from astara_actors.config.ini import read_ini, section_to
from astara_actors.errors import SettingsError


@dataclass(frozen=True)
class Example:
    port: int = 9900
    delay: float = 1.5
    enabled: bool = False
    name: str = "sim"
    hosts: tuple[str, ...] = ()
    limit: int | None = None


def ini(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.ini"
    path.write_text(text)
    return path


def test_values_are_converted_and_defaults_kept(tmp_path: Path) -> None:
    parser = read_ini(ini(tmp_path, "[s]\nport = 80\nenabled = yes\nhosts = a, b ,c\nlimit =\n"))
    assert section_to(parser, "s", Example) == Example(port=80, enabled=True, hosts=("a", "b", "c"))


def test_dashes_and_case_in_keys_are_accepted(tmp_path: Path) -> None:
    parser = read_ini(ini(tmp_path, "[s]\nPort = 1\n"))
    assert section_to(parser, "s", Example).port == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("port = eighty", r"\[s\] port: 'eighty' is not an integer"),
        ("delay = soon", r"\[s\] delay: 'soon' is not a number"),
        ("enabled = maybe", r"\[s\] enabled: 'maybe' is not a boolean"),
        ("port = -1", r"\[s\] port: -1 must not be negative"),
    ],
)
def test_a_bad_value_names_section_key_and_problem(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        section_to(read_ini(ini(tmp_path, f"[s]\n{line}\n")), "s", Example)


def test_unknown_keys_are_warned_about(tmp_path: Path) -> None:
    warnings: list[str] = []
    section_to(read_ini(ini(tmp_path, "[s]\nprot = 1\n")), "s", Example, warn=warnings.append)
    assert warnings == ["[s] prot: unknown option, ignored"]


def test_missing_or_broken_files_are_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the config file"):
        read_ini(tmp_path / "nope.ini")
    with pytest.raises(SettingsError, match="not a valid ini file"):
        read_ini(ini(tmp_path, "port = 1\n"))
