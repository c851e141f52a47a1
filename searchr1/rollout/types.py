"""Rollout containers: one ``Trajectory`` per sample and the padded ``RolloutBatch`` handed to training.

Layout contract with the training module (B trajectories, P = longest prompt, R = longest response):
prompts are LEFT-padded to P, responses RIGHT-padded to R, so ``input_ids[:, P:]`` are the responses.
Masks are written by the engine as each chunk is appended (``Trajectory.append``), never reconstructed
from decoded text. Trajectories are saved as JSONL of exact token ids and mask (:func:`save_trajectories`, e.g. the
SFT data) and read back with their chunks (:func:`load_trajectories`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

CHUNK_KINDS = ("policy", "observation", "invalid")


@dataclass
class Trajectory:
    """One multi-turn sample as exact token ids (lists of length T = response length).

    Attributes:
        prompt_ids: prompt token ids (after ``max_prompt_tokens`` left-truncation).
        response_ids: every response token: sampled turns, observations, invalid-action messages.
        loss_mask: 1 on tokens the policy sampled, 0 on observation / invalid-action tokens.
        logprobs: backend sampling log-prob of each sampled token; 0.0 where ``loss_mask`` is 0.
        chunks: ``(start, end, kind)`` response spans in append order, kind in ``CHUNK_KINDS``.
        num_turns: generation turns run.
        num_searches: searches executed (including failed ones).
        queries: the query of each executed search.
        doc_ids: retrieved passage ids per executed search ([] for a failed one).
        finish_reason: ``"answer"``, ``"eos"``, ``"max_turns"``, ``"length"`` or ``"truncated"``.
        response_text: decoded ``response_ids`` (special tokens kept).
        policy_texts: decoded ids of each policy chunk, in order (what the policy sampled, turn by turn).
        answer: content of the answer action, when the trajectory ended with one.
        search_failures: searches whose retriever call failed.
        invalid_actions: turns without a valid action (invalid-action text appended).
        group_id: GRPO group (= prompt index; the n samples of a prompt share it).
        prompt_index: index of the prompt in the ``generate`` call.
        versions: policy version that sampled each response token (-1 where ``loss_mask`` is 0); empty when the
            backend does not report versions (in-process generation: all tokens by the current weights).
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    chunks: list[tuple[int, int, str]] = field(default_factory=list)
    num_turns: int = 0
    num_searches: int = 0
    queries: list[str] = field(default_factory=list)
    doc_ids: list[list[str]] = field(default_factory=list)
    finish_reason: str | None = None
    response_text: str = ""
    policy_texts: list[str] = field(default_factory=list)
    answer: str | None = None
    search_failures: int = 0
    invalid_actions: int = 0
    group_id: int = 0
    prompt_index: int = 0
    versions: list[int] = field(default_factory=list)

    def append(
        self,
        ids: Sequence[int],
        kind: str,
        logprobs: Sequence[float] | None = None,
        versions: Sequence[int] | None = None,
    ) -> None:
        """Append one chunk with its mask and log-probs (the only way tokens enter a trajectory).

        Args:
            ids: token ids of the chunk.
            kind: ``"policy"`` (sampled; mask 1, needs ``logprobs``) or ``"observation"``/``"invalid"``
                (inserted text; mask 0, log-probs 0.0).
            logprobs: one sampling log-prob per id, for policy chunks only.
            versions: the policy version that sampled each id (policy chunks from a rollout server); once a
                trajectory has versions, inserted chunks get -1 and every later policy chunk must bring them.
        """
        if kind not in CHUNK_KINDS:
            raise ValueError(f"chunk kind must be one of {CHUNK_KINDS}, got {kind!r}")
        sampled = kind == "policy"
        if sampled and (logprobs is None or len(logprobs) != len(ids)):
            raise ValueError("a policy chunk needs exactly one log-prob per sampled token")
        if not sampled and logprobs is not None:
            raise ValueError(f"a {kind} chunk was not sampled and takes no log-probs")
        if versions is not None and (not sampled or len(versions) != len(ids)):
            raise ValueError("versions are given for policy chunks only, one per sampled token")
        if not ids:
            return
        if versions is not None or self.versions:
            if sampled and versions is None:
                raise ValueError("this trajectory records policy versions: a policy chunk needs one per token")
            if not self.versions:
                self.versions = [-1] * len(self.response_ids)
            self.versions.extend([int(v) for v in versions] if versions is not None else [-1] * len(ids))
        start = len(self.response_ids)
        self.response_ids.extend(int(i) for i in ids)
        self.loss_mask.extend([1 if sampled else 0] * len(ids))
        if sampled:
            self.logprobs.extend(float(x) for x in logprobs)
        else:
            self.logprobs.extend([0.0] * len(ids))
        self.chunks.append((start, len(self.response_ids), kind))

    @property
    def total_tokens(self) -> int:
        """Prompt plus response length."""
        return len(self.prompt_ids) + len(self.response_ids)

    def inserted_after_last_turn(self) -> list[int]:
        """The ids appended after the last sampled chunk (its observation or invalid-action text)."""
        end = max((stop for _, stop, kind in self.chunks if kind == "policy"), default=0)
        return self.response_ids[end:]

    @property
    def done(self) -> bool:
        """True once a finish reason is set."""
        return self.finish_reason is not None


def _pad_rows(rows: list[list], width: int, value: float, left: bool, dtype: torch.dtype) -> torch.Tensor:
    """Stack ragged rows into a (len(rows), width) tensor padded with ``value`` on the left or right."""
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(row, dtype=dtype)
            if left:
                out[i, width - len(row) :] = values
            else:
                out[i, : len(row)] = values
    return out


class RowBatch:
    """Row operations shared by the padded per-sample containers (:class:`RolloutBatch`, the update's
    ``UpdateBatch``): dataclasses whose tensor fields all have B rows, ``input_ids`` (B, P+R) and ``loss_mask``
    (B, R) among them. Optional tensor fields that are None stay None.
    """

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        """P, the number of (left-padded) prompt columns."""
        return self.input_ids.shape[1] - self.loss_mask.shape[1]

    def _tensor_fields(self) -> list[str]:
        return [f.name for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)]

    def _select_rows(self, index: torch.Tensor) -> dict:
        """Rows ``index`` of the per-row fields that are not tensors (none here)."""
        return {}

    def to(self, device: torch.device | str):
        """A copy with every tensor on ``device`` (other fields are shared)."""
        return replace(self, **{name: getattr(self, name).to(device) for name in self._tensor_fields()})

    def select(self, indices: Sequence[int] | torch.Tensor):
        """Rows ``indices`` of every per-row field (same P and R columns; scalars such as timings are kept)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        tensors = {
            n: getattr(self, n).index_select(0, index.to(getattr(self, n).device)) for n in self._tensor_fields()
        }
        return replace(self, **tensors, **self._select_rows(index))

    def split(self, micro_batch_size: int) -> list:
        """Consecutive row chunks of at most ``micro_batch_size`` rows (P and R unchanged)."""
        if micro_batch_size <= 0:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        return [
            self.select(range(s, min(s + micro_batch_size, len(self)))) for s in range(0, len(self), micro_batch_size)
        ]


@dataclass
class RolloutBatch(RowBatch):
    """Padded rollout tensors (B trajectories, P prompt columns, R response columns).

    Attributes:
        input_ids: (B, P+R) long; prompts left-padded, responses right-padded with ``pad_token_id``.
        attention_mask: (B, P+R) long; 1 on real tokens, 0 on pad.
        position_ids: (B, P+R) long; ``cumsum(attention_mask) - 1`` clamped at 0.
        loss_mask: (B, R) float; 1 only on tokens the policy sampled.
        response_mask: (B, R) float; 1 on every real response token (observations included).
        rollout_logprobs: (B, R) float; sampling log-probs, 0 where ``loss_mask`` is 0 (None: dropped, as the
            no-masking ablation does, so no rollout correction applies). From rollout servers these are the
            behaviour log-probs of the (possibly older) policy version that sampled each token.
        group_ids: (B,) long; GRPO group of each row.
        prompt_index: (B,) long; prompt index of each row in the generate call.
        trajectories: the B trajectories, in row order.
        generation_seconds: wall time spent in the backend.
        retrieval_seconds: wall time spent in the retriever.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    response_mask: torch.Tensor
    rollout_logprobs: torch.Tensor | None
    group_ids: torch.Tensor
    prompt_index: torch.Tensor
    trajectories: list[Trajectory]
    generation_seconds: float = 0.0
    retrieval_seconds: float = 0.0
    token_versions: torch.Tensor | None = None
    """(B, R) long; policy version that sampled each token, -1 where not sampled (None: in-process rollout)."""

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory], pad_token_id: int) -> RolloutBatch:
        """Pad ``trajectories`` into the batch layout described in the class docstring."""
        if not trajectories:
            raise ValueError("RolloutBatch.from_trajectories needs at least one trajectory")
        trajs = list(trajectories)
        p = max(len(t.prompt_ids) for t in trajs)
        r = max(len(t.response_ids) for t in trajs)
        prompts = _pad_rows([t.prompt_ids for t in trajs], p, pad_token_id, True, torch.long)
        responses = _pad_rows([t.response_ids for t in trajs], r, pad_token_id, False, torch.long)
        prompt_att = _pad_rows([[1] * len(t.prompt_ids) for t in trajs], p, 0, True, torch.long)
        response_mask = _pad_rows([[1] * len(t.response_ids) for t in trajs], r, 0, False, torch.long)
        attention_mask = torch.cat([prompt_att, response_mask], dim=1)
        return cls(
            input_ids=torch.cat([prompts, responses], dim=1),
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(dim=1) - 1).clamp(min=0),
            loss_mask=_pad_rows([t.loss_mask for t in trajs], r, 0.0, False, torch.float32),
            response_mask=response_mask.float(),
            rollout_logprobs=_pad_rows([t.logprobs for t in trajs], r, 0.0, False, torch.float32),
            group_ids=torch.tensor([t.group_id for t in trajs], dtype=torch.long),
            prompt_index=torch.tensor([t.prompt_index for t in trajs], dtype=torch.long),
            trajectories=trajs,
            token_versions=(
                _pad_rows([t.versions for t in trajs], r, -1, False, torch.long)
                if any(t.versions for t in trajs)
                else None
            ),
        )

    @property
    def responses(self) -> torch.Tensor:
        """(B, R) response ids (right-padded)."""
        return self.input_ids[:, self.prompt_length :]

    def _select_rows(self, index: torch.Tensor) -> dict:
        return {"trajectories": [self.trajectories[i] for i in index.tolist()]}

    def metrics(self) -> dict[str, float]:
        """Rollout statistics: turns, searches, valid actions, observation share, finish reasons, timings."""
        trajs = self.trajectories
        b = len(trajs)
        turns = sum(t.num_turns for t in trajs)
        response_tokens = float(self.response_mask.sum())
        out = {
            "turns_mean": turns / b,
            "searches_mean": sum(t.num_searches for t in trajs) / b,
            "valid_action_ratio": 1.0 - sum(t.invalid_actions for t in trajs) / max(turns, 1),
            "obs_token_share": 1.0 - float(self.loss_mask.sum()) / max(response_tokens, 1.0),
            "search_failures": float(sum(t.search_failures for t in trajs)),
            "search_failure_rate": sum(t.search_failures for t in trajs) / max(sum(t.num_searches for t in trajs), 1),
            "response_length_mean": response_tokens / b,
            "prompt_length_mean": sum(len(t.prompt_ids) for t in trajs) / b,
            "answered_ratio": sum(t.answer is not None for t in trajs) / b,
            "generation_seconds": self.generation_seconds,
            "retrieval_seconds": self.retrieval_seconds,
        }
        reasons = Counter(t.finish_reason for t in trajs)
        for reason in ("answer", "eos", "max_turns", "length", "truncated"):
            out[f"finish_{reason}"] = reasons.get(reason, 0) / b
        return out


def save_trajectories(trajectories: Iterable[Trajectory], path: str | Path) -> Path:
    """Write one JSON line per trajectory: ``prompt_ids``, ``response_ids``, ``loss_mask`` (+ text, for reading)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for t in trajectories:
            row = {"prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "loss_mask": t.loss_mask}
            f.write(json.dumps({**row, "response_text": t.response_text}) + "\n")
    return path


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Read :func:`save_trajectories` JSONL back; chunks are rebuilt from runs of equal ``loss_mask``."""
    trajs = []
    with Path(path).open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            ids, mask = row.get("response_ids"), row.get("loss_mask")
            if ids is None or mask is None or "prompt_ids" not in row or len(ids) != len(mask):
                raise ValueError(
                    f"{path}:{n}: an SFT row needs prompt_ids, response_ids and loss_mask of the same length "
                    "(write it with searchr1.rollout.types.save_trajectories)"
                )
            traj = Trajectory(prompt_ids=list(row["prompt_ids"]), prompt_index=len(trajs))
            start = 0
            for end in range(1, len(ids) + 1):
                if end == len(ids) or mask[end] != mask[start]:
                    chunk = ids[start:end]
                    if mask[start]:
                        traj.append(chunk, "policy", [0.0] * len(chunk))
                    else:
                        traj.append(chunk, "observation")
                    start = end
            traj.response_text = row.get("response_text", "")
            trajs.append(traj)
    return trajs
