"""RunRecorder: its choice of trajectories to keep (every outcome class the step has, spread over the batch), its
search-log file names, and the search log of a real fit holding the training and validation searches by phase."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Callback

from searchr1.training.run_log import sample_rows


def test_sample_rows_cover_the_outcome_classes_first() -> None:
    outcomes = ["correct"] * 10 + ["never_searched"] * 5 + ["misread"]
    # 4 picks: classes take turns (correct, never_searched, misread, then correct again);
    # correct's 2 picks spread over its rows 0..9 -> rows 0 and 5; never_searched's first row 10; misread's row 15
    assert sample_rows(outcomes, 4) == [0, 5, 10, 15]
    assert sample_rows(outcomes, 2) == [0, 10]
    assert sample_rows(outcomes, 50) == list(range(16))  # more asked than rows: all of them
    assert sample_rows(["correct"] * 8, 4) == [0, 2, 4, 6]
    assert sample_rows(outcomes, 0) == [] and sample_rows([], 4) == []


def test_search_log_names_per_rank_and_for_a_resumed_run() -> None:
    from searchr1.training.run_log import search_log_name

    assert search_log_name(0, False) == "search_log.parquet"
    assert search_log_name(2, False) == "search_log.rank2.parquet"
    assert search_log_name(0, True).startswith("search_log.resumed-") and search_log_name(0, True).endswith(".parquet")


class KeepRollouts(Callback):
    """Keeps the rollouts of every training and validation step (what the search log must hold)."""

    def __init__(self) -> None:
        self.train, self.val = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train.append(outputs.rollout)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val.append(outputs)


@pytest.mark.slow
def test_validation_searches_go_to_the_search_log_with_their_phase(tmp_path) -> None:
    """A real fit of the shipped warm start (sampled validation, so it searches): every search of the training and
    validation rollouts is one row, told apart by ``phase``; validation rows carry the training steps done."""
    from lightning.pytorch import Trainer

    from searchr1.data.datamodule import QADataModule
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever
    from searchr1.retrieval.search_log import read_search_log
    from searchr1.rollout import RolloutConfig
    from searchr1.training import AlgorithmConfig, SearchR1Module
    from searchr1.training.run_log import RunRecorder

    task = Path(package_path("pkg:assets/synthetic_task"))
    module = SearchR1Module(
        model_name_or_path=str(package_path("pkg:assets/synthetic_warm_start")),
        retriever=BM25Retriever(corpus=str(task / "corpus.jsonl"), stemmer="none"),
        rollout=RolloutConfig(
            max_turns=2, max_response_tokens=32, max_obs_tokens=64, max_total_tokens=448, max_prompt_tokens=192, topk=1
        ),
        algorithm=AlgorithmConfig(estimator="grpo", n_samples=2, kl_coef=0.0),
        policy_lr=1e-4,
        val_do_sample=True,
    )
    data = QADataModule(
        train_files=[str(task / "train.jsonl")],
        val_files=[str(task / "heldout.jsonl")],
        batch_size=2,
        val_batch_size=8,
        max_val_samples=8,
    )
    keep = KeepRollouts()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[RunRecorder(samples_per_step=0, report=False), keep],
    )
    trainer.fit(module, data)
    rows = read_search_log(tmp_path / "search_log.parquet")
    val_queries = [q for t in keep.val[0].trajectories for q in t.queries]
    train_queries = [q for t in keep.train[0].trajectories for q in t.queries]
    assert len(val_queries) > 0, "the sampled warm start searches in validation (seed 0)"
    assert [r.query for r in rows if r.phase == "val"] == val_queries
    assert [r.query for r in rows if r.phase == "train"] == train_queries
    assert {r.phase for r in rows} <= {"train", "val"}
    val = [r for r in rows if r.phase == "val"]
    assert all(r.step == 1 and r.trajectory.startswith("1/val0/") for r in val)  # after one training step
    assert all(r.error is None and r.passage_ids for r in val)  # answered by the recorder, not "not recorded"
