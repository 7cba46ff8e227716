"""`mspn --help` tells the truth: every exit code, options in panels, -v anywhere (issue 23, item 7)."""

from __future__ import annotations

import re
import signal

import pytest

from mspn_cli import errors
from mspn_cli.cli.app import verbose_flags_first
from tests.conftest import run_mspn


def _help(*command) -> str:
    proc = run_mspn(*command, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_lists_every_exit_code():
    text = " ".join(_help().split())
    listed = {int(code) for code in re.findall(r"(?:codes: |; |, )(\d+) ", text)}
    defined = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    signals = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP}
    assert defined | signals <= listed, sorted(defined | signals - listed)
    assert {0, 1, 2, 3, 4, 5, 6, 70, 129, 130, 143} <= listed


def _panels(text: str) -> dict:
    """Heading -> the option names listed under it."""
    panels, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = panels.setdefault(line[:-1], [])
        elif current is not None and line.startswith("  -"):
            current.extend(re.findall(r"(--?[\w-]+)", line.split("  ")[1] if line.startswith("  ") else line)[:2])
    return panels


def test_keypoints_help_groups_its_options_in_panels():
    panels = _panels(_help("keypoints"))
    assert list(panels)[:5] == ["Arguments", "Inputs and outputs", "Networks", "Video", "Scale-out"], list(panels)
    assert {"--boxes", "--json", "-o", "--quiet", "--fail-fast"} <= set(panels["Inputs and outputs"])
    assert {"--weights", "--backend", "--device", "--batch-size", "--det-size"} <= set(panels["Networks"])
    assert {"--fourcc", "--tracking-config", "--every", "--det-every"} <= set(panels["Video"])
    assert {"--shard", "--engine", "--actors", "--resume", "--actor-gpus"} <= set(panels["Scale-out"])
    assert {"--labels", "--csv"} <= set(panels["Inputs and outputs"])
    assert {"--precision"} <= set(panels["Networks"])
    assert set(panels.get("Other options", [])) <= {"-h", "--help"}


@pytest.mark.parametrize("argv,expected", [
    (["keypoints", "x.jpg", "-v"], ["-v", "keypoints", "x.jpg"]),
    (["--log-file", "run.log", "detect", "a.jpg", "-vv"], ["--log-file", "run.log", "-vv", "detect", "a.jpg"]),
    (["weights", "list", "--verbose"], ["--verbose", "weights", "list"]),
    (["keypoints", "--", "-v"], ["keypoints", "--", "-v"]),  # after --, -v is an input's name
    (["--version"], ["--version"]),
])
def test_verbose_flags_move_before_the_command(argv, expected):
    assert verbose_flags_first(argv) == expected


def test_verbose_after_the_command_is_accepted():
    proc = run_mspn("weights", "list", "--json", "-v", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("[")
