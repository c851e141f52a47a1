"""The HF decode loop's batch KV cache, packed: rows come and go, every row's real columns stay right-aligned.

Cache layout: one ``DynamicCache`` for the batch, ``(B, H, T, D)`` per layer, every row's real columns
packed at the right end (left padding) with a ``(B, T)`` 0/1 ``mask``. A sub-batch prefill grows the
cache and re-packs it (``right_align_index``); dropping rows trims the all-padding columns. A row whose
continuation is pending is popped out of the batch (``_ParkedKV``) and pushed back when it resumes
(:mod:`searchr1.rollout.backends.hf_loop`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from searchr1.rollout.backends.decoding import chunk_positions, gather_columns, left_pad, right_align_index


def cache_kwargs(model: torch.nn.Module, cache: DynamicCache) -> dict[str, DynamicCache]:
    """The KV-cache argument of ``model``'s forward: ``cache`` (transformers >= 5.2x), else ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes kwargs through
    forward = getattr(base, "forward", None)
    try:
        names = inspect.signature(forward).parameters
    except (TypeError, ValueError):  # a wrapper without a readable signature: the long-standing name
        names = {}
    return {"cache": cache} if "cache" in names else {"past_key_values": cache}


def returned_cache(out: Any) -> DynamicCache:
    """The cache a forward returned, under its new name (``cache``) or the old one."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


@dataclass
class _ParkedKV:
    """A row's cache taken out of the batch: ``mask`` ``(1, T)``, per layer ``(1, H, T, D)`` keys and values."""

    mask: torch.Tensor
    layers: list[tuple[torch.Tensor, torch.Tensor]]


class _PackedCache:
    """The batch KV cache with its ``(B, T)`` mask, kept right-aligned (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cache = DynamicCache()
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def add_rows(self, n: int) -> None:
        """Append ``n`` rows with no cached tokens."""
        self.mask = torch.cat([self.mask, self.mask.new_zeros((n, self.width))])
        for layer in self._layers():
            layer.keys = torch.cat([layer.keys, layer.keys.new_zeros((n, *layer.keys.shape[1:]))])
            layer.values = torch.cat([layer.values, layer.values.new_zeros((n, *layer.values.shape[1:]))])

    def keep_rows(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (in that order) and drop the columns that are padding for all of them."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask = self.mask[idx]
        width = int(self.mask.sum(1).max()) if keep else 0
        self.mask = self.mask[:, self.width - width :]
        for layer in self._layers():
            layer.keys = layer.keys[idx, :, layer.keys.shape[2] - width :]
            layer.values = layer.values[idx, :, layer.values.shape[2] - width :]

    def pop_rows(self, positions: list[int]) -> list[_ParkedKV]:
        """Take rows ``positions`` out of the batch (each trimmed to its own real columns, which are rightmost)."""
        parked = []
        for p in positions:
            width = int(self.mask[p].sum())
            cols = slice(self.width - width, self.width)
            layers = [(layer.keys[p : p + 1, :, cols], layer.values[p : p + 1, :, cols]) for layer in self._layers()]
            parked.append(_ParkedKV(self.mask[p : p + 1, cols], layers))
        gone = set(positions)
        self.keep_rows([p for p in range(self.mask.shape[0]) if p not in gone])
        return parked

    def push_rows(self, parked: list[_ParkedKV]) -> None:
        """Append parked rows at the end of the batch, left-padding whichever side is narrower."""
        width = max([self.width, *(kv.mask.shape[1] for kv in parked)])
        masks = [_left_pad_columns(self.mask, width, 1)] + [_left_pad_columns(kv.mask, width, 1) for kv in parked]
        self.mask = torch.cat(masks)
        for i, layer in enumerate(self._layers()):
            keys = [_left_pad_columns(layer.keys, width, 2)] + [
                _left_pad_columns(kv.layers[i][0], width, 2) for kv in parked
            ]
            values = [_left_pad_columns(layer.values, width, 2)]
            values += [_left_pad_columns(kv.layers[i][1], width, 2) for kv in parked]
            layer.keys, layer.values = torch.cat(keys), torch.cat(values)

    def prefill(self, model: torch.nn.Module, rows: list[int], chunks: list[list[int]], pad_id: int) -> None:
        """Feed ``chunks[i]`` (non-empty) into row ``rows[i]``'s cache; other rows are untouched."""
        ids, chunk_mask = left_pad(chunks, pad_id, self.device)
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        past_mask = self.mask[idx]
        past = [(layer.keys[idx], layer.values[idx]) for layer in self._layers()]
        sub = DynamicCache(ddp_cache_data=past) if past else DynamicCache()
        model(
            input_ids=ids,
            attention_mask=torch.cat([past_mask, chunk_mask], 1),
            position_ids=chunk_positions(past_mask, chunk_mask),
            use_cache=True,
            logits_to_keep=1,
            **cache_kwargs(model, sub),
        )
        grown = torch.cat([self.mask, self.mask.new_zeros((self.mask.shape[0], ids.shape[1]))], 1)
        grown[idx, self.width :] = chunk_mask
        index, self.mask = right_align_index(grown)
        old = [(layer.keys, layer.values) for layer in self._layers()]
        packed = []
        for i, layer in enumerate(sub.layers):
            prev = old[i] if i < len(old) else (None, None)
            new = (layer.keys, layer.values)
            packed.append(tuple(_merge_rows(p, n, idx, index) for p, n in zip(prev, new)))
        self.cache = DynamicCache(ddp_cache_data=packed)

    def step(self, model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
        """Feed one token per row; returns the ``(B, V)`` next-token logits."""
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        attention = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], 1)
        out = model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=self.mask.sum(1, keepdim=True),
            use_cache=True,
            logits_to_keep=1,
            **cache_kwargs(model, self.cache),
        )
        self.mask, self.cache = attention, returned_cache(out)
        return out.logits[:, -1]

    def _layers(self) -> list:
        return [layer for layer in self.cache.layers if getattr(layer, "is_initialized", False)]


def _left_pad_columns(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero columns on the left of ``dim`` up to ``width`` (mask 0: never attended to)."""
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim)


def _merge_rows(prev: torch.Tensor | None, new: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Batch states after a sub-batch prefill, packed.

    Args:
        prev: ``(B, H, T, D)`` states before the prefill (None when nothing was cached yet).
        new: ``(k, H, T + W, D)`` states of the prefilled ``rows`` (``(k,)`` batch positions).
        index: ``(B, T')`` packing index of the grown ``(B, T + W)`` mask (``right_align_index``).

    Returns:
        ``(B, H, T', D)``.
    """
    full = new.new_zeros((index.shape[0], *new.shape[1:]))
    if prev is not None:  # rows that were not prefilled keep their cached columns
        full[:, :, : prev.shape[2]] = prev
    full[rows] = new
    return gather_columns(full, index)
