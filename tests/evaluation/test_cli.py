"""End to end: ``searchr1-eval`` with the tiny random model on real HotpotQA questions, and (slow) a real tiny
training run whose checkpoint is evaluated and whose TensorBoard logs are plotted."""

from __future__ import annotations

import csv
import json

import pytest

from searchr1.evaluation.cli import default_out_dir, run_eval
from searchr1.rewards import em_reward, f1_reward

from .conftest import HOTPOTQA, HOTPOTQA_CORPUS

ROLLOUT = ["--max-turns", "1", "--max-response-tokens", "12", "--max-obs-tokens", "48", "--topk", "2"]
ROLLOUT += ["--max-prompt-tokens", "900", "--max-total-tokens", "1024"]


def _check_run_folder(folder, methods, n) -> None:
    comparison = (folder / "comparison.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in comparison[4:]] == [f"| {m}" for m in methods]
    for method in methods:
        out = folder / method
        lines = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
        assert len(lines) == n
        for line in lines:  # the dump's scores are the rewards of its own text
            assert line["em"] == em_reward(line["response_text"], line["golden_answers"])
            assert line["f1"] == f1_reward(line["response_text"], line["golden_answers"])
            assert {"question", "queries", "doc_ids", "answer", "num_turns"} <= set(line)
        rows = list(csv.DictReader((out / "scores.csv").open()))
        assert [r["dataset"] for r in rows] == ["hotpotqa", "average"]
        scores = json.loads((out / "scores.json").read_text())
        assert scores["datasets"][0]["em"] == pytest.approx(sum(x["em"] for x in lines) / n)
        assert scores["datasets"][0]["turns"] == pytest.approx(sum(x["num_turns"] for x in lines) / n)
        assert scores["settings"]["rollout"]["do_sample"] is False  # greedy by default
        assert "| hotpotqa | 3 |" in (out / "scores.md").read_text()
        log = out / "search_log.parquet"
        if method in ("search_r1", "rag"):  # every executed search is a row of the search log
            from searchr1.retrieval import read_search_log

            rows = read_search_log(log)
            assert {r.phase for r in rows} <= {"eval"}  # the random tiny model may never search
            if method == "rag":  # the prompt's retrieval: one row per question, turn 0
                assert [r.turn for r in rows] == [0] * n and [r.query for r in rows] == [x["question"] for x in lines]
            else:
                assert len(rows) == sum(x["num_searches"] for x in lines)
        else:
            assert not log.exists()


def test_searchr1_eval_tiny_model_all_methods(tmp_path, capsys) -> None:
    reports = run_eval(
        ["--model", "tiny:micro", "--device", "cpu", "--datasets", f"hotpotqa={HOTPOTQA}", "--max-samples", "3"]
        + ["--corpus", str(HOTPOTQA_CORPUS), "--method", "search_r1", "direct", "rag", "--out", str(tmp_path)]
        + ["--no-progress", *ROLLOUT]
    )
    assert [r.method for r in reports] == ["search_r1", "direct", "rag"]
    _check_run_folder(tmp_path, ["search_r1", "direct", "rag"], 3)
    assert reports[1].average.searches == 0.0 and reports[2].average.searches == 1.0
    assert reports[1].settings["rollout"]["max_turns"] == 0
    printed = capsys.readouterr().out
    assert "### search_r1 — tiny:micro" in printed and "| method | hotpotqa | avg |" in printed


def test_sampling_is_seeded(tmp_path) -> None:
    args = ["--model", "tiny:micro", "--device", "cpu", "--datasets", f"hotpotqa={HOTPOTQA}", "--max-samples", "2"]
    args += ["--method", "direct", "--no-progress", "--do-sample", "--temperature", "1.5", "--seed", "7", *ROLLOUT]
    texts = []
    for run in ("a", "b"):
        run_eval([*args, "--out", str(tmp_path / run)])
        texts.append((tmp_path / run / "direct" / "trajectories.jsonl").read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[0].splitlines()[0])["response_text"]


def test_default_out_dir() -> None:
    assert str(default_out_dir("runs/x/tensorboard/version_0/checkpoints/last.ckpt")) == (
        "runs/x/tensorboard/version_0/eval/last"
    )
    assert str(default_out_dir("Qwen/Qwen2.5-3B")) == "runs/eval/Qwen_Qwen2.5-3B"


def test_missing_retriever_is_explained(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs a retriever"):
        run_eval(["--model", "tiny:micro", "--device", "cpu", "--datasets", f"h={HOTPOTQA}", "--out", str(tmp_path)])


@pytest.mark.slow
def test_real_training_run_checkpoint_eval_and_plots(tmp_path) -> None:
    from searchr1.cli import cli_main
    from searchr1.evaluation import plot_run, read_scalars

    root = tmp_path / "run"
    from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path

    cli_main(
        ["fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), "--trainer.limit_train_batches=2"]
        + [f"--trainer.default_root_dir={root}"]
        + [f"--trainer.logger.init_args.save_dir={root}", "--trainer.limit_val_batches=1"]
        + ["--data.max_val_samples=2", "--data.batch_size=2", "--model.algorithm.n_samples=2"]
        + ["--model.algorithm.mini_batch_size=4"]
    )
    ckpt = root / "tensorboard" / "version_0" / "checkpoints" / "last.ckpt"
    reports = run_eval(
        ["--model", str(ckpt), "--device", "cpu", "--datasets", f"hotpotqa={HOTPOTQA}", "--max-samples", "3"]
        + ["--corpus", str(HOTPOTQA_CORPUS), "--no-progress", *ROLLOUT]
    )
    _check_run_folder(root / "tensorboard" / "version_0" / "eval" / "last", ["search_r1"], 3)
    assert reports[0].model == str(ckpt)

    scalars = read_scalars(root)
    for tag in ("train/reward", "train/em", "rollout/searches_mean", "train/response_length", "val/em"):
        assert len(scalars[tag]) >= 1, tag
    written = plot_run(root)
    assert {p.name for p in written} >= {"reward_em.png", "searches.png", "response_length.png"}


def test_searchr1_eval_in_the_tool_call_protocol(tmp_path) -> None:
    reports = run_eval(
        ["--model", "tiny:micro", "--device", "cpu", "--datasets", f"hotpotqa={HOTPOTQA}", "--max-samples", "2"]
        + ["--corpus", str(HOTPOTQA_CORPUS), "--method", "search_r1", "--out", str(tmp_path), "--no-progress"]
        + ["--protocol", "tool_call", *ROLLOUT]
    )
    assert reports[0].settings["rollout"]["protocol"] == "tool_call"
    lines = [json.loads(x) for x in (tmp_path / "search_r1" / "trajectories.jsonl").read_text().splitlines()]
    # the random policy never writes a valid call: each turn it did not end with EOS is answered by a tool message
    for line in lines:
        assert "<information>" not in line["response_text"]
        assert line["em"] == em_reward(line["response_text"], line["golden_answers"])
    assert any("<tool_response>\nInvalid action: " in line["response_text"] for line in lines)


def test_protocol_defaults_to_the_checkpoints() -> None:
    from searchr1.evaluation.cli import _rollout_config, eval_parser
    from searchr1.evaluation.loading import LoadedPolicy

    trained = LoadedPolicy(None, None, True, "tiny:micro", "last.ckpt", protocol="tool_call")
    base = ["--model", "m", "--corpus", "c"]
    assert _rollout_config(eval_parser().parse_args(base), trained).protocol == "tool_call"
    explicit = eval_parser().parse_args([*base, "--protocol", "search_r1"])
    assert _rollout_config(explicit, trained).protocol == "search_r1"
    assert _rollout_config(eval_parser().parse_args(base), LoadedPolicy(None, None, True, "m", "m")).protocol == (
        "search_r1"
    )
