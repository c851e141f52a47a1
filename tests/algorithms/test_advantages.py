"""Advantage estimators: hand numbers, loop references, and the masked-span invariance."""

import pytest
import torch

from searchr1.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    gae_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)


def _gae_loop(rewards, values, mask, gamma, lam):
    """Plain per-sequence reference: GAE over the valid tokens only, as a Python list."""
    out_adv, out_ret = [], []
    for r, v, m in zip(rewards.tolist(), values.tolist(), mask.tolist()):
        idx = [t for t, x in enumerate(m) if x]
        adv = [0.0] * len(m)
        ret = [0.0] * len(m)
        last, next_v = 0.0, 0.0
        for t in reversed(idx):
            delta = r[t] + gamma * next_v - v[t]
            last = delta + gamma * lam * last
            adv[t], ret[t] = last, last + v[t]
            next_v = v[t]
        out_adv.append(adv)
        out_ret.append(ret)
    return torch.tensor(out_adv), torch.tensor(out_ret)


def test_gae_hand_numbers():
    # one sequence, 3 valid tokens, reward 1 at the end, values 0.5, 0.25, 0.75; gamma=1, lam=0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    mask = torch.ones(1, 3)
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5, whiten=False)
    # t=2: delta = 1 - 0.75 = 0.25                      A2 = 0.25
    # t=1: delta = 0 + 0.75 - 0.25 = 0.5                A1 = 0.5 + 0.5*0.25 = 0.625
    # t=0: delta = 0 + 0.25 - 0.5 = -0.25               A0 = -0.25 + 0.5*0.625 = 0.0625
    assert torch.allclose(adv, torch.tensor([[0.0625, 0.625, 0.25]]))
    assert torch.allclose(ret, torch.tensor([[0.5625, 0.875, 1.0]]))


def test_gae_matches_loop_reference_random():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 17, generator=g)
    values = torch.randn(6, 17, generator=g)
    mask = (torch.rand(6, 17, generator=g) > 0.3).float()
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.97, lam=0.9, whiten=False)
    ref_adv, ref_ret = _gae_loop(rewards, values, mask, 0.97, 0.9)
    assert torch.allclose(adv, ref_adv, atol=1e-5)
    assert torch.allclose(ret, ref_ret, atol=1e-5)


def test_gae_inserted_retrieved_span_changes_nothing():
    """Inserting masked <information> tokens (any reward/value there) leaves policy-token advantages unchanged."""
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(3, 8, generator=g)
    values = torch.randn(3, 8, generator=g)
    mask = torch.ones(3, 8)
    base_adv, base_ret = gae_advantages(rewards, values, mask, 0.99, 0.95, whiten=True)
    # insert 5 retrieved tokens after position 3, with garbage rewards and values
    span = 5
    ins = lambda x, fill: torch.cat([x[:, :4], fill, x[:, 4:]], dim=1)  # noqa: E731
    r2 = ins(rewards, torch.randn(3, span, generator=g) * 100)
    v2 = ins(values, torch.randn(3, span, generator=g) * 100)
    m2 = ins(mask, torch.zeros(3, span))
    adv2, ret2 = gae_advantages(r2, v2, m2, 0.99, 0.95, whiten=True)
    keep = m2.bool()
    assert torch.allclose(adv2[keep].view(3, 8), base_adv, atol=1e-5)
    assert torch.allclose(ret2[keep].view(3, 8), base_ret, atol=1e-5)
    assert torch.all(adv2[~keep] == 0) and torch.all(ret2[~keep] == 0)


def test_grpo_hand_numbers_and_any_group_ids():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    groups = ["q1", "q1", "q1", "q2", "q2", "q2"]
    mask = torch.tensor([[1, 1, 0]] * 6)
    adv = grpo_advantages(scores, groups, mask, eps=0.0)
    # group q1: mean 1/3, unbiased std sqrt(((2/3)^2 + 2(1/3)^2)/2) = sqrt(1/3)
    std = (1 / 3) ** 0.5
    assert adv[0, 0].item() == pytest.approx((2 / 3) / std, rel=1e-5)
    assert adv[1, 1].item() == pytest.approx((-1 / 3) / std, rel=1e-5)
    assert torch.all(adv[:, 2] == 0)
    # group q2 all equal -> 0 advantages
    assert torch.all(adv[3:] == 0)
    # same result with integer tensor ids
    adv_t = grpo_advantages(scores, torch.tensor([7, 7, 7, 3, 3, 3]), mask, eps=0.0)
    assert torch.allclose(adv, adv_t)
    # without std scaling: score - mean
    adv_ns = grpo_advantages(scores, groups, mask, scale_by_std=False)
    assert adv_ns[0, 0].item() == pytest.approx(2 / 3)


def test_grpo_matches_loop_reference():
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(20, generator=g)
    groups = torch.randint(0, 5, (20,), generator=g)
    mask = torch.ones(20, 4)
    adv = grpo_advantages(scores, groups, mask, eps=1e-6)
    for i in range(20):
        members = scores[groups == groups[i]]
        if len(members) < 2:
            expected = scores[i] / (1 + 1e-6)
        else:
            expected = (scores[i] - members.mean()) / (members.std(unbiased=True) + 1e-6)
        assert adv[i, 0].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_rloo_hand_numbers():
    scores = torch.tensor([1.0, 0.0, 0.5, 2.0])
    groups = [0, 0, 0, 1]
    adv = rloo_advantages(scores, groups, torch.ones(4, 2))
    # 1 - mean(0, .5) = 0.75 ; 0 - mean(1, .5) = -0.75 ; 0.5 - mean(1, 0) = 0 ; singleton -> its score
    assert torch.allclose(adv[:, 0], torch.tensor([0.75, -0.75, 0.0, 2.0]))


def test_reinforce_pp_carries_through_mask():
    rewards = torch.tensor([[0.0, 5.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]])
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])
    out = reinforce_pp_advantages(rewards, mask, gamma=0.5)
    # raw returns row0: t3=1, t2=0.5, t1 masked (reward 5 ignored), t0=0.25 ; row1: 0.25, 0.5, 1, 2
    raw = torch.tensor([0.25, 0.5, 1.0, 0.25, 0.5, 1.0, 2.0])
    expected = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=True) + 1e-8)
    assert torch.allclose(out[mask.bool()], expected, atol=1e-6)
    assert out[0, 1] == 0


def test_registry_dispatch_and_errors():
    assert ADVANTAGE_ESTIMATORS.get("gae").needs_critic
    assert not ADVANTAGE_ESTIMATORS.get("grpo").needs_critic
    inputs = AdvantageInputs(
        token_rewards=torch.zeros(2, 3), scores=torch.tensor([1.0, 0.0]), loss_mask=torch.ones(2, 3), group_ids=[0, 0]
    )
    adv, ret = compute_advantages("grpo", inputs)
    assert ret is None and adv[0, 0] > 0 > adv[1, 0]
    with pytest.raises(ValueError, match="valid names: .*gae.*grpo"):
        compute_advantages("grpoo", inputs)
    with pytest.raises(ValueError, match="critic values"):
        compute_advantages("gae", inputs)
