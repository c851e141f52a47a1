"""Every user error of issue 31, through the ``searchr1`` console script: exit status 2 (1 for the setup checks of
``cli_main``), no traceback, at most 5 lines from ``searchr1: error:`` to the end of stderr, naming the file:line
or option; ``SEARCHR1_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from searchr1.errors import MAX_LINES, format_error, user_message
from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path

ROOT = Path(__file__).resolve().parents[1]
SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
BUILD = ["index", "build", "--retriever", "bm25", "--out", "idx", "--corpus"]
GOOD = '{"id": "1", "contents": "\\"A\\"\\nx"}\n{"id": "2", "contents": "\\"B\\"\\ny"}\n'


def run(args: list[str], cwd: Path, debug: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SEARCHR1_DEBUG", None)
    if debug:
        env["SEARCHR1_DEBUG"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_block(proc: subprocess.CompletedProcess) -> str:
    """The stderr lines from ``searchr1: error:`` on, checked: status 2, no traceback, at most MAX_LINES lines."""
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr[-3000:])  # 1: a setup check of cli_main
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    first = max(i for i, line in enumerate(lines) if line.startswith("searchr1: error:"))
    block = lines[first:]
    assert len(block) <= MAX_LINES, block
    return "\n".join(block)


def _write_files(folder: Path) -> Path:
    (folder / "good.jsonl").write_text(GOOD)
    (folder / "bad.jsonl").write_text(GOOD + '{"id": "3", "contents": "broken\n')
    (folder / "dup.jsonl").write_text(GOOD + '{"id": "1", "contents": "\\"C\\"\\nz"}\n')
    return folder


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return _write_files(tmp_path)


TOOL_CASES = {
    "index-bad-line": (
        ["index", "build", "--corpus", "bad.jsonl", "--retriever", "bm25", "--out", "idx"],
        "bad.jsonl:3",
    ),
    "index-duplicate-id": (
        [*BUILD, "dup.jsonl"],
        "dup.jsonl:3: passage id '1' is already used at line 1",
    ),
    "index-missing-corpus": (
        [*BUILD, "nope.jsonl"],
        "--corpus nope.jsonl: no such file",
    ),
    "serve-port": (["serve", "--index", "idx", "--port", "99999"], "--port 99999 is not a TCP port"),
    "serve-topk": (["serve", "--index", "idx", "--topk", "500"], "--topk 500 is above --max-topk 100"),
    "serve-query-chars": (["serve", "--index", "idx", "--max-query-chars", "-5"], "--max-query-chars -5 must be"),
    "serve-max-queries": (["serve", "--index", "idx", "--max-queries", "0"], "--max-queries 0 must be"),
    "serve-missing-index": (["serve", "--index", "nowhere"], "nowhere"),
    "infer-missing-model": (
        ["infer", "--model", "runs/x/hf/last", "--corpus", "good.jsonl", "--device", "cpu", "Who?"],
        "model folder not found: 'runs/x/hf/last'",
    ),
    "eval-bad-choice": (["eval", "--model", "m", "--method", "nope"], "argument --method: invalid choice: 'nope'"),
    "index-bad-retriever": ([*BUILD, "good.jsonl", "--retriever", "bm26"], "searchr1 index build --help"),
    "eval-no-datasets": (
        ["eval", "--model", "tiny:micro", "--corpus", "good.jsonl"],
        "--datasets is 'all' (the default)",
    ),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(TOOL_CASES))
def test_tool_errors_are_short(files, case):
    args, named = TOOL_CASES[case]
    block = error_block(run([SEARCHR1, *args], files))
    assert named in block, block
    assert not (files / "idx").exists(), "a failed build must not leave its --out folder behind"


@pytest.mark.timeout(300)
def test_bad_json_names_line_and_column(files):
    block = error_block(
        run([SEARCHR1, "index", "build", "--corpus", "bad.jsonl", "--retriever", "bm25", "--out", "i"], files)
    )
    assert "bad.jsonl:3: not valid JSON (Invalid control character at column" in block, block


@pytest.mark.timeout(300)
def test_failed_build_can_be_rerun(files):
    """The half-built folder of a failed build used to make the rerun with a fixed corpus refuse."""
    error_block(run([SEARCHR1, *BUILD, "bad.jsonl"], files))
    proc = run([SEARCHR1, *BUILD, "good.jsonl"], files)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "built bm25 index of 2 passages" in proc.stdout
    assert "2 passages" in proc.stderr.split("BM25 merge")[0].rsplit("BM25 index", 1)[-1]  # the bar's final count


@pytest.mark.timeout(300)
def test_plot_run_on_a_missing_folder(tmp_path):
    proc = run([sys.executable, str(ROOT / "tools" / "plot_run.py"), "nowhere"], tmp_path)
    assert "run folder nowhere does not exist" in error_block(proc)


@pytest.mark.timeout(300)
def test_debug_shows_the_traceback(files):
    proc = run([SEARCHR1, "serve", "--index", "idx", "--port", "99999"], files, debug=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr


FIT = ["fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "--trainer.logger=false"]
FIT_CASES = {
    "unknown-option": (["--model.bogus=1"], "unrecognized arguments: --model.bogus=1"),
    "negative-lr": (["--model.policy_lr=-1"], "model.policy_lr=-1 must be a positive learning rate"),
    "negative-batch": (["--data.batch_size=-4"], "data.batch_size=-4 must be a positive count"),
    "bad-corpus-line": (["--model.retriever.init_args.corpus=bad.jsonl"], "bad.jsonl:3: not valid JSON"),
    "missing-corpus": (["--model.retriever.init_args.corpus=nope.jsonl"], "nope.jsonl"),
    "missing-data": (["--data.train_files=[nope.jsonl]"], "QA data file not found: nope.jsonl"),
    "unknown-estimator": (["--model.algorithm.estimator=nope"], "valid names: gae, grpo"),
    "trainer-value": (["--trainer.max_epochs=-5"], "max_epochs"),
    "gpu-config-on-cpu": (["--trainer.accelerator=gpu"], "no CUDA GPU is visible"),
}


@pytest.fixture(scope="module")
def fit_errors(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every ``FIT_CASES`` command, two at a time (each is mostly one single-threaded Python start-up; CI has 2 cores),
    each with its own run folder."""
    from concurrent.futures import ThreadPoolExecutor

    files = _write_files(tmp_path_factory.mktemp("fit_errors"))

    def one(case: str) -> subprocess.CompletedProcess:
        return run([SEARCHR1, *FIT, f"--trainer.default_root_dir={files / case}", *FIT_CASES[case][0]], files)

    gpu = pytest.importorskip("torch").cuda.is_available()  # then the GPU case is skipped (it would train)
    cases = [case for case in FIT_CASES if not (gpu and case == "gpu-config-on-cpu")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cases, pool.map(one, cases)))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first case runs the fixture: all nine commands
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_errors_are_short(fit_errors, case):
    args, named = FIT_CASES[case]
    if case == "gpu-config-on-cpu":
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is visible")
    proc = fit_errors[case]
    block = error_block(proc)
    assert named in block, block
    assert "load_causal_lm" not in proc.stderr


def test_user_message_digs_out_the_union_error():
    wrapped = ValueError(
        "Does not validate against any of the Union subtypes\nSubtypes: [<class 'R'>, <class 'NoneType'>]\n"
        "Errors:\n  - c.jsonl:3: not valid JSON (x at column 4)\n  - Expected a <class 'NoneType'>\n"
        "Given value type: <class 'N'>"
    )
    assert user_message(wrapped) == "c.jsonl:3: not valid JSON (x at column 4)"
    assert user_message(ValueError("a bug")) is None  # other ValueErrors keep their traceback
    assert user_message(KeyError("k")) is None


def test_format_error_is_at_most_five_lines():
    text = format_error("\n".join(f"line {i}" for i in range(20)), hint="(hint)")
    lines = text.splitlines()
    assert len(lines) == MAX_LINES and lines[0] == "searchr1: error: line 0" and lines[-1] == "(hint)"
    assert "more lines" in lines[-2]
