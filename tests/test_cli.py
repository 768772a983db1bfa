"""``python -m fastsockserver`` and each command's ``--help``: exit 0, text a user can act on."""
import os
import subprocess
import sys

import pytest


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSOCKSERVER_")}
    return subprocess.run([sys.executable, "-m", "fastsockserver", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_every_command(flag):
    result = _cli(flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m fastsockserver {bench | info | run}")
    commands = [line.split()[0] for line in result.stdout.splitlines()
                if line.startswith("  ") and not line.startswith("   ")]
    assert commands == ["run", "bench", "info"]


def test_no_command_or_an_unknown_one_is_a_usage_error():
    for args in ((), ("serve",)):
        result = _cli(*args)
        assert result.returncode == 2
        assert result.stdout == ""
        # (after the warning a pure fallback install gives on import, if that is the case)
        assert "\nusage: python -m fastsockserver" in "\n" + result.stderr


@pytest.mark.parametrize("command, words", [
    ("run", ["--drain-timeout", "--workers", "--reuse-port", "--fd", "-m module"]),
    ("info", ["version", "compiled or pure", "load generator"]),
    ("bench", ["--workloads", "--impls", "--json"]),
])
def test_each_command_has_help(command, words):
    result = _cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m fastsockserver " + command)
    for word in words:
        assert word in result.stdout
