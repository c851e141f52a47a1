"""``searchr1 report``: the page's curves, trajectories with their loss-mask spans, and (slow) a real browser."""

from __future__ import annotations

import json
import re

import pytest

from searchr1.__main__ import main
from searchr1.evaluation.html_report import render_report, svg_chart, write_run_report

from .browser import dump_dom, screenshot


def _row(step: int, outcome: str, i: int) -> dict:
    return {
        "step": step,
        "trajectory": f"{step}/{i}",
        "question": f"Where was <Person {i}> born?",
        "golden_answers": ["Leges"],
        "answer": "Leges" if outcome == "correct" else "Timos",
        "score": 1.0 if outcome == "correct" else 0.0,
        "outcome": outcome,
        "queries": [f"Person {i}"],
        "titles": [[f"Person {i}"]],
        "segments": [
            ["policy", "<think> search </think>\n<search> Person </search>"],
            ["observation", '\n\n<information>Doc 1(Title: "Person") born in Leges.\n</information>\n\n'],
            ["invalid", "\nMy previous action is invalid.\n"],
            ["policy", "<answer> Leges </answer>"],
        ],
    }


ROWS = [_row(0, "correct", 0), _row(0, "misread", 1), _row(1, "never_searched", 2), _row(1, "correct", 3)]
SCALARS = {"train/em": [(0, 0.1), (1, 0.4), (2, float("nan"))], "search/failure_misread": [(0, 0.2), (1, 0.1)]}


def test_page_holds_charts_trajectories_and_mask_spans() -> None:
    page = render_report("run", SCALARS, ROWS, {"em_before": 0.1, "em_after": 0.5})
    assert page.count('<div class="traj"') == 4
    # each trajectory: 2 policy spans (loss mask 1), an observation and an invalid-action span (loss mask 0)
    assert page.count('<span class="policy" data-mask="1"') == 8 and page.count('data-mask="0"') == 8
    assert page.count('<span class="observation" data-mask="0"') == 4
    assert page.count('data-outcome="correct"') == 2
    assert "&lt;Person 0&gt;" in page  # text is escaped
    assert page.count("<svg") == 2  # "Reward and exact match" and "Outcome shares" (train/em is in both)
    assert "<td>0.100</td><td>0.500</td>" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained: nothing fetched


def test_svg_chart_scales_points_into_the_box() -> None:
    chart = svg_chart("t", {"a": [(0, 0.0), (10, 1.0)]}, width=144, height=128)
    # x: 44 + (s - 0) / 10 * (144 - 44 - 8) -> 44 and 136; y: 128 - 22 - v * (128 - 22 - 6) -> 106 and 6
    assert 'points="44.0,106.0 136.0,6.0"' in chart
    assert svg_chart("t", {"a": [(0, float("nan"))]}) == ""


def test_report_command_writes_the_page_and_names_a_bad_folder(tmp_path, capsys) -> None:
    (tmp_path / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    main(["report", str(tmp_path)])
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
    assert (tmp_path / "report.html").read_text().count('<div class="traj"') == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither trajectories.jsonl nor TensorBoard logs"):
        write_run_report(tmp_path / "empty")
    with pytest.raises(SystemExit) as stop:
        main(["report", str(tmp_path / "missing")])
    assert stop.value.code == 2
    assert re.match(r"searchr1: error: run folder .*missing does not exist", capsys.readouterr().err)


@pytest.mark.slow
def test_page_renders_and_filters_in_headless_chromium(tmp_path) -> None:
    (tmp_path / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    page = write_run_report(tmp_path)
    dom = dump_dom(page)
    assert len(re.findall(r'<div class="traj"', dom)) == 4
    assert 'id="shown" data-shown="4"' in dom  # the script ran and counted every trajectory
    assert len(re.findall(r'<span class="observation" data-mask="0"', dom)) == 4
    assert len(re.findall(r'<span class="policy" data-mask="1"', dom)) == 8
    filtered = dump_dom(page, "#outcome=correct")
    assert 'data-shown="2"' in filtered and filtered.count('style="display: none;"') == 2
    png = screenshot(page, tmp_path / "shot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
