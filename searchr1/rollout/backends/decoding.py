"""Pure tensor helpers of the HF backend's decode loop: padding, KV-column packing and token sampling.

Shapes: ``B`` rows, ``T`` cached columns, ``W`` chunk width, ``V`` vocabulary, ``H`` heads, ``D`` head dim.
"""

from __future__ import annotations

import torch


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align token-id lists in one tensor.

    Returns:
        ids ``(B, W)`` with ``pad_id`` on the left, and the ``(B, W)`` 0/1 mask of real tokens (``W`` = longest).
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def chunk_positions(past_mask: torch.Tensor, chunk_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a new chunk: each row continues from its count of real cached tokens.

    Args:
        past_mask: ``(B, T)`` 0/1 mask of the cached columns.
        chunk_mask: ``(B, W)`` 0/1 mask of the chunk (left padding = 0).

    Returns:
        ``(B, W)`` positions; padding slots get the row's first position (their value is never used).
    """
    start = past_mask.sum(1, keepdim=True)
    return start + (chunk_mask.cumsum(1) - 1).clamp(min=0)


def right_align_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index that packs every row's real columns at the right end, in their order (left padding).

    Attention is order-free over keys once RoPE is applied, so cached K/V columns can be moved freely
    as long as each row keeps its mask and relative order.

    Args:
        mask: ``(B, T)`` 0/1 mask of cached columns; every row must have at least one real column.

    Returns:
        ``index`` ``(B, T')`` with ``T'`` = the largest real count: packed column ``j`` of row ``b`` is old
        column ``index[b, j]`` (padding slots repeat the row's first real column so they hold finite values),
        and the packed ``(B, T')`` mask.
    """
    counts = mask.sum(1)
    width = int(counts.max())
    total = mask.shape[1]
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices  # padding columns first, then real ones
    index = order[:, total - width :]
    packed = (torch.arange(width, device=mask.device)[None, :] >= (width - counts)[:, None]).to(mask.dtype)
    first_real = order.gather(1, (total - counts).clamp(max=total - 1)[:, None])
    return torch.where(packed.bool(), index, first_real), packed


def gather_columns(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select cache columns per row: ``states`` ``(B, H, T, D)``, ``index`` ``(B, T')`` -> ``(B, H, T', D)``."""
    b, h, _, d = states.shape
    return states.gather(2, index[:, None, :, None].expand(b, h, index.shape[1], d))


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    do_sample: bool,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the next token of every row, as ``transformers`` does (temperature, then top-k, then top-p).

    Args:
        logits: ``(B, V)`` next-token logits.
        generator: RNG of ``torch.multinomial`` (one stream for the whole batch).
        uniforms: ``(B,)`` draws in [0, 1), one per row: sample by inverting each row's CDF instead, so a row's
            token depends only on its own draw, not on which other rows share the batch.

    Returns:
        tokens ``(B,)`` and their log-probs ``(B,)`` under ``log_softmax(logits / temperature)`` over the
        full vocabulary (``temperature`` = 1 when greedy), i.e. what a teacher-forced pass recomputes;
        not renormalised over the top-k / top-p set.
    """
    logits = logits.float()
    if not do_sample:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1)
    scaled = logits / temperature
    logprobs = torch.log_softmax(scaled, -1)
    filtered = scaled
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop = (probs.cumsum(-1) - probs) >= top_p  # mass of strictly more likely tokens already covers top_p
        drop[:, 0] = False
        filtered = filtered.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = torch.softmax(filtered, -1)  # (B, V)
    if uniforms is None:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    else:
        tokens = inverse_cdf_sample(probs, uniforms.to(probs.device))
    return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token whose CDF interval holds each row's draw.

    Args:
        probs: ``(B, V)`` rows summing to 1 (zeros allowed).
        uniforms: ``(B,)`` in [0, 1).

    Returns:
        ``(B,)`` tokens: the first ``v`` with ``cdf[v] > u * cdf[-1]`` (scaling by ``cdf[-1]`` absorbs rounding, so a
        zero-probability token is never chosen).
    """
    cdf = probs.cumsum(-1)  # (B, V)
    target = (uniforms * cdf[:, -1])[:, None]  # (B, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)
