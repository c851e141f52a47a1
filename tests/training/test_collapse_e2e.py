"""CollapseGuard on real tiny GRPO runs: a learning-rate blow-up collapses the policy's entropy, the guard rolls
back to the last checkpoint before it (weights equal to the saved ones, lr lowered), stops after its last allowed
rollback, and stays silent on a healthy run."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from searchr1.training.callbacks import CollapseGuard, TrainingCollapse

from .test_e2e import GRPO, Recorder, make, trainer

POLICY_LR = 1e-3  # make()'s


def vowel_share(trajectory, golden_answers) -> float:
    """A reward that differs between the samples of a group, so GRPO has non-zero advantages on a random policy."""
    letters = trajectory.response_text.replace(" ", "")
    return sum(c in "aeiou" for c in letters) / max(len(letters), 1)


class BlowUpLR(Callback):
    """Sets the policy lr to ``lr`` for the updates of the given rollout steps: a push into collapse."""

    def __init__(self, steps: set[int], lr: float = 20.0) -> None:
        self.steps, self.lr = steps, lr

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module._rollout_steps in self.steps:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = self.lr


class CheckRollback(Callback):
    """Right after a rollback (this callback runs after the guard's hook), compares the live weights with the file."""

    def __init__(self, guard: CollapseGuard) -> None:
        self.guard, self.checked = guard, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        event = self.guard.events[-1] if self.guard.events else None
        if event is None or event["decision"] != "rollback" or event["step"] != pl_module._rollout_steps - 1:
            return
        saved = torch.load(event["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
        live = {f"policy.{k}": v for k, v in pl_module.policy.state_dict().items()}
        assert live.keys() <= saved.keys()
        self.checked.append(all(torch.equal(live[k], saved[k]) for k in live))
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


@pytest.fixture
def grpo(tiny_model_dir, bm25):
    def build():
        module, data = make(tiny_model_dir, bm25, GRPO)
        module.reward_fn = vowel_share
        return module, data

    return build


@pytest.mark.slow
def test_lr_blow_up_trips_entropy_collapse_and_rolls_back_to_the_saved_weights(tmp_path, grpo):
    module, data = grpo()
    guard, rec = CollapseGuard(max_rollbacks=1), Recorder()
    check = CheckRollback(guard)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=1)
    trainer(tmp_path, 9, [guard, BlowUpLR({6}), check, rec, ckpt]).fit(module, data)
    rollbacks = [e for e in guard.events if e["decision"] == "rollback"]
    assert [e["signal"] for e in rollbacks] == ["entropy_collapse"]
    event = rollbacks[0]
    assert event["step"] == 7 and event["anomaly_start"] == 7  # the first rollout after the blown-up update
    assert event["value"] < 0.3 * event["baseline_mean"]
    # the last checkpoint whose weights were seen healthy: after 6 updates (the blown-up 7th is not in it)
    saved = torch.load(event["checkpoint"], map_location="cpu", weights_only=False)
    assert saved["searchr1"]["rollout_steps"] == 6
    assert check.checked == [True]
    assert check.lr == pytest.approx(POLICY_LR * 0.5)
    # training continued healthy after the rollback, on new steps
    assert len(rec.steps) == 9 and module._rollout_steps == 9
    assert rec.steps[-1]["train/policy/entropy"] > 0.9 * event["baseline_mean"]
    rows = [json.loads(line) for line in (tmp_path / "alarms.jsonl").read_text().splitlines()]
    assert any(r["signal"] == "entropy_collapse" and r["decision"] == "rollback" for r in rows)


@pytest.mark.slow
def test_a_second_collapse_after_the_last_rollback_stops_the_run(tmp_path, grpo):
    module, data = grpo()
    guard = CollapseGuard(max_rollbacks=1)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=1)
    with pytest.raises(TrainingCollapse, match="entropy_collapse") as info:
        trainer(tmp_path, 12, [guard, BlowUpLR({5, 8}), ckpt]).fit(module, data)
    err = info.value
    assert err.signal == "entropy_collapse" and err.value < 0.3 * err.baseline[0]
    assert err.checkpoint is not None and "max_rollbacks=1" in str(err)
    assert [e["decision"] for e in guard.events if e["signal"] == "entropy_collapse"] == ["rollback", "stop"]


@pytest.mark.slow
def test_a_healthy_run_trips_nothing(tmp_path, grpo):
    module, data = grpo()
    guard, rec = CollapseGuard(), Recorder()
    trainer(tmp_path, 10, [guard, rec]).fit(module, data)
    assert len(rec.steps) == 10 and rec.steps[-1]["train/policy/grad_norm"] > 0  # it did learn something
    assert guard.events == [] and not (tmp_path / "alarms.jsonl").exists()
