"""NaN/inf stop the run with a message naming the step and the quantity: a NaN reward, inf weights (log-probs)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from searchr1.data.datamodule import QADataModule
from searchr1.retrieval import BM25Retriever
from searchr1.rewards import em_reward
from searchr1.rollout import RolloutConfig
from searchr1.training import AlgorithmConfig, SearchR1Module

from .conftest import DATA, record_figure

BATCH, N = 2, 2


class NaNAfter:
    """EM reward, but NaN from call ``after`` on (``after = B`` poisons the 2nd rollout step)."""

    def __init__(self, after: int) -> None:
        self.after, self.calls = after, 0

    def __call__(self, response: str, golden) -> float:
        self.calls += 1
        return math.nan if self.calls > self.after else em_reward(response, golden)


class PoisonWeights(Callback):
    """Sets the embedding of ``pl_module.<which>`` to inf at the start of rollout step ``index``."""

    def __init__(self, index: int, which: str) -> None:
        self.index, self.which = index, which

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.index:
            with torch.no_grad():
                getattr(pl_module, self.which).get_input_embeddings().weight.fill_(float("inf"))


def fit(tmp_path, tiny_model_dir, reward, estimator, callbacks=()):
    algo = dict(estimator=estimator, n_samples=N if estimator == "grpo" else 1, kl_coef=0.001)
    module = SearchR1Module(
        model_name_or_path=str(tiny_model_dir),
        retriever=BM25Retriever(corpus=str(DATA / "corpus.jsonl")),
        rollout=RolloutConfig(max_turns=1, max_response_tokens=16, max_obs_tokens=32, max_total_tokens=512,
                              max_prompt_tokens=400, topk=1),
        algorithm=AlgorithmConfig(**algo),
        reward=reward,
    )  # fmt: skip
    data = QADataModule(train_files=[str(DATA / "questions.jsonl")], batch_size=BATCH)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, callbacks=[ckpt, *callbacks],
    )  # fmt: skip
    trainer.fit(module, data)


@pytest.mark.slow
def test_nan_reward_stops_the_run_naming_the_step(tmp_path, tiny_model_dir):
    rows = BATCH * N
    with pytest.raises(FloatingPointError) as info:
        fit(tmp_path, tiny_model_dir, NaNAfter(rows), "grpo")
    message = str(info.value)
    # the reward is checked where it is computed, before it can reach a loss
    assert re.search(r"reward \S+ returned nan at rollout step 1 for sample 0", message), message
    assert len(message.splitlines()) == 1
    # the checkpoint of the good step 0 is on disk and loads safely (a callable reward is stored by name only)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["searchr1"]["rollout_steps"] == 1
    record_figure("numerics/nan_runs_stopped", 1)


@pytest.mark.slow
def test_inf_reference_logprobs_stop_the_run_naming_the_step(tmp_path, tiny_model_dir):
    with pytest.raises(FloatingPointError, match=r"policy loss is nan at rollout step 1"):
        fit(tmp_path, tiny_model_dir, "em", "grpo", callbacks=[PoisonWeights(1, "reference")])
    record_figure("numerics/nan_runs_stopped", 1)


@pytest.mark.slow
def test_inf_policy_weights_stop_the_run(tmp_path, tiny_model_dir):
    """inf policy weights: the per-row sampler does not raise on NaN probabilities, so the run goes on to the policy
    loss, which is NaN, and stops there naming the step (before any update with garbage)."""
    with pytest.raises(FloatingPointError, match=r"policy loss is nan at rollout step 1"):
        fit(tmp_path, tiny_model_dir, "em", "grpo", callbacks=[PoisonWeights(1, "policy")])
    record_figure("numerics/nan_runs_stopped", 1)
