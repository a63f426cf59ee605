"""astara-sim as a user runs it: the config file, its errors, and the documented keys."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from astara_actors.sim.settings import SimSettings

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.services  # astara-sim in a process of its own, as a user runs it


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "astara_actors.sim.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_every_setting_is_documented_in_etc_sim_ini_with_its_default() -> None:
    text = (ROOT / "etc" / "sim.ini").read_text()
    documented = dict(re.findall(r"^(\w+) = ?(.*)$", text, re.M))
    defaults = {f.name: f.default for f in dataclasses.fields(SimSettings)}
    assert set(documented) == set(defaults)
    for key, default in defaults.items():
        assert documented[key] == str(default if default != "" else ""), key


def test_a_missing_config_file_is_one_clear_line() -> None:
    result = run("--config-file", "/nonexistent/sim.ini")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "astara-sim: /nonexistent/sim.ini: cannot read the config file: No such file or directory"
    )


def test_a_bad_value_names_section_key_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "sim.ini"
    bad.write_text("[sim]\nmanagement_cidr = 10.0.0.0/8\n")
    result = run("--config-file", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "astara-sim: [sim] management_cidr: must be on loopback (e.g. 127.100.0.0/16)"
    )


def test_a_port_in_use_is_reported_not_a_traceback() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
