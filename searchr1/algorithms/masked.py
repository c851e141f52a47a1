"""Masked reductions over (B, T) token tensors.

``mask`` is usually the ``loss_mask``: 1 on tokens the policy sampled, 0 on prompt, retrieved
``<information>`` tokens, invalid-action text and padding. Masked-out positions never contribute, even
when they hold NaN or inf (they are selected away, not multiplied by zero).
"""

from __future__ import annotations

import torch
from torch import Tensor

from searchr1.registry import Registry


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with masked-out positions set to 0 (safe for NaN/inf at those positions)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is set.

    Args:
        x: values, e.g. (B, T).
        mask: same shape as ``x``; nonzero = valid.
        dim: reduce over this dim, or over everything when None.
    """
    m = _masked(x, mask) * mask.to(x.dtype)
    return m.sum() if dim is None else m.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over valid positions: ``sum(x·mask) / sum(mask)``; 0 where nothing is valid.

    Args:
        x: values, e.g. (B, T).
        mask: same shape; weights (usually 0/1).
        dim: reduce over this dim (e.g. 1 → (B,)), or over everything when None (→ scalar).
    """
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim=dim)
    total = masked_sum(x, mask, dim)
    return total / torch.where(count > 0, count, torch.ones_like(count))


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all valid positions (scalar); Bessel-corrected when ``unbiased``.

    With fewer than two valid positions the unbiased variance is undefined; 0 is returned.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), torch.zeros_like(var))
    return var


def masked_moments(x: Tensor, mask: Tensor) -> Tensor:
    """Sum, sum of squares and count of ``x`` over valid positions, in float64: (3,).

    Moments add up across shards of a batch, so the data-parallel ranks sum theirs (one all-reduce) and each whitens
    its own rows with the global mean and variance (:func:`masked_whiten` ``moments=``).

    Args:
        x: (B, T) values.
        mask: (B, T) validity mask.
    """
    v = _masked(x, mask).double()
    m = mask.bool()
    return torch.stack([v.sum(), (v * v).sum(), m.sum().double()])


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, moments: Tensor | None = None) -> Tensor:
    """Normalise ``x`` to zero mean and unit (unbiased) variance over valid positions.

    ``(x - mean) / sqrt(var + 1e-8)``; 0 at masked-out positions.

    Args:
        x: (B, T) values.
        mask: (B, T) validity mask.
        shift_mean: when False the mean is added back (scale only).
        moments: (3,) ``[sum, sum of squares, count]`` over the whole batch (:func:`masked_moments` summed over
            the ranks that hold its shards): whiten with the whole batch's mean and variance. None: this ``x``'s own
            (two-pass mean and variance).

    Returns:
        (B, T) whitened values.
    """
    if moments is None:
        mean = masked_mean(x, mask)
        var = masked_var(x, mask, unbiased=True)
    else:
        total, squares, n = moments.double().unbind()
        mean64 = total / n.clamp(min=1)
        var64 = torch.where(n > 1, (squares - n * mean64 * mean64).clamp(min=0) / (n - 1).clamp(min=1), 0.0)
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return _masked(whitened, mask)


AGGREGATIONS: Registry = Registry("loss aggregation mode")


@AGGREGATIONS.register("token-mean")
def _token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(loss, mask)


def _seq_mean(per_seq: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-sequence values (B,) over sequences with at least one valid token."""
    has_tokens = mask.sum(dim=-1) > 0  # (B,)
    return masked_mean(per_seq, has_tokens)


@AGGREGATIONS.register("seq-mean-token-sum")
def _seq_mean_token_sum(loss: Tensor, mask: Tensor) -> Tensor:
    return _seq_mean(masked_sum(loss, mask, dim=-1), mask)


@AGGREGATIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    return _seq_mean(masked_mean(loss, mask, dim=-1), mask)


def aggregate_loss(loss: Tensor, loss_mask: Tensor, mode: str = "token-mean") -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    Modes:
        ``token-mean``: mean over all valid tokens of the batch (long answers weigh more; DAPO's choice).
        ``seq-mean-token-sum``: per-sequence sum, then mean over sequences with >= 1 valid token.
        ``seq-mean-token-mean``: per-sequence mean, then mean over sequences with >= 1 valid token
        (the original GRPO paper's objective).

    Args:
        loss: (B, T) per-token loss.
        loss_mask: (B, T) 1 on tokens that count.
        mode: one of the modes above; an unknown mode lists the valid ones.

    Returns:
        Scalar loss.
    """
    return AGGREGATIONS.get(mode)(loss, loss_mask)
