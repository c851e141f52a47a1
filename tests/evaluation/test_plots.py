"""Run plots from TensorBoard event files written with SummaryWriter (the tags training logs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from searchr1.evaluation import plot_run, read_scalars

pytest.importorskip("matplotlib")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
TOOL = Path(__file__).resolve().parents[2] / "tools" / "plot_run.py"

TRAIN_TAGS = ("train/reward", "train/em", "rollout/searches_mean", "train/response_length", "train/policy/kl")


def _log(folder: Path, steps: range, offset: float = 0.0, val: bool = True) -> None:
    writer = SummaryWriter(str(folder))
    for step in steps:
        for i, tag in enumerate(TRAIN_TAGS):
            writer.add_scalar(tag, offset + i + step / 10, step)
        if val and step % 2 == 0:
            writer.add_scalar("val/em", 0.1 * step, step)
            writer.add_scalar("val/nq/em", 0.2 * step, step)
            writer.add_scalar("val/nq/f1", 0.3 * step, step)
    writer.close()


def test_read_scalars_merges_a_resumed_run(tmp_path) -> None:
    _log(tmp_path / "tensorboard" / "version_0", range(0, 4))
    _log(tmp_path / "tensorboard" / "version_1", range(2, 6), offset=100.0, val=False)  # resumed at step 2
    scalars = read_scalars(tmp_path)
    # steps 0-1 from the first log; 2-5 from the resumed (later-written) one
    steps, values = zip(*scalars["train/reward"])
    assert steps == (0, 1, 2, 3, 4, 5)
    assert values == pytest.approx([0.0, 0.1, 100.2, 100.3, 100.4, 100.5])
    steps, values = zip(*scalars["val/nq/em"])
    assert steps == (0, 2) and values == pytest.approx([0.0, 0.4])
    assert set(TRAIN_TAGS) <= set(scalars)


def test_plot_run_writes_the_four_curves(tmp_path) -> None:
    _log(tmp_path / "tb", range(6))
    written = plot_run(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["kl.png", "response_length.png", "reward_em.png", "searches.png"]
    for path in written:
        assert path.parent == tmp_path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_logged_panels_are_drawn_and_the_tool_runs(tmp_path) -> None:
    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(3):
        writer.add_scalar("rollout/searches_mean", step, step)
    writer.close()
    out = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path), "--out", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(tmp_path / "plots" / "searches.png")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["searches.png"]


def test_missing_logs_are_explained(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_run(tmp_path / "nope")


def test_the_tool_never_merges_unrelated_runs_of_one_root(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(TOOL.parent))
    from plot_run import main as plot_main

    _log(tmp_path / "tensorboard" / "version_0", range(0, 4))
    _log(tmp_path / "tensorboard" / "version_1", range(2, 6), offset=100.0)  # a resume: continues at step 2
    plot_main([str(tmp_path)])
    assert "several runs" not in capsys.readouterr().out  # one run: both folders plotted together
    _log(tmp_path / "tensorboard" / "version_2", range(0, 3), offset=200.0)  # a new run: starts at step 0 again
    written = plot_main([str(tmp_path)])
    out = capsys.readouterr().out
    newest = tmp_path / "tensorboard" / "version_2"
    assert f"plotting the newest, {newest}" in out and "version_0" in out and "version_1" in out
    assert {p.name for p in written} >= {"reward_em.png"}
