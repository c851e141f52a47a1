"""SFT: gold trajectories from the real engine + BM25, JSONL round trip, masked loss, a short fit that learns."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from lightning.pytorch import Trainer

from searchr1.data.synthetic import gold_turns
from searchr1.models import load_causal_lm, load_tokenizer
from searchr1.protocols import build_prompt, normalize_question
from searchr1.retrieval import BM25Retriever
from searchr1.rollout import RolloutBatch, RolloutConfig, RolloutEngine
from searchr1.rollout.backends.teacher import TeacherBackend
from searchr1.rollout.types import load_trajectories, save_trajectories
from searchr1.training.ablations import EmptyRetriever, unmask_observations
from searchr1.training.forward import response_logprobs
from searchr1.training.sft import (
    SFTDataModule,
    SFTModule,
    answer_was_retrieved,
    build_sft_trajectories,
    sft_loss,
)

CONFIG = RolloutConfig(
    max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192, topk=1
)


@pytest.fixture(scope="module")
def gold(task, task_files, model_dir):
    """(tokenizer, examples, trajectories) of the gold path through BM25, built once per module."""
    return _gold(task, task_files, model_dir)


def _gold(task, files, model_dir, retriever=None):
    tok = load_tokenizer(str(model_dir))
    examples = task.questions("train")
    turns = {normalize_question(ex.question): gold_turns(task, ex) for ex in examples}
    retriever = retriever or BM25Retriever(corpus=str(files.corpus), stemmer="none")
    engine = RolloutEngine(TeacherBackend(turns, tok), retriever, tok, CONFIG)
    prompts = [build_prompt(ex.question, tok) for ex in examples]
    return tok, examples, build_sft_trajectories(engine, examples, prompts, keep=answer_was_retrieved, batch_size=16)


def test_teacher_trajectories_hold_real_observations_with_loss_mask_zero(gold, model_dir):
    tok, examples, trajs = gold
    assert len(trajs) >= 0.9 * len(examples)  # BM25 finds the entity's passage for (nearly) every gold query
    for traj in trajs:
        ex = examples[traj.prompt_index]
        assert traj.num_searches == ex.metadata["hops"] and traj.finish_reason == "answer"
        kinds = [kind for _, _, kind in traj.chunks]
        assert kinds == ["policy", "observation"] * ex.metadata["hops"] + ["policy"]
        for start, end, kind in traj.chunks:
            text = tok.decode(traj.response_ids[start:end])
            assert set(traj.loss_mask[start:end]) == {0 if kind == "observation" else 1}
            assert ("<information>" in text) == (kind == "observation")
        first_obs = tok.decode(traj.response_ids[traj.chunks[1][0] : traj.chunks[1][1]])
        assert f'(Title: "{ex.metadata["entity"]}")' in first_obs  # the real retriever's passage


def test_empty_retriever_gives_empty_information_and_the_filter_drops_everything(task, task_files, model_dir):
    tok, _, trajs = _gold(task, task_files, model_dir, retriever=EmptyRetriever())
    assert trajs == []  # no answer was ever retrieved


def test_jsonl_round_trip_keeps_ids_masks_and_chunks(gold, model_dir, tmp_path):
    _, _, trajs = gold
    loaded = load_trajectories(save_trajectories(trajs, tmp_path / "sft.jsonl"))
    assert [(t.prompt_ids, t.response_ids, t.loss_mask) for t in loaded] == [
        (t.prompt_ids, t.response_ids, t.loss_mask) for t in trajs
    ]
    assert [[k for *_, k in t.chunks] for t in loaded] == [[k for *_, k in t.chunks] for t in trajs]


def test_sft_loss_is_the_masked_token_mean_of_nll():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert sft_loss(lp, mask).item() == (1.0 + 3.0 + 5.0) / 3
    assert sft_loss(lp, torch.zeros_like(mask)).item() == 0.0


def test_loss_ignores_observation_targets_unless_masking_is_off(gold, model_dir):
    _, _, trajs = gold
    batch = RolloutBatch.from_trajectories(trajs[:4], 0)
    model = load_causal_lm(str(model_dir))
    lp, _ = response_logprobs(model, batch.input_ids, batch.attention_mask, batch.position_ids, batch.prompt_length)
    # loop reference: mean NLL over the tokens the teacher wrote, observations and padding skipped
    nll = [-lp[i, j].item() for i, t in enumerate(trajs[:4]) for j, m in enumerate(t.loss_mask) if m == 1]
    assert abs(sft_loss(lp, batch.loss_mask).item() - sum(nll) / len(nll)) < 1e-5
    unmasked = unmask_observations(batch)
    assert torch.equal(unmasked.loss_mask, batch.response_mask) and unmasked.loss_mask.sum() > batch.loss_mask.sum()
    # the engine's log-probs cover only sampled tokens: over the unmasked tokens they would fake a rollout
    # mismatch (the learning demo's no-masking runs logged mismatch KL 1.7-3.0 and mismatch_kl alarms)
    assert batch.rollout_logprobs is not None and unmasked.rollout_logprobs is None


@pytest.mark.slow
def test_short_sft_lowers_the_loss_and_saves_a_loadable_policy(gold, model_dir, tmp_path):
    _, _, trajs = gold
    data_file = save_trajectories(trajs[:48], tmp_path / "sft.jsonl")
    val_file = save_trajectories(trajs[:8], tmp_path / "val.jsonl")
    module = SFTModule(str(model_dir), lr=5e-3, output_dir=str(tmp_path / "sft_model"))
    data = SFTDataModule(str(data_file), val_file=str(val_file), batch_size=8)
    trainer = Trainer(
        accelerator="cpu", max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    before = trainer.validate(module, data, verbose=False)[0]["sft/val_loss"]
    trainer.fit(module, data)
    after = trainer.validate(module, data, verbose=False)[0]["sft/val_loss"]
    assert after < before - 0.5
    reloaded = load_causal_lm(str(tmp_path / "sft_model"))
    for (name, a), (_, b) in zip(module.policy.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert load_tokenizer(str(tmp_path / "sft_model")).get_vocab() == load_tokenizer(str(model_dir)).get_vocab()


def test_teacher_trajectories_in_the_tool_call_protocol(task, task_files, model_dir):
    """The same gold paths written as tool calls: the observations are the template's tool messages (mask 0), the
    answer turn ends with the model's EOS, and the questions keep the same answers and scores."""
    from searchr1.protocols import get_protocol
    from searchr1.rewards import score_trajectory

    tok = load_tokenizer(str(model_dir))
    examples = task.questions("train")[:12]
    turns = {normalize_question(ex.question): gold_turns(task, ex, "tool_call") for ex in examples}
    # the tokenizer was trained on tag texts: tool calls take more tokens, so the budgets are larger
    config = dataclasses.replace(
        CONFIG,
        protocol="tool_call",
        max_response_tokens=64,
        max_obs_tokens=96,
        max_prompt_tokens=640,
        max_total_tokens=1024,
    )
    retriever = BM25Retriever(corpus=str(task_files.corpus), stemmer="none")
    engine = RolloutEngine(TeacherBackend(turns, tok), retriever, tok, config)
    prompts = [get_protocol("tool_call").build_prompt(ex.question, tok) for ex in examples]
    keep = lambda ex, t: answer_was_retrieved(ex, t, "tool_call")  # noqa: E731
    trajs = build_sft_trajectories(engine, examples, prompts, keep=keep)
    assert len(trajs) >= 0.9 * len(examples)
    for traj in trajs:
        ex = examples[traj.prompt_index]
        kinds = [kind for _, _, kind in traj.chunks]
        assert kinds == ["policy", "observation"] * ex.metadata["hops"] + ["policy"]
        for i, (start, end, kind) in enumerate(traj.chunks):
            text = tok.decode(traj.response_ids[start:end], skip_special_tokens=False)
            assert set(traj.loss_mask[start:end]) == {0 if kind == "observation" else 1}
            assert ("<tool_response>" in text) == (kind == "observation")
            assert text.endswith("</tool_call>") == (kind == "policy" and i < len(traj.chunks) - 1)
        assert traj.response_ids[-1] == tok.eos_token_id and traj.finish_reason == "answer"
        assert score_trajectory(traj, ex.golden_answers).em == 1.0
