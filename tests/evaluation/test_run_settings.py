"""The run's rollout and retriever settings travel with the model (checkpoint entry, ``searchr1_run.json`` in an
export) and are the defaults of ``searchr1 eval`` / ``searchr1 infer``; flags override them."""

from __future__ import annotations

import torch

from searchr1.evaluation.cli import _bm25_settings, _report_run_settings, _rollout_config, infer_parser
from searchr1.evaluation.loading import LoadedPolicy, build_retriever, load_policy
from searchr1.retrieval import BM25Retriever
from searchr1.rollout import RolloutConfig
from searchr1.rollout.run_settings import RUN_SETTINGS_FILE, RunSettings, describe_retriever, run_settings

from .conftest import HOTPOTQA_CORPUS

TRAINED = RolloutConfig(
    max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192, topk=1
)


def _run(stemmer: str = "none") -> RunSettings:
    return run_settings(TRAINED, BM25Retriever(corpus=str(HOTPOTQA_CORPUS), stemmer=stemmer), use_chat_template=False)


def test_bm25_settings_round_trip_through_file_and_checkpoint(tmp_path) -> None:
    run = _run()
    assert run.retriever == {
        "kind": "bm25",
        "corpus": str(HOTPOTQA_CORPUS.resolve()),
        "k1": 0.9,
        "b": 0.4,
        "stopwords": "en",
        "stemmer": "none",
    }
    path = run.write(tmp_path)
    assert path.name == RUN_SETTINGS_FILE
    assert RunSettings.read(tmp_path) == run and RunSettings.read(tmp_path / "elsewhere") is None
    assert RunSettings.from_checkpoint({"searchr1": {"run": run.to_dict()}}) == run
    # checkpoints from before the entry existed: the rollout hyperparameters, no retriever
    old = RunSettings.from_checkpoint({"hyper_parameters": {"rollout": run.rollout, "use_chat_template": False}})
    assert old.rollout_fields() == run.rollout_fields() and old.retriever is None and old.use_chat_template is False
    assert RunSettings.from_checkpoint({"hyper_parameters": {}}) is None
    assert describe_retriever(None) is None


def test_eval_defaults_are_the_runs_and_flags_override() -> None:
    policy = LoadedPolicy(None, None, False, "m", "m", run=_run())
    base = ["q", "--model", "m", "--corpus", str(HOTPOTQA_CORPUS)]
    config = _rollout_config(infer_parser().parse_args(base), policy)
    assert (config.topk, config.max_turns, config.max_response_tokens, config.max_obs_tokens) == (1, 2, 32, 64)
    assert (config.max_total_tokens, config.max_prompt_tokens, config.do_sample) == (448, 192, False)
    flags = infer_parser().parse_args([*base, "--topk", "3", "--max-turns", "4", "--stemmer", "porter"])
    config = _rollout_config(flags, policy)
    assert (config.topk, config.max_turns, config.max_response_tokens) == (3, 4, 32)
    assert _bm25_settings(infer_parser().parse_args(base), policy)["stemmer"] == "none"
    assert _bm25_settings(flags, policy)["stemmer"] == "porter"
    # a model without run settings: the RolloutConfig defaults and Porter stemming, as before
    plain = LoadedPolicy(None, None, True, "m", "m")
    assert _rollout_config(infer_parser().parse_args(base), plain).topk == RolloutConfig().topk
    assert _bm25_settings(infer_parser().parse_args(base), plain) == {}
    assert build_retriever(str(HOTPOTQA_CORPUS), bm25={"stemmer": "none"}).stemmer == "none"


def test_exported_folder_and_checkpoint_carry_the_settings(tiny_dir, tmp_path, capsys) -> None:
    from searchr1.models import save_hf_folder

    run = _run()
    base = load_policy(tiny_dir, device="cpu")
    assert base.run is None
    folder = save_hf_folder(base.model, base.tokenizer, tmp_path / "hf", extra_files={RUN_SETTINGS_FILE: run.to_json()})
    exported = load_policy(str(folder), device="cpu")
    assert exported.run == run and exported.use_chat_template is False
    ckpt = tmp_path / "last.ckpt"
    state = {f"policy.{k}": v for k, v in base.model.state_dict().items()}
    hparams = {"model_name_or_path": tiny_dir, "use_chat_template": True}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "searchr1": {"run": run.to_dict()}}, ckpt)
    assert load_policy(str(ckpt), device="cpu").run == run

    args = infer_parser().parse_args(["Who?", "--model", str(folder), "--corpus", str(HOTPOTQA_CORPUS), "--topk", "2"])
    _report_run_settings(args, exported, _rollout_config(args, exported), _bm25_settings(args, exported))
    printed = capsys.readouterr().out
    assert f"settings from the run ({folder / RUN_SETTINGS_FILE})" in printed
    assert "max_turns=2" in printed and "bm25 stemmer=none" in printed and "topk" not in printed  # --topk given


def test_the_search_log_wrapper_is_described_as_the_engine_it_wraps() -> None:
    # RunRecorder (on in the embedded default) wraps the module's retriever: the run's settings must still name BM25
    # and its stemmer (else eval re-indexes with Porter stemming), and the wrapper must keep the engine's methods
    from searchr1.retrieval import HTTPRetriever
    from searchr1.retrieval.search_log import SearchRecorder

    bm25 = BM25Retriever(corpus=str(HOTPOTQA_CORPUS), stemmer="none")
    wrapped = SearchRecorder(SearchRecorder(bm25))
    assert describe_retriever(wrapped) == describe_retriever(bm25)
    assert describe_retriever(wrapped)["stemmer"] == "none"
    http = SearchRecorder(HTTPRetriever("http://127.0.0.1:9"))
    assert describe_retriever(http) == {"kind": "http", "url": ["http://127.0.0.1:9"]}
    assert callable(http.probe) and http.probe.__self__ is http.retriever  # the outage probe reaches the client
