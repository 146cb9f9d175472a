"""What a new user met, each as a test: the command line says what it can do, errors go to standard error, and what
it tells the user to run can be run as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segalign", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_bare_segalign_lists_every_command_with_its_line() -> None:
    result = run()
    assert result.returncode == 2 and result.stdout == ""
    for command in ("export", "batch", "jobs", "info", "demo"):
        line = next((line for line in result.stderr.splitlines() if line.strip().startswith(command + " ")), None)
        assert line is not None and len(line.split()) > 2, (command, result.stderr)


def test_info_without_a_series_says_why_on_standard_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no DICOM here\n")
    text = run_cli("info", tmp_path)
    assert text.code == 1
    assert "no DICOM image series" in text.stderr and "no DICOM image series" not in text.stdout
    as_json = run_cli("info", tmp_path, "--json")
    assert as_json.code == 1 and json.loads(as_json.stdout)["series"] == []
    assert as_json.stderr.startswith("segalign: error: no DICOM image series")


def test_the_demos_same_as_line_runs_as_written(tmp_path: Path) -> None:
    """With the virtual environment not activated (segalign not on the PATH), the line names this Python."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = run("demo", "--output", tmp_path / "demo", "--slices", "6", env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "same as:" in line)
    command = line.split("same as:", 1)[1].strip()
    assert command.startswith(f"{sys.executable} -m segalign export ")
    again = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
