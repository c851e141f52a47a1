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

Cache layout: see :mod:`searchr1.rollout.backends.packed_cache`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from searchr1.distributed import Lockstep
from searchr1.rollout.backends.base import (
    PENDING,
    Continuation,
    GenerationOutput,
    ReadyPoll,
    SamplingParams,
    TurnCallback,
)
from searchr1.rollout.backends.decoding import sample_next
from searchr1.rollout.backends.packed_cache import _PackedCache, _ParkedKV

Admit = Callable[[], list[tuple[int, list[int], int, "int | None"]]]
"""``admit()``: new ``(index, prompt ids, max new tokens, seed or None)`` rows to queue (a server's requests)."""


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
