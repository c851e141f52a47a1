"""The weight-sync iterator on CPU: plain and DDP-wrapped policies give the plain HF names and the live tensors."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from searchr1.training.scaling import all_reduce_gradients, clean_param_name, iter_full_params


@pytest.fixture
def gloo_world_of_one(tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _changed_copy(model_dir: str):
    """The policy after an 'update' (every weight moved), so a stale engine copy would differ."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _sync_into_fresh_engine(named, model_dir: str):
    """What a generation engine does with the iterator: load each tensor by its HF name."""
    engine = AutoModelForCausalLM.from_pretrained(model_dir)
    params = dict(engine.named_parameters())
    loaded = set()
    with torch.no_grad():
        for name, tensor in named:
            params[name].copy_(tensor)
            loaded.add(name)
    assert loaded == set(params), set(params) ^ loaded
    return engine


def test_plain_policy_iterator_is_named_parameters_and_loads_into_an_engine(tiny_model_dir):
    policy = _changed_copy(tiny_model_dir)
    named = list(iter_full_params(policy))
    assert [n for n, _ in named] == [n for n, _ in policy.named_parameters()]
    assert all(t.data_ptr() == p.data_ptr() for (_, t), (_, p) in zip(named, policy.named_parameters())), "no copies"
    engine = _sync_into_fresh_engine(named, tiny_model_dir)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    assert torch.equal(engine(input_ids=ids).logits, policy(input_ids=ids).logits)


def test_ddp_wrapped_policy_yields_names_without_wrapper_prefix(tiny_model_dir, gloo_world_of_one):
    policy = _changed_copy(tiny_model_dir)
    wrapped = torch.nn.parallel.DistributedDataParallel(policy)
    named = list(iter_full_params(wrapped))
    assert [n for n, _ in named] == [n for n, _ in policy.named_parameters()]
    assert all(torch.equal(t, p) for (_, t), p in zip(named, policy.parameters()))


def test_clean_param_name_strips_every_wrapper():
    name = "module._fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.mlp.weight"
    assert clean_param_name(name) == "model.layers.0.mlp.weight"
    assert clean_param_name("model.submodule.x") == "model.submodule.x"  # 'module.' only as the DDP prefix


def test_all_reduce_gradients_on_one_rank_keeps_grads_and_fills_missing(gloo_world_of_one):
    a, b, frozen = (torch.nn.Parameter(torch.ones(n)) for n in (3, 2, 1))
    frozen.requires_grad_(False)
    a.grad = torch.tensor([1.0, 2.0, 3.0])
    all_reduce_gradients([a, b, frozen], world_size=1, bucket_numel=2)
    assert a.grad.tolist() == [1.0, 2.0, 3.0]
    assert b.grad.tolist() == [0.0, 0.0]  # no gradient on this rank: joins the all-reduce with zeros
    assert frozen.grad is None


def test_fsdp2_policy_on_one_rank_yields_plain_names_and_full_tensors(tiny_model_dir, gloo_world_of_one):
    from torch.distributed.device_mesh import init_device_mesh

    from searchr1.training.sharding import fsdp2_shard, full_state_dict, is_fsdp2

    plain = _changed_copy(tiny_model_dir)
    sharded = fsdp2_shard(copy.deepcopy(plain), init_device_mesh("cpu", (1,)))
    assert is_fsdp2(sharded) and not is_fsdp2(plain)
    named = list(iter_full_params(sharded))
    assert [n for n, _ in named] == [n for n, _ in plain.named_parameters()]
    assert all(torch.equal(t, p) for (_, t), p in zip(named, plain.parameters()))
    state = full_state_dict(sharded)
    assert set(state) == set(plain.state_dict()) and all(
        torch.equal(state[k], v) for k, v in plain.state_dict().items()
    )


def test_lockstep_with_one_process_is_the_identity_and_raises_locally():
    from searchr1.distributed import Lockstep

    lockstep = Lockstep()
    assert not lockstep.active
    assert lockstep.max([3, 0]) == [3, 0] and lockstep.any(True) and not lockstep.any(False)
    lockstep.raise_together(None)
    with pytest.raises(FloatingPointError, match="^policy loss is nan$"):
        lockstep.raise_together("policy loss is nan")
