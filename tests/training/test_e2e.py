"""End-to-end tiny training runs on CPU: parameters change, losses finite, masks right, checkpoints resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from searchr1.data.datamodule import QADataModule
from searchr1.rollout import RolloutConfig
from searchr1.training import AlgorithmConfig, SearchR1Module

from .conftest import DATA

GRPO = dict(estimator="grpo", n_samples=2, kl_coef=0.001, kl_kind="k3")
PPO = dict(
    estimator="gae", n_samples=1, kl_coef=0.001, kl_kind="k1", kl_in_reward=True, ppo_epochs=2, mini_batch_size=2
)


class Recorder(Callback):
    """Keeps the logged metrics and the example ids of every training step."""

    def __init__(self):
        self.steps = []
        self.batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.batches.append([ex.id for ex in batch])
        self.last_rollout = outputs["rollout"]


class CrashAt(Callback):
    """Raises at the start of training batch ``index`` (a crash mid-epoch)."""

    def __init__(self, index):
        self.index = index

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.index:
            raise RuntimeError("simulated crash")


def make(model_dir, bm25, algo, seed=0):
    module = SearchR1Module(
        model_name_or_path=model_dir,
        retriever=bm25,
        rollout=RolloutConfig(
            max_turns=2, max_response_tokens=24, max_obs_tokens=48, max_total_tokens=512, max_prompt_tokens=400, topk=2
        ),
        algorithm=AlgorithmConfig(**algo),
        policy_lr=1e-3,
        critic_lr=1e-3,
        seed=seed,
    )
    data = QADataModule(
        train_files=[str(DATA / "questions.jsonl")],
        val_files=[str(DATA / "questions.jsonl")],
        batch_size=2,
        max_val_samples=4,
        seed=seed,
    )
    return module, data


def trainer(tmp_path, steps, callbacks=(), **kw):
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        **kw,
    )


@pytest.mark.parametrize("algo", [GRPO, PPO], ids=["grpo", "ppo"])
def test_two_steps_update_params_and_write_checkpoint(tmp_path, tiny_model_dir, bm25, algo):
    module, data = make(tiny_model_dir, bm25, algo)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    critic_before = None if module.critic is None else [p.detach().clone() for p in module.critic.parameters()]
    rec = Recorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    t = trainer(tmp_path, 2, [rec, ckpt])
    t.fit(module, data)
    changed = sum(not torch.equal(before[n], p) for n, p in module.policy.named_parameters())
    assert changed > 0.5 * len(before), "most policy tensors must be updated"
    if critic_before is not None:
        assert any(not torch.equal(a, b) for a, b in zip(critic_before, module.critic.parameters()))
        assert math.isfinite(rec.steps[-1]["train/critic/value_loss"])
    assert len(rec.steps) == 2
    for key in ("train/policy/pg_loss", "train/policy/entropy", "train/reward", "rollout/searches_mean"):
        assert any(k.startswith(key) for k in rec.steps[-1]), key
    assert all(math.isfinite(v) for step in rec.steps for v in step.values())
    source = data.val_sources[0]
    assert {f"val/{source}/em", f"val/{source}/f1", "val/em"} <= set(t.callback_metrics), t.callback_metrics.keys()
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    # masks: 0 on every observation token, 1 on sampled ones (recorded by the engine at append time)
    rollout = rec.last_rollout
    for row, traj in enumerate(rollout.trajectories):
        n = len(traj.response_ids)
        assert rollout.loss_mask[row, :n].tolist() == [float(m) for m in traj.loss_mask]
        assert rollout.loss_mask[row, n:].sum() == 0


def test_reference_not_stored_in_checkpoint_and_no_critic_for_grpo(tmp_path, tiny_model_dir, bm25):
    from searchr1.training.callbacks import SampleLogger

    module, data = make(tiny_model_dir, bm25, GRPO)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    rec = Recorder()
    trainer(tmp_path, 1, [ckpt, rec, SampleLogger(every_n_steps=1, num_samples=2)]).fit(module, data)
    # SampleLogger reads the typed step output: the first two trajectories of the step, with their scores
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == [t.response_text for t in rec.last_rollout.trajectories[:2]]
    assert all(r["step"] == 0 and math.isfinite(r["score"]) for r in rows)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert not any(k.startswith("reference.") for k in state["state_dict"])
    assert not any(k.startswith("critic.") for k in state["state_dict"])
    assert module.critic is None and module.reference is not None


@pytest.mark.slow
@pytest.mark.parametrize("algo", [GRPO, PPO], ids=["grpo", "ppo"])
def test_resume_matches_uninterrupted_run(tmp_path, tiny_model_dir, bm25, algo):
    torch.use_deterministic_algorithms(True)
    try:
        # uninterrupted: 3 steps
        module_a, data_a = make(tiny_model_dir, bm25, algo)
        rec_a = Recorder()
        trainer(tmp_path / "a", 3, [rec_a]).fit(module_a, data_a)
        # crashes at the start of the 3rd step (after the checkpoint of step 2), then resumes from it
        module_b, data_b = make(tiny_model_dir, bm25, algo)
        ckpt = ModelCheckpoint(dirpath=tmp_path / "b", save_last=True, every_n_train_steps=1)
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer(tmp_path / "b", 3, [ckpt, CrashAt(2)]).fit(module_b, data_b)
        module_c, data_c = make(tiny_model_dir, bm25, algo)
        rec_c = Recorder()
        trainer(tmp_path / "c", 3, [rec_c]).fit(module_c, data_c, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(rec_c.steps) == 1
    # the resumed step trains on the 3rd batch, not the 2nd again (checkpoint saved before the data position moved)
    assert rec_c.batches[-1] == rec_a.batches[2] != rec_a.batches[1]
    last_a, last_c = rec_a.steps[-1], rec_c.steps[-1]
    for key in ("train/reward", "train/policy/pg_loss", "train/response_length", "rollout/searches_mean"):
        key = next(k for k in last_a if k.startswith(key))
        assert last_c[key] == pytest.approx(last_a[key], rel=1e-5, abs=1e-6), key
    for (name, pa), pc in zip(module_a.policy.named_parameters(), module_c.policy.parameters()):
        assert torch.allclose(pa, pc, atol=1e-6), (name, (pa - pc).abs().max().item(), (pa - pc).abs().argmax().item())


def test_critic_value_head_init_follows_seed_not_global_rng(tiny_model_dir):
    from searchr1.models import ValueModel

    first = ValueModel(tiny_model_dir, seed=3).value_head.weight
    torch.rand(1000)  # a run that consumed global random numbers first (as a resumed run does) must not differ
    assert torch.equal(ValueModel(tiny_model_dir, seed=3).value_head.weight, first)
    assert not torch.equal(ValueModel(tiny_model_dir, seed=4).value_head.weight, first)


@pytest.mark.slow
def test_grpo_steps_in_the_tool_call_protocol(tmp_path, tiny_model_dir, bm25):
    """Two GRPO steps with tool-calling prompts: parameters change and every inserted tool message is masked."""
    module, data = make(tiny_model_dir, bm25, GRPO)
    cfg = {**module.rollout_config.__dict__, "max_total_tokens": 1024, "max_prompt_tokens": 640}
    module.rollout_config = RolloutConfig(**{**cfg, "protocol": "tool_call"})
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    rec = Recorder()
    trainer(tmp_path, 2, [rec]).fit(module, data)
    assert sum(not torch.equal(before[n], p) for n, p in module.policy.named_parameters()) > 0.5 * len(before)
    assert all(math.isfinite(v) for step in rec.steps for v in step.values())
    tok = module.tokenizer
    for traj in rec.last_rollout.trajectories:
        assert '"name": "search"' in tok.decode(traj.prompt_ids, skip_special_tokens=False)
        for start, end, kind in traj.chunks:
            text = tok.decode(traj.response_ids[start:end], skip_special_tokens=False)
            assert set(traj.loss_mask[start:end]) == {1 if kind == "policy" else 0}
            if kind != "policy":
                assert text.startswith("<|im_end|>\n<|im_start|>user\n<tool_response>\n")
                cut = end == len(traj.response_ids) and traj.finish_reason == "truncated"  # the context cap
                assert cut or text.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
