"""``searchr1`` is the one front door: its help lists every command, each command's ``--help`` works, unknown
commands (``predict`` included) are refused with the valid names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from searchr1.__main__ import TOOL_COMMANDS, TRAIN_COMMANDS, main, usage


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert out.strip() == usage().strip()
    for name in [*TRAIN_COMMANDS, *TOOL_COMMANDS]:
        assert f"\n  {name} " in out, name
    assert "predict" not in out


@pytest.mark.parametrize("command", [*TRAIN_COMMANDS, *TOOL_COMMANDS])
def test_every_command_has_help(command):
    proc = subprocess.run(
        [sys.executable, "-m", "searchr1", command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:200]
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("command", ["predict", "trian"])
def test_unknown_commands_are_refused_with_the_valid_names(command):
    with pytest.raises(SystemExit) as info:
        main([command])
    assert f"unknown command {command!r}" in str(info.value.code) and "fit, validate, test, sft" in str(info.value.code)
