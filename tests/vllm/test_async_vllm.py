"""vLLM's own OpenAI server as the asynchronous trainer's rollout server (docs/async.md, "vLLM rollout servers").

One server (``python -m vllm.entrypoints.openai.api_server`` started by :class:`VLLMServerProcesses`) on the shipped
warm start serves the whole module: the driver's token-id turns with behaviour log-probs, weight pushes by file and
through a gloo process group (the CPU twin of the NCCL group) that change its outputs to the pushed weights, a push
in the middle of a turn (two versions, each token's log-prob from the weights its label names), a short async
``fit`` on it, and last a ``fit`` whose server is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from searchr1.resources import package_path
from searchr1.rollout.backends.base import SamplingParams
from searchr1.rollout.backends.vllm_transfer import GroupWeightSender
from searchr1.rollout.backends.vllm_weights import save_unshared
from searchr1.rollout.remote import RolloutServerError
from searchr1.rollout.vllm_servers import VLLMRemoteServers, VLLMServerProcesses, free_port
from tests.training.test_async_fit import BATCH, ENV, _args

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

MODEL = package_path("pkg:assets/synthetic_warm_start")
PROMPT = "Question: Who directed the film Ed Wood?\n"


def test_the_trainer_side_and_the_extension_never_import_vllm():
    code = ("import sys, searchr1.training.async_rollout, searchr1.rollout.vllm_servers, "
            "searchr1.rollout.backends.vllm_transfer\nassert 'vllm' not in sys.modules, 'vllm imported'\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One vLLM rollout server (float32, eager, 1 thread) and its client; the processes stop after the module."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    args = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--max-num-seqs", "64"]
    start = time.perf_counter()
    procs = VLLMServerProcesses(1, str(MODEL), tmp_path_factory.mktemp("vllm-logs"), sys.executable, args, threads=1)
    print(f"\nvLLM server startup: {time.perf_counter() - start:.1f} s")
    try:
        yield procs, VLLMRemoteServers(procs.urls, timeout=120)
    finally:
        procs.close()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def _hf(perturb: float = 0.0, seed: int = 0):
    """The warm start as an HF model, its matrices perturbed by N(0, perturb^2) noise."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * perturb)
    return model


@torch.no_grad()
def _teacher_forced(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log softmax(logits) of ``tokens`` after ``prompt`` (temperature 1, full vocabulary), shape (len(tokens),)."""
    logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def _save_file(model, version: int, tmp_path) -> str:
    path = str(tmp_path / f"weights-{version}.safetensors")
    save_unshared(list(model.state_dict().items()), path)
    return path


def _push_file(servers: VLLMRemoteServers, model, version: int, tmp_path) -> None:
    servers.push_weights(_save_file(model, version, tmp_path), version)


def test_token_id_turns_carry_behaviour_logprobs_and_versions(server, tokenizer, tmp_path):
    """A turn: the stop string's tokens included, ``stop`` / ``length`` mapped, log-probs of the sampled tokens
    equal to the HF forward's full-vocabulary log-probs (raw_logprobs), every token labelled with the version."""
    _, servers = server
    model = _hf()
    _push_file(servers, model, 0, tmp_path)
    prompt = tokenizer.encode(PROMPT)
    sampled = servers.complete(prompt, SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.9, seed=3))
    assert sampled.versions == [0] * len(sampled.token_ids) and sampled.token_ids
    torch.testing.assert_close(torch.tensor(sampled.logprobs), _teacher_forced(model, prompt, sampled.token_ids),
                               atol=2e-4, rtol=1e-4)  # fmt: skip
    greedy = servers.complete(prompt, SamplingParams(max_new_tokens=12, do_sample=False))
    text = tokenizer.decode(greedy.token_ids[:4])
    stopped = servers.complete(prompt, SamplingParams(max_new_tokens=12, do_sample=False, stop=[text[-3:]]))
    assert stopped.finish_reason == "stop" and stopped.stop_string == text[-3:]
    assert tokenizer.decode(stopped.token_ids).endswith(text[-3:]) and len(stopped.token_ids) <= 4
    assert greedy.finish_reason in ("length", "eos")


@pytest.mark.parametrize("transport", ["file", "gloo"])
def test_push_makes_the_server_sample_the_pushed_weights(server, tokenizer, tmp_path, transport):
    """After a push (a safetensors file, or the gloo weight group: the NCCL code path on CPU), the server's
    log-probs are the new weights' HF log-probs, not the old ones', and its tokens carry the new version."""
    _, servers = server
    prompt = tokenizer.encode(PROMPT)
    new = _hf(perturb=0.05, seed=1 if transport == "file" else 2)
    if transport == "file":
        _push_file(servers, new, 7, tmp_path)
    else:
        sender = GroupWeightSender("gloo", "127.0.0.1", free_port(), sum(servers.worker_counts()), torch.device("cpu"),
                                   timeout=120)  # fmt: skip
        servers.join_group(sender)
        servers.push_group(sender, new.named_parameters(), 7)
    out = servers.complete(prompt, SamplingParams(max_new_tokens=16, do_sample=False))
    assert out.versions == [7] * len(out.token_ids)
    expected = _teacher_forced(new, prompt, out.token_ids)
    torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=2e-4, rtol=1e-4)
    old = _teacher_forced(_hf(), prompt, out.token_ids)
    assert (old - expected).abs().max() > 1e-2  # the push did change the log-probs


@pytest.mark.parametrize("transport", ["file", "gloo"])
def test_a_lora_policy_pushes_its_merged_weights(server, tokenizer, tmp_path, transport):
    """A LoRA policy on the warm start (the server's base model) with nonzero adapters: what a push sends
    (``pushed_state``: merged weights, the base's names), by file or through the gloo group, makes the server's
    log-probs the peft model's own."""
    from searchr1.models import load_causal_lm
    from searchr1.models.lora import LoRAConfig
    from searchr1.training.async_rollout import pushed_state

    _, servers = server
    policy = load_causal_lm(str(MODEL), torch.float32, lora=LoRAConfig(r=4)).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    state = pushed_state(policy)
    if transport == "file":
        path = str(tmp_path / "lora.safetensors")
        save_unshared(list(state.items()), path)
        servers.push_weights(path, 11)
    else:
        sender = GroupWeightSender("gloo", "127.0.0.1", free_port(), sum(servers.worker_counts()), torch.device("cpu"),
                                   timeout=120)  # fmt: skip
        servers.join_group(sender)
        servers.push_group(sender, state.items(), 11)
    prompt = tokenizer.encode(PROMPT)
    out = servers.complete(prompt, SamplingParams(max_new_tokens=16, do_sample=False))
    assert out.versions == [11] * len(out.token_ids)
    expected = _teacher_forced(policy, prompt, out.token_ids)
    torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=2e-4, rtol=1e-4)
    with policy.disable_adapter():
        assert (_teacher_forced(policy, prompt, out.token_ids) - expected).abs().max() > 1e-2


def test_a_push_mid_turn_labels_each_token_with_the_weights_that_sampled_it(server, tokenizer, tmp_path):
    """A long turn spans a push: its first tokens carry version 1 and log-probs of the old weights, the rest
    version 2 and log-probs of the new weights over the whole context (its KV is recomputed at the push)."""
    _, servers = server
    old, new = _hf(), _hf(perturb=0.05, seed=3)
    _push_file(servers, old, 1, tmp_path)
    new_path = _save_file(new, 2, tmp_path)  # written before the turn: the push itself is quick
    prompt = tokenizer.encode(PROMPT)
    params = SamplingParams(max_new_tokens=1500, temperature=1.0, seed=5)
    result: dict = {}
    turn = threading.Thread(target=lambda: result.update(out=servers.complete(prompt, params)))
    start_tokens = servers.counters()[0]["searchr1_rollout_tokens_total"]
    turn.start()
    while servers.counters()[0]["searchr1_rollout_tokens_total"] < start_tokens + 20 and turn.is_alive():
        time.sleep(0.01)
    servers.push_weights(new_path, 2)
    turn.join(120)
    out = result["out"]
    switch = out.versions.index(2) if 2 in out.versions else len(out.versions)
    print(f"\nturn of {len(out.token_ids)} tokens, push after token {switch}")
    assert out.versions == [1] * switch + [2] * (len(out.versions) - switch)
    assert 0 < switch < len(out.versions), "the turn did not span the push"
    logprobs = torch.tensor(out.logprobs)
    torch.testing.assert_close(logprobs[:switch], _teacher_forced(old, prompt, out.token_ids)[:switch],
                               atol=2e-4, rtol=1e-4)  # fmt: skip
    torch.testing.assert_close(logprobs[switch:], _teacher_forced(new, prompt, out.token_ids)[switch:],
                               atol=2e-4, rtol=1e-4)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the NCCL weight group needs 2 GPUs (trainer + server)")
def test_nccl_weight_group_pushes_into_a_gpu_server(tmp_path, tokenizer):
    """GPU twin of the gloo push: a vLLM server on GPU 1, the sender on GPU 0 (NCCL refuses two ranks on one GPU);
    after the push the server's log-probs are the new weights' (float32 engine; GPU kernels, hence 1e-3)."""
    args = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--gpu-memory-utilization", "0.3"]
    procs = VLLMServerProcesses(1, str(MODEL), tmp_path, sys.executable, args, devices=["1"])
    try:
        servers = VLLMRemoteServers(procs.urls, timeout=300)
        sender = GroupWeightSender("nccl", "127.0.0.1", free_port(), sum(servers.worker_counts()),
                                   torch.device("cuda:0"), timeout=300)  # fmt: skip
        servers.join_group(sender)
        new = _hf(perturb=0.05, seed=4)
        seconds = servers.push_group(sender, new.named_parameters(), 3)
        prompt = tokenizer.encode(PROMPT)
        out = servers.complete(prompt, SamplingParams(max_new_tokens=16, do_sample=False))
        print(f"\nNCCL push: {seconds:.3f} s")
        assert out.versions == [3] * len(out.token_ids)
        torch.testing.assert_close(torch.tensor(out.logprobs), _teacher_forced(new, prompt, out.token_ids),
                                   atol=1e-3, rtol=1e-3)  # fmt: skip
    finally:
        procs.close()


def _vllm_fit_args(tmp_path, url: str, steps: int, *extra: str) -> list[str]:
    return [*_args(tmp_path, "learn_cpu_async.yaml", steps), f"--model.async_rollout.servers=[{url}]",
            "--model.async_rollout.server_kind=vllm", *extra]  # fmt: skip


def test_async_fit_on_a_vllm_server(server, tmp_path):
    """``searchr1 fit`` (the async learning config, shortened) on the vLLM server with ``max_staleness: 1`` and the
    gloo weight group: every admitted group trained once, nothing dropped, staleness within the bound."""
    _, servers = server
    steps = 3
    args = _vllm_fit_args(tmp_path, servers.urls[0], steps, "--model.async_rollout.max_staleness=1",
                          "--model.async_rollout.weight_transport=gloo")  # fmt: skip
    proc = subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    stats = json.loads((tmp_path / "run" / "summary.json").read_text())["async"]
    assert stats["max_staleness"] == 1 and 0 <= stats["max_staleness_seen"] <= 1
    assert stats["dropped_groups"] == 0
    assert stats["trained_groups"] == stats["admitted_groups"] == steps * BATCH
    assert max(int(k) for k in stats["staleness_tokens"]) <= 1
    assert stats["server_tokens_per_second"] > 0 and 0.0 <= stats["server_idle_share"] <= 1.0
    print(f"\nasync fit on vLLM: {json.dumps(stats)}")


def test_a_killed_vllm_server_stops_fit_with_a_clear_message(server, tmp_path):
    """Last in the module: the server is killed while ``fit`` runs on it; ``fit`` exits non-zero naming it."""
    procs, servers = server
    proc = subprocess.Popen(_vllm_fit_args(tmp_path, servers.urls[0], 50), cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        start = servers.counters()[0]["searchr1_rollout_tokens_total"]
        deadline = time.monotonic() + 300
        while servers.counters()[0]["searchr1_rollout_tokens_total"] <= start + 50 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]  # type: ignore[union-attr]
            time.sleep(0.5)
        procs.procs[0].kill()
        _, stderr = proc.communicate(timeout=180)  # a hang fails here instead of waiting for ever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "rollout server" in stderr and servers.urls[0] in stderr and "stopped answering" in stderr
    with pytest.raises(RolloutServerError, match="stopped answering"):
        servers.complete([5, 6, 7], SamplingParams(max_new_tokens=2))
