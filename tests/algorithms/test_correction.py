"""Rollout/trainer mismatch correction: hand-worked TIS/MIS weights and metrics at token and sequence level."""

from __future__ import annotations

import math

import pytest
import torch

from searchr1.algorithms import ppo_policy_loss
from searchr1.algorithms.correction import importance_ratio, rollout_correction_weights

# rollout log-prob log(0.2) everywhere; trainer ("old") probs 0.3, 0.08 | 0.6 → ρ = 1.5, 0.4 | 3.0
# row 1's second position is padding (mask 0) holding NaN: it must never leak into weights or metrics
ROLLOUT = torch.log(torch.tensor([[0.2, 0.2], [0.2, float("nan")]]))
OLD = torch.log(torch.tensor([[0.3, 0.08], [0.6, 0.5]]))
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_token_level_ratios_and_weights_by_hand():
    ratio = importance_ratio(OLD, ROLLOUT, MASK, "token")
    assert torch.allclose(ratio, torch.tensor([[1.5, 0.4], [3.0, 1.0]]), atol=1e-6)
    tis, m = rollout_correction_weights(OLD, ROLLOUT, MASK, "tis", 2.0, "token")
    assert torch.allclose(tis, torch.tensor([[1.5, 0.4], [2.0, 0.0]]), atol=1e-6)  # 3.0 capped at C = 2
    mis, _ = rollout_correction_weights(OLD, ROLLOUT, MASK, "mis", 2.0, "token")
    assert mis.tolist() == [[1.0, 0.0], [0.0, 0.0]]  # 0.4 < 1/2 and 3.0 > 2 dropped
    none, _ = rollout_correction_weights(OLD, ROLLOUT, MASK, "none", 2.0, "token")
    assert none.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    # metrics over the 3 valid tokens
    assert m["ratio_mean"].item() == pytest.approx(4.9 / 3, abs=1e-6)
    assert m["ratio_max"].item() == pytest.approx(3.0, abs=1e-6)
    assert m["truncated_share"].item() == pytest.approx(1 / 3)
    assert m["masked_share"].item() == pytest.approx(2 / 3)
    # k3 = ρ - 1 - log ρ: 0.094535 + 0.316291 + 0.901388 = 1.312214, mean 0.437405
    k3 = sum(r - 1 - math.log(r) for r in (1.5, 0.4, 3.0)) / 3
    assert m["mismatch_kl"].item() == pytest.approx(k3, abs=1e-6) == pytest.approx(0.437405, abs=1e-6)


def test_sequence_level_uses_the_product_of_token_ratios():
    # row 0: 1.5 · 0.4 = 0.6 (inside [1/2, 2]); row 1: 3.0
    ratio = importance_ratio(OLD, ROLLOUT, MASK, "sequence")
    assert torch.allclose(ratio, torch.tensor([[0.6, 0.6], [3.0, 1.0]]), atol=1e-6)
    tis, m = rollout_correction_weights(OLD, ROLLOUT, MASK, "tis", 2.0, "sequence")
    assert torch.allclose(tis, torch.tensor([[0.6, 0.6], [2.0, 0.0]]), atol=1e-6)
    mis, _ = rollout_correction_weights(OLD, ROLLOUT, MASK, "mis", 2.0, "sequence")
    assert mis.tolist() == [[1.0, 1.0], [0.0, 0.0]]  # the whole of row 1 dropped, row 0 kept
    assert m["ratio_mean"].item() == pytest.approx((0.6 + 0.6 + 3.0) / 3, abs=1e-6)
    assert m["truncated_share"].item() == pytest.approx(1 / 3)
    assert m["masked_share"].item() == pytest.approx(1 / 3)


def test_identical_logprobs_give_unit_weights_and_zero_kl():
    lp = torch.log(torch.tensor([[0.3, 0.7, 0.1]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    for mode in ("none", "tis", "mis"):
        for level in ("token", "sequence"):
            w, m = rollout_correction_weights(lp, lp, mask, mode, 2.0, level)
            assert w.tolist() == [[1.0, 1.0, 0.0]]
            assert m["mismatch_kl"].item() == 0.0 and m["ratio_max"].item() == 1.0
            assert m["truncated_share"].item() == 0.0 and m["masked_share"].item() == 0.0


def test_weighted_advantages_equal_weighted_per_token_ppo_loss():
    """The training side multiplies advantages by w >= 0; that is the per-token PPO loss times w."""
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 5, generator=g) * 0.3 - 1, torch.randn(3, 5, generator=g) * 0.3 - 1
    adv = torch.randn(3, 5, generator=g)
    mask = (torch.rand(3, 5, generator=g) > 0.2).float()
    w = torch.tensor([0.0, 0.5, 1.0, 2.0, 1.3]).expand(3, 5)
    loss, _ = ppo_policy_loss(lp, old, adv * w, mask, 0.2, 0.2, dual_clip=3.0)
    ratio = torch.exp(lp - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * 3.0), per_token)
    assert loss.item() == pytest.approx(((per_token * w * mask).sum() / mask.sum()).item(), abs=1e-6)


def test_bad_settings_say_what_is_valid():
    with pytest.raises(ValueError, match="valid names: .*mis.*none.*tis"):
        rollout_correction_weights(OLD, ROLLOUT, MASK, "clip")
    with pytest.raises(ValueError, match="> 1"):
        rollout_correction_weights(OLD, ROLLOUT, MASK, "tis", 1.0)
    with pytest.raises(ValueError, match="token"):
        importance_ratio(OLD, ROLLOUT, MASK, "turn")
