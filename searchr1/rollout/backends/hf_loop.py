"""The HF backend's decode loop: continuous batching over turns with a persistent, packed KV cache.

Rows are decoded together, one token per step. A row whose turn ends (stop string, EOS or its token
limit) is handed to a callback; if the callback continues it, the inserted ids (an observation) are
prefilled into *that row's* cache columns at the next step while the other rows keep decoding, so:

- the context is never re-encoded between turns (prefix reuse);
- a row never waits for the slowest row of its turn (no turn barrier);
- finished rows leave the batch at once, and queued prompts take their place (admission);
- with a ``poll`` (see ``ReadyPoll``), a row whose continuation is pending (its search in flight) is parked:
  its cache rows are taken out of the batch, the others keep decoding, and it re-enters when its
  observation is ready.

Seeded sampling draws each row's tokens from that row's own generator (seed + row index), so a row's
tokens do not depend on which other rows share a step (re-entry times vary with search latency).

Cache layout: one ``DynamicCache`` for the batch, ``(B, H, T, D)`` per layer, every row's real columns
packed at the right end (left padding) with a ``(B, T)`` 0/1 ``mask``. A sub-batch prefill grows the
cache and re-packs it (``right_align_index``); dropping rows trims the all-padding columns.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from searchr1.distributed import Lockstep
from searchr1.rollout.backends.base import (
    PENDING,
    Continuation,
    GenerationOutput,
    ReadyPoll,
    SamplingParams,
    TurnCallback,
)
from searchr1.rollout.backends.decoding import (
    chunk_positions,
    gather_columns,
    left_pad,
    right_align_index,
    sample_next,
)

Admit = Callable[[], list[tuple[int, list[int], int, "int | None"]]]
"""``admit()``: new ``(index, prompt ids, max new tokens, seed or None)`` rows to queue (a server's requests)."""


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


class StopMatcher:
    """Finds the stop string completed by a row's newest token, checking only tokens that could complete one.

    Args:
        tokenizer: the policy tokenizer.
        stops: stop strings.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        last_chars = {s[-1] for s in self.stops}
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
        self._candidate = [any(c in t for c in last_chars) for t in texts]
        self._window = max((len(s) for s in self.stops), default=0) + 1  # a char needs at most one token

    def could_complete(self, token: int) -> bool:
        """Whether ``token``'s text contains the last character of some stop string."""
        return bool(self.stops) and 0 <= token < len(self._candidate) and self._candidate[token]

    def match(self, turn_tokens: list[int]) -> str | None:
        """The stop string now present in the turn's text (checked after each token), else None."""
        tail = self.tokenizer.decode(turn_tokens[-self._window :], skip_special_tokens=False)
        found = [s for s in self.stops if s in tail]
        return max(found, key=tail.rfind) if found else None


@dataclass
class _Row:
    """Python-side state of one batch row."""

    index: int
    pending: list[int]
    """Ids not yet in the KV cache; the decode step feeds the last one, a prefill the others."""
    max_new: int
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None
    """This row's sampling RNG (seeded sampling only)."""
    versions: list[int] = field(default_factory=list)
    """Policy version that sampled each of ``tokens`` (only with an ``on_step`` hook)."""


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


def decode_loop(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_new: list[int],
    params: SamplingParams,
    on_turn_end: TurnCallback,
    *,
    batch_size: int,
    eos_ids: set[int],
    pad_id: int,
    stops: StopMatcher | None,
    generator: torch.Generator | None,
    lockstep: Lockstep | None = None,
    poll: ReadyPoll | None = None,
    row_seed: int | None = None,
    admit: Admit | None = None,
    on_step: Callable[[], int] | None = None,
) -> int:
    """Decode every prompt until ``on_turn_end`` finishes it, at most ``batch_size`` rows at a time.

    With an active ``lockstep`` (a sharded model: every forward is a collective) the ranks agree before each step
    on whether any rank still decodes and whether any rank prefills; a rank with nothing of its own to feed runs a
    one-token dummy forward instead, so every rank runs the same forwards until the last rank's last row ends.
    With ``poll``, rows answered ``PENDING`` wait outside the batch (they count towards ``batch_size``) and
    re-enter when ``poll`` returns their continuation. With ``row_seed`` (and sampling), row ``i`` samples from its
    own generator seeded ``row_seed + i``; otherwise from ``generator``. With ``admit`` (a server's request queue),
    new prompts join the queue between steps (an admitted row with a seed gets its own generator seeded with it), and
    the loop ends when nothing is queued, decoding or parked. With ``on_step``, the hook runs before every decoding
    step (a token boundary: it may load new weights) and returns the policy version recorded for the step's tokens
    (``GenerationOutput.versions``).

    Returns:
        the number of dummy forwards this rank ran (0 without lockstep).
    """
    device = next(model.parameters()).device
    queue = deque(
        _Row(i, list(p), m, generator=_row_generator(row_seed, i)) for i, (p, m) in enumerate(zip(prompts, max_new))
    )
    cache, rows, idle = _PackedCache(device), [], 0
    parked: dict[int, tuple[_Row, _ParkedKV]] = {}
    while True:
        if admit is not None:
            queue.extend(_Row(i, list(p), m, generator=_row_generator(seed, 0)) for i, p, m, seed in admit())
        if parked:  # block only when nothing else can move (and no other rank waits on our forwards)
            block = not rows and not queue and lockstep is None
            rows = _resume(cache, rows, parked, poll(block))  # type: ignore[misc]
        admitted = [queue.popleft() for _ in range(min(batch_size - len(rows) - len(parked), len(queue)))]
        if admitted:
            cache.add_rows(len(admitted))
            rows += admitted
        feed = [p for p, row in enumerate(rows) if len(row.pending) > 1]
        active, prefill = bool(rows) or bool(parked), bool(feed)
        if lockstep is not None:
            active, prefill = (bool(v) for v in lockstep.max([int(active), int(prefill)]))
        if not active:
            return idle
        if feed:
            cache.prefill(model, feed, [rows[p].pending[:-1] for p in feed], pad_id)
        elif prefill:
            _dummy_forward(model, pad_id, device)
            idle += 1
        if not rows:
            if lockstep is not None:
                _dummy_forward(model, pad_id, device)
                idle += 1
            continue
        version = on_step() if on_step is not None else None
        logits = cache.step(model, [row.pending[-1] for row in rows])
        uniforms = _row_uniforms(rows) if params.do_sample and row_seed is not None else None
        tokens, logprobs = sample_next(
            logits, params.temperature, params.top_k, params.top_p, params.do_sample, generator, uniforms
        )
        ended = _record(rows, tokens.tolist(), logprobs.tolist(), eos_ids, stops, version)
        if ended:
            rows = _continue(cache, rows, ended, on_turn_end, parked)


def _row_generator(seed: int | None, index: int) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed + index)


def _row_uniforms(rows: list[_Row]) -> torch.Tensor:
    """One U[0, 1) draw per row from the row's own generator: ``(B,)``."""
    return torch.cat([torch.rand(1, generator=row.generator, dtype=torch.float64) for row in rows]).float()


def _resume(
    cache: _PackedCache,
    rows: list[_Row],
    parked: dict[int, tuple[_Row, _ParkedKV]],
    ready: list[tuple[int, Continuation | None]],
) -> list[_Row]:
    """Put parked rows whose continuation arrived back into the batch (or drop them when it is None)."""
    back = []
    for index, cont in ready:
        row, kv = parked.pop(index)
        if cont is not None:
            _apply_continuation(row, cont)
            back.append((row, kv))
    if back:
        cache.push_rows([kv for _, kv in back])
        rows = rows + [row for row, _ in back]
    return rows


def _apply_continuation(row: _Row, cont: Continuation) -> None:
    if cont.max_new_tokens <= 0:
        raise ValueError(f"a continuation needs max_new_tokens > 0, got {cont.max_new_tokens} (prompt {row.index})")
    row.pending = row.pending + list(cont.token_ids)
    row.max_new = cont.max_new_tokens


def _dummy_forward(model: torch.nn.Module, pad_id: int, device: torch.device) -> None:
    """A one-token forward whose output is discarded: this rank's part of a collective forward it has no data for."""
    ids = torch.full((1, 1), pad_id, dtype=torch.long, device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)


def _record(
    rows: list[_Row],
    tokens: list[int],
    logprobs: list[float],
    eos_ids: set[int],
    stops: StopMatcher | None,
    version: int | None = None,
) -> list[tuple[int, GenerationOutput]]:
    """Append each row's new token (and its policy ``version``, when known); return ``(batch position, output)`` for
    the rows whose turn just ended."""
    ended = []
    for p, (row, token, logprob) in enumerate(zip(rows, tokens, logprobs)):
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if version is not None:
            row.versions.append(version)
        row.pending = [token]
        stop = stops.match(row.tokens) if stops is not None and stops.could_complete(token) else None
        reason = "eos" if token in eos_ids else "stop" if stop is not None else None
        if reason is None and len(row.tokens) >= row.max_new:
            reason = "length"
        if reason is not None:
            versions = row.versions if version is not None else None
            ended.append((p, GenerationOutput(row.tokens, row.logprobs, reason, stop, versions)))
    return ended


def _continue(
    cache: _PackedCache,
    rows: list[_Row],
    ended: list[tuple[int, GenerationOutput]],
    on_turn_end: TurnCallback,
    parked: dict[int, tuple[_Row, _ParkedKV]],
) -> list[_Row]:
    """Ask the callback how each ended row goes on; queue its inserted ids, park it, or drop it from the batch."""
    continuations = on_turn_end([(rows[p].index, out) for p, out in ended])
    if len(continuations) != len(ended):
        raise RuntimeError(f"on_turn_end returned {len(continuations)} continuations for {len(ended)} ended turns")
    finished, waiting = set(), []
    for (p, _), cont in zip(ended, continuations):
        row = rows[p]
        row.tokens, row.logprobs, row.versions = [], [], []
        if cont is None:
            finished.add(p)
        elif cont is PENDING:
            waiting.append(p)
        else:
            _apply_continuation(row, cont)
    if waiting:
        for p, kv in zip(waiting, cache.pop_rows(waiting)):
            parked[rows[p].index] = (rows[p], kv)
        gone = set(waiting)
        rows = [row for p, row in enumerate(rows) if p not in gone]
        finished = {p - sum(w < p for w in waiting) for p in finished}
    if not finished:
        return rows
    keep = [p for p in range(len(rows)) if p not in finished]
    cache.keep_rows(keep)
    return [rows[p] for p in keep]
