"""Masked reductions and loss aggregation: hand-worked numbers."""

import math

import pytest
import torch

from searchr1.algorithms import aggregate_loss, masked_mean, masked_whiten


def test_masked_mean_hand_numbers():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    # valid: 1, 2, 4, 6 -> 13 / 4; the NaN is masked out and must not leak
    assert masked_mean(x, m).item() == pytest.approx(3.25)
    # per row: (1+2)/2 = 1.5, (4+6)/2 = 5
    assert torch.allclose(masked_mean(x, m, dim=1), torch.tensor([1.5, 5.0]))
    # nothing valid -> 0, not NaN
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0


def test_masked_whiten_unbiased_and_zero_on_mask():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -7.0, 4.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    w = masked_whiten(x, m)
    # valid values 1,2,3,4: mean 2.5, unbiased var = (2.25+0.25+0.25+2.25)/3 = 5/3
    std = math.sqrt(5 / 3 + 1e-8)
    expected = torch.tensor([[-1.5 / std, -0.5 / std, 0.0], [0.5 / std, 0.0, 1.5 / std]])
    assert torch.allclose(w, expected, atol=1e-6)


def test_aggregate_modes_hand_numbers():
    loss = torch.tensor([[1.0, 3.0, 5.0], [2.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    # token-mean: (1+3+5+2)/4 = 2.75
    assert aggregate_loss(loss, mask, "token-mean").item() == pytest.approx(2.75)
    # seq-mean-token-sum: sums 9 and 2 over the 2 sequences with tokens -> 5.5 (row 3 ignored)
    assert aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx(5.5)
    # seq-mean-token-mean: means 3 and 2 -> 2.5
    assert aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(2.5)


def test_aggregate_bad_mode_lists_valid():
    with pytest.raises(ValueError, match="token-mean.*") as err:
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "token-max")
    assert "seq-mean-token-sum" in str(err.value)


def test_whitening_with_moments_summed_over_shards_equals_the_whole_batch():
    from searchr1.algorithms import masked_moments

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, generator=g) * 3 + 1
    m = (torch.rand(6, 9, generator=g) > 0.3).float()
    x[m == 0] = float("nan")  # masked positions never leak, not even into the moments
    whole = masked_whiten(x, m)
    # two "ranks" with rows 0-3 and 4-5: sum, sum of squares and count add up across shards
    moments = masked_moments(x[:4], m[:4]) + masked_moments(x[4:], m[4:])
    assert moments[2].item() == m.sum().item()
    shards = torch.cat([masked_whiten(x[:4], m[:4], moments=moments), masked_whiten(x[4:], m[4:], moments=moments)])
    torch.testing.assert_close(shards, whole, rtol=0, atol=1e-6)
    # each shard whitened on its own is not the same (its own mean is forced to 0)
    alone = torch.cat([masked_whiten(x[:4], m[:4]), masked_whiten(x[4:], m[4:])])
    assert (alone - whole).abs().max() > 1e-2


def test_whitening_moments_of_one_or_no_valid_token():
    x, one = torch.tensor([[2.0, 5.0]]), torch.tensor([[1.0, 0.0]])
    from searchr1.algorithms import masked_moments

    # a single valid value: variance undefined -> 0, so (2 - 2) / sqrt(1e-8) = 0, like the two-pass path
    assert masked_whiten(x, one, moments=masked_moments(x, one)).tolist() == masked_whiten(x, one).tolist()
    none = torch.zeros(1, 2)
    assert masked_whiten(x, none, moments=masked_moments(x, none)).tolist() == [[0.0, 0.0]]
