"""With the HF backend the rollout samples with the trainer's own weights and precision: ρ = 1, correction no-op."""

from __future__ import annotations

import pytest
import torch

from searchr1.training.forward import batched_logprobs

from .test_e2e import GRPO, Recorder, make, trainer


def test_hf_rollout_logprobs_match_the_trainer_pass(tiny_model_dir, bm25):
    module, data = make(tiny_model_dir, bm25, GRPO)
    module.configure_model()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rollout = module.rollout(batch, train=True)
    assert rollout.loss_mask.sum() > 0
    old = batched_logprobs(module.policy, rollout, module.rollout_config.temperature, 2048)
    mask = rollout.loss_mask.bool()
    assert (rollout.rollout_logprobs[mask] < 0).all()  # real log-probs were recorded, not zeros
    assert torch.allclose(old[mask], rollout.rollout_logprobs[mask], atol=1e-4)


@pytest.mark.parametrize("mode,level", [("tis", "token"), ("mis", "sequence")])
def test_correction_is_a_no_op_with_the_hf_backend(tmp_path, tiny_model_dir, bm25, mode, level):
    params, metrics = [], []
    for correction in ("none", mode):
        algo = dict(
            GRPO, rollout_correction=correction, rollout_correction_level=level, rollout_correction_threshold=1.5
        )
        module, data = make(tiny_model_dir, bm25, algo)
        rec = Recorder()
        trainer(tmp_path / correction, 1, [rec]).fit(module, data)
        params.append([p.detach().clone() for p in module.policy.parameters()])
        metrics.append(rec.steps[-1])
    for a, b in zip(*params):
        assert torch.allclose(a, b, atol=1e-6)
    for m in metrics:  # the diagnostics are logged whatever the mode
        assert m["train/rollout_correction/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
        assert m["train/rollout_correction/ratio_max"] == pytest.approx(1.0, abs=1e-3)
        assert 0.0 <= m["train/rollout_correction/mismatch_kl"] < 1e-6
        assert m["train/rollout_correction/masked_share"] == 0.0
        assert m["train/rollout_correction/truncated_share"] == 0.0
