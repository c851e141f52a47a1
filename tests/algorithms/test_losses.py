"""Policy, value and KL losses: hand-worked numbers."""

import math

import pytest
import torch

from searchr1.algorithms import kl_penalty, ppo_policy_loss, value_loss


def test_kl_kinds_hand_numbers():
    lp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([-0.5, -0.5])
    assert torch.allclose(kl_penalty(lp, ref, "k1"), torch.tensor([0.5, -0.5]))
    assert torch.allclose(kl_penalty(lp, ref, "kl"), torch.tensor([0.5, -0.5]))
    assert torch.allclose(kl_penalty(lp, ref, "abs"), torch.tensor([0.5, 0.5]))
    assert torch.allclose(kl_penalty(lp, ref, "mse"), torch.tensor([0.125, 0.125]))
    # k3: d = ref - lp = -0.5 -> e^-0.5 + 0.5 - 1 ; d = 0.5 -> e^0.5 - 0.5 - 1
    k3 = torch.tensor([math.exp(-0.5) - 0.5, math.exp(0.5) - 1.5])
    assert torch.allclose(kl_penalty(lp, ref, "k3"), k3)
    assert torch.allclose(kl_penalty(lp, ref, "low_var_kl"), k3)
    # clamps: d clamped to +20 then the result to 10
    assert kl_penalty(torch.tensor([-100.0]), torch.tensor([0.0]), "k3").item() == 10.0


def test_kl_unknown_kind_lists_valid():
    with pytest.raises(ValueError, match="valid names: abs, k1, k2, k3, kl, low_var_kl, mse"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


def test_ppo_loss_hand_numbers():
    # ratios e^{0.5}=1.6487 (A=+1, clipped at 1.2), e^{-0.5}=0.6065 (A=-1, clipped at 0.8), 1 (A=2), masked
    lp = torch.tensor([[0.5, -0.5, 0.0, 3.0]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, m = ppo_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    # per token: max(-1.6487, -1.2) = -1.2 ; max(0.6065, 0.8) = 0.8 ; -2 -> mean = (-1.2+0.8-2)/3
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.0) / 3, rel=1e-5)
    assert m["clipfrac"].item() == pytest.approx(2 / 3)
    assert m["approx_kl"].item() == pytest.approx(0.0, abs=1e-7)  # mean(-0.5, 0.5, 0)


def test_ppo_clip_higher_and_dual_clip():
    lp = torch.tensor([[0.5, 2.0]])
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    # clip-higher 0.28: token 0 -> -1.28 ; token 1: ratio e^2=7.389, max(7.389, 0.8)=7.389
    loss, _ = ppo_policy_loss(lp, torch.zeros(1, 2), adv, mask, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx((-1.28 + math.exp(2.0)) / 2, rel=1e-5)
    # dual clip c=3 caps token 1 at 3
    loss, m = ppo_policy_loss(lp, torch.zeros(1, 2), adv, mask, clip_high=0.28, dual_clip=3.0)
    assert loss.item() == pytest.approx((-1.28 + 3.0) / 2, rel=1e-5)
    assert m["clipfrac_dual"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        ppo_policy_loss(lp, torch.zeros(1, 2), adv, mask, dual_clip=0.5)


def test_ppo_gradient_zero_on_masked_tokens():
    lp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    loss, _ = ppo_policy_loss(lp, torch.zeros(2, 3), torch.ones(2, 3), mask)
    loss.backward()
    assert torch.all(lp.grad[mask == 0] == 0)
    assert torch.all(lp.grad[mask == 1] != 0)


def test_value_loss_hand_numbers_with_half():
    values = torch.tensor([[1.0, 0.0, 7.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, clipfrac = value_loss(values, old, returns, mask, clip=0.5)
    # token0: unclipped (1-2)^2=1, clipped (0.5-2)^2=2.25 -> 2.25 ; token1: (0-1)^2 both -> 1
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
