"""RolloutBatch layout (the contract with training), split/select/to, metrics, config validation, registry."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import RolloutBatch, RolloutConfig, Trajectory, get_backend_class
from searchr1.rollout.backends import HFBackend, ScriptedBackend

PAD = 0


def _trajs() -> list[Trajectory]:
    a = Trajectory(prompt_ids=[11, 12, 13], group_id=0, prompt_index=0, num_turns=2, num_searches=1)
    a.append([21, 22], "policy", [-0.5, -0.25])
    a.append([31, 32, 33], "observation")
    a.append([23], "policy", [-1.0])
    a.finish_reason, a.answer = "answer", "x"
    b = Trajectory(prompt_ids=[14], group_id=1, prompt_index=1, num_turns=2, invalid_actions=1)
    b.append([24], "policy", [-2.0])
    b.append([41, 42], "invalid")
    b.finish_reason = "eos"
    return [a, b]


def test_layout_left_padded_prompts_right_padded_responses() -> None:
    batch = RolloutBatch.from_trajectories(_trajs(), pad_token_id=PAD)
    assert batch.prompt_length == 3 and batch.responses.shape == (2, 6)
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 21, 22, 31, 32, 33, 23],
        [PAD, PAD, 14, 24, 41, 42, PAD, PAD, PAD],
    ]
    assert batch.attention_mask.tolist() == [[1] * 9, [0, 0, 1, 1, 1, 1, 0, 0, 0]]
    # cumsum(attention_mask) - 1, clamped at 0
    assert batch.position_ids.tolist() == [list(range(9)), [0, 0, 0, 1, 2, 3, 3, 3, 3]]
    assert batch.loss_mask.tolist() == [[1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]]
    assert batch.response_mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch.rollout_logprobs.tolist() == [[-0.5, -0.25, 0, 0, 0, -1.0], [-2.0, 0, 0, 0, 0, 0]]
    assert batch.loss_mask.dtype == batch.rollout_logprobs.dtype == torch.float32
    assert batch.input_ids.dtype == batch.attention_mask.dtype == batch.position_ids.dtype == torch.long
    assert batch.group_ids.tolist() == [0, 1] and batch.prompt_index.tolist() == [0, 1]


def test_split_select_to_keep_columns() -> None:
    batch = RolloutBatch.from_trajectories(_trajs() * 2, pad_token_id=PAD)
    parts = batch.split(3)
    assert [len(p) for p in parts] == [3, 1]
    assert all(p.prompt_length == 3 and p.loss_mask.shape[1] == 6 for p in parts)
    assert torch.equal(torch.cat([p.input_ids for p in parts]), batch.input_ids)
    sel = batch.select([3, 0])
    assert torch.equal(sel.input_ids, batch.input_ids[[3, 0]]) and sel.trajectories[0] is batch.trajectories[3]
    moved = batch.to("cpu")
    assert moved.trajectories is batch.trajectories and torch.equal(moved.loss_mask, batch.loss_mask)
    with pytest.raises(ValueError, match="micro_batch_size"):
        batch.split(0)


def test_metrics_hand_computed() -> None:
    m = RolloutBatch.from_trajectories(_trajs(), pad_token_id=PAD).metrics()
    assert m["turns_mean"] == 2.0 and m["searches_mean"] == 0.5
    assert m["valid_action_ratio"] == pytest.approx(1 - 1 / 4)  # 1 invalid of 4 turns
    assert m["obs_token_share"] == pytest.approx(1 - 4 / 9)  # 4 sampled of 9 response tokens
    assert m["finish_answer"] == 0.5 and m["finish_eos"] == 0.5 and m["finish_truncated"] == 0.0
    assert m["answered_ratio"] == 0.5 and m["response_length_mean"] == 4.5


def test_append_rejects_inconsistent_chunks() -> None:
    t = Trajectory(prompt_ids=[1])
    with pytest.raises(ValueError, match="one log-prob"):
        t.append([1, 2], "policy", [0.0])
    with pytest.raises(ValueError, match="takes no log-probs"):
        t.append([1], "observation", [0.0])
    with pytest.raises(ValueError, match="chunk kind"):
        t.append([1], "prompt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_turns": -1}, "max_turns"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"on_search_error": "ignore"}, "on_search_error"),
        ({"max_prompt_tokens": 5000}, "max_prompt_tokens"),
        ({"max_obs_tokens": 0}, "max_obs_tokens"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RolloutConfig(**kwargs)


def test_backend_registry() -> None:
    assert get_backend_class("hf") is HFBackend and get_backend_class("scripted") is ScriptedBackend
    with pytest.raises(ValueError, match="unknown generation backend 'sglang'; valid names: hf, scripted, vllm"):
        get_backend_class("sglang")
