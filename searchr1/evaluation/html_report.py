"""``searchr1 report RUN_DIR``: one self-contained HTML page of a training run (``<RUN_DIR>/report.html``).

The page holds the run's curves (reward/EM, searches, the ``search/*`` search-quality metrics, entropy, KL; inline
SVG drawn from the TensorBoard logs, no plotting library) and the trajectories sampled each step
(``<RUN_DIR>/trajectories.jsonl``, written by :class:`searchr1.training.run_log.RunRecorder`): the policy's tokens
and the retrieved/inserted tokens in different colours (the loss mask made visible), the queries, retrieved
titles, answer, score and outcome class, filterable by outcome and step with a few lines of plain JavaScript (also
from the address: ``report.html#outcome=misread``). No network access: everything is in the one file.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from searchr1.errors import UserError
from searchr1.rewards.search_quality import OUTCOMES

REPORT_FILE = "report.html"
TRAJECTORIES_FILE = "trajectories.jsonl"

CURVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Reward and exact match", ("train/reward", "train/em", "val/em")),
    ("Searches per trajectory", ("rollout/searches_mean", "search/searches_correct", "search/searches_wrong")),
    (
        "Outcome shares (sum to 1 with EM)",
        ("train/em", "search/failure_never_searched", "search/failure_not_retrieved", "search/failure_misread"),
    ),
    ("Retrieval", ("search/answer_in_retrieved", "search/gold_recall", "search/redundant_searches")),
    ("Policy text", ("search/repetition",)),
    ("Lengths (words / tokens)", ("search/think_words", "search/query_words", "search/tokens_per_turn")),
    ("Policy entropy", ("train/policy/entropy",)),
    ("KL to the reference", ("train/policy/kl",)),
)
"""The charts: title and the scalar tags drawn (a chart with none of its tags logged is left out)."""

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}
table.summary td,table.summary th{padding:2px 10px;text-align:right}table.summary td:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd;padding:4px}
.chart .title{font-size:.85em;font-weight:600}.legend{font-size:.75em}
.traj{border:1px solid #ccc;border-left:6px solid #999;margin:10px 0;padding:6px 10px}
.traj[data-outcome=correct]{border-left-color:#2ca02c}.traj[data-outcome=misread]{border-left-color:#ff7f0e}
.traj[data-outcome=not_retrieved]{border-left-color:#d62728}.traj[data-outcome=never_searched]{border-left-color:#7f7f7f}
.meta{font-size:.85em;color:#444}.tokens{white-space:pre-wrap;font-family:monospace;font-size:.8em;line-height:1.45}
.policy{background:#dbeafe}.observation{background:#f3f4f6;color:#555}.invalid{background:#fde2e2;color:#7a1f1f}
.key span{padding:0 6px;margin-right:6px;font-family:monospace;font-size:.8em}
"""

_SCRIPT = """
function applyFilter(){
  var o=document.getElementById('outcome').value, s=document.getElementById('step').value, shown=0;
  document.querySelectorAll('.traj').forEach(function(d){
    var ok=(o==='all'||d.dataset.outcome===o)&&(s==='all'||d.dataset.step===s);
    d.style.display=ok?'':'none'; if(ok){shown++;}
  });
  var c=document.getElementById('shown'); c.textContent=shown; c.setAttribute('data-shown',shown);
}
function fromHash(){
  var h=new URLSearchParams(location.hash.slice(1));
  if(h.get('outcome')){document.getElementById('outcome').value=h.get('outcome');}
  if(h.get('step')){document.getElementById('step').value=h.get('step');}
  applyFilter();
}
window.addEventListener('hashchange',fromHash);
document.addEventListener('DOMContentLoaded',function(){
  document.getElementById('outcome').addEventListener('change',applyFilter);
  document.getElementById('step').addEventListener('change',applyFilter);
  fromHash();
});
"""


def svg_chart(title: str, series: dict[str, list[tuple[int, float]]], width: int = 360, height: int = 200) -> str:
    """An inline SVG line chart of ``{label: [(step, value), ...]}`` (NaN points skipped), with axes and legend."""
    points = [(s, v) for pts in series.values() for s, v in pts if math.isfinite(v)]
    if not points:
        return ""
    pad_l, pad_b, pad_t = 44, 22, 6
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) if max(ys) > min(0.0, min(ys)) else min(0.0, min(ys)) + 1

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - 8)

    def sy(y: float) -> float:
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_b - pad_t)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 8}" y2="{height - pad_b}" stroke="#888"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#888"/>',
    ]
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{pad_l - 4}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    for x in (x0, x1):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{x:g}</text>')
    legend = []
    for i, (label, pts) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        good = [(s, v) for s, v in pts if math.isfinite(v)]
        if not good:
            continue
        path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in good)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        if len(good) < 40:
            parts += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="2" fill="{color}"/>' for s, v in good]
        legend.append(f'<span style="color:{color}">&#9632; {html.escape(label)}</span>')
    parts.append("</svg>")
    return (
        f'<div class="chart"><div class="title">{html.escape(title)}</div>{"".join(parts)}'
        f'<div class="legend">{" ".join(legend)}</div></div>'
    )


def curves_html(scalars: dict[str, list[tuple[int, float]]]) -> str:
    """Every chart of :data:`CURVES` with at least one logged tag."""
    charts = []
    for title, tags in CURVES:
        series = {t: scalars[t] for t in tags if t in scalars}
        if series:
            charts.append(svg_chart(title, series))
    return '<div class="charts">' + "".join(c for c in charts if c) + "</div>"


def trajectory_html(row: dict[str, Any]) -> str:
    """One trajectory: header (step, outcome, score), question/gold/answer, searches with titles, masked tokens."""
    esc = html.escape
    outcome = row.get("outcome", "")
    searches = "".join(
        f"<li><code>{esc(q)}</code> &rarr; {esc(', '.join(t) or '(nothing)')}</li>"
        for q, t in zip(row.get("queries", []), row.get("titles", []))
    )
    segments = "".join(
        f'<span class="{esc(kind)}" data-mask="{int(kind == "policy")}" title="{esc(kind)}, loss mask '
        f'{int(kind == "policy")}">{esc(text)}</span>'
        for kind, text in row.get("segments", [])
    )
    return (
        f'<div class="traj" data-outcome="{esc(outcome)}" data-step="{row.get("step", "")}">'
        f'<div class="meta">step {row.get("step")} &middot; {esc(row.get("trajectory", ""))} &middot; '
        f"<b>{esc(outcome.replace('_', ' '))}</b> &middot; score {row.get('score', 0.0):.3g}</div>"
        f"<div><b>Q:</b> {esc(row.get('question', ''))} <b>gold:</b> {esc(' | '.join(row.get('golden_answers', [])))}"
        f" <b>answer:</b> {esc(str(row.get('answer')))}</div>"
        f'<ul class="meta">{searches}</ul>'
        f'<div class="tokens">{segments}</div></div>'
    )


def _summary_html(summary: dict[str, Any]) -> str:
    keys = [("em", "held-out EM"), ("searches", "searches per question"), ("answer_in_retrieved", "answer retrieved")]
    keys += [(f"failure_{o}", f"wrong: {o.replace('_', ' ')}") for o in OUTCOMES[1:]]
    rows = []
    for key, label in keys:
        cells = [summary.get(f"{key}_{when}") for when in ("before", "after")]
        rows.append(f"<tr><td>{label}</td>" + "".join(f"<td>{'–' if v is None else f'{v:.3f}'}</td>" for v in cells))
    return '<table class="summary"><tr><th></th><th>before RL</th><th>after RL</th></tr>' + "".join(rows) + "</table>"


def render_report(
    title: str,
    scalars: dict[str, list[tuple[int, float]]],
    trajectories: Sequence[dict[str, Any]],
    summary: dict[str, Any] | None = None,
) -> str:
    """The whole page as a string (see the module docstring)."""
    steps = sorted({int(r.get("step", 0)) for r in trajectories})
    outcome_opts = "".join(f'<option value="{o}">{o.replace("_", " ")}</option>' for o in OUTCOMES)
    step_opts = "".join(f'<option value="{s}">{s}</option>' for s in steps)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _summary_html(summary) if summary else "",
        "<h2>Curves</h2>",
        curves_html(scalars) if scalars else "<p>No TensorBoard scalars found.</p>",
        "<h2>Trajectories</h2>",
        '<p class="key"><span class="policy">policy tokens (loss mask 1)</span>'
        '<span class="observation">retrieved / inserted tokens (loss mask 0)</span>'
        '<span class="invalid">invalid-action message (loss mask 0)</span></p>',
        f'<p>outcome <select id="outcome"><option value="all">all</option>{outcome_opts}</select> '
        f'step <select id="step"><option value="all">all</option>{step_opts}</select> '
        f'&middot; shown: <span id="shown" data-shown="{len(trajectories)}">{len(trajectories)}</span> of '
        f'<span id="total">{len(trajectories)}</span></p>',
        *(trajectory_html(r) for r in trajectories),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def read_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``trajectories.jsonl`` (empty when the run wrote none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a training run folder (its ``default_root_dir``); returns the path.

    Reads the TensorBoard scalars under ``run_dir`` (when there are any), ``trajectories.jsonl`` and
    ``summary.json``.
    """
    from searchr1.evaluation.plots import find_event_files, read_scalars

    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"run folder {root} does not exist; give the run's default_root_dir (e.g. runs/learn_cpu)"
        )
    rows = read_trajectories(root / TRAJECTORIES_FILE)
    scalars = read_scalars(root) if find_event_files(root) else {}
    if not rows and not scalars:
        raise FileNotFoundError(
            f"{root} holds neither {TRAJECTORIES_FILE} nor TensorBoard logs: is it a run's default_root_dir? "
            "(runs write trajectories.jsonl with the RunRecorder callback, on in the embedded default)"
        )
    summary_path = root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    path = Path(out) if out is not None else root / REPORT_FILE
    path.write_text(render_report(f"searchr1 run {root}", scalars, rows, summary), encoding="utf-8")
    return path


def report_main(argv: Sequence[str] | None = None) -> Path:
    """``searchr1 report RUN_DIR [--out FILE]``: write the run's HTML report and print its path."""
    import argparse

    p = argparse.ArgumentParser(prog="searchr1 report", description="Write a training run's report.html.")
    p.add_argument("run_dir", help="the run's default_root_dir (e.g. runs/learn_cpu)")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")
    args = p.parse_args(argv)
    try:
        path = write_run_report(args.run_dir, args.out)
    except FileNotFoundError as err:  # a wrong folder: one line saying what to give, no traceback
        raise UserError(str(err)) from None
    print(f"report: {path}")
    return path
