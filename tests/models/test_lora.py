"""``searchr1.models.lora``: the adapters-off reference is the base model, merging is exact, exports reload plainly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from searchr1.errors import UserError
from searchr1.models import LoRAConfig, frozen_reference, is_lora, load_causal_lm, load_tokenizer, save_hf_folder
from searchr1.models.lora import AdaptersOff, drop_frozen_weights, merge_lora_stream, merged_state
from searchr1.training.forward import response_logprobs
from searchr1.training.scaling import iter_full_params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    from searchr1.models.tiny import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def _trained_lora(model_dir: str, seed: int = 0):
    """A LoRA policy whose adapters are not zero (as after training): ``lora_B`` drawn at random."""
    policy = load_causal_lm(model_dir, lora=LoRAConfig(r=4, alpha=8))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return policy


def _logprobs(model, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 200, (3, 20), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded prompt
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return response_logprobs(model, ids, mask, positions, prompt_length=12)[0]  # (3, 8)


def test_reference_is_the_base_model_with_adapters_off(model_dir):
    base = load_causal_lm(model_dir)
    policy = _trained_lora(model_dir)
    reference = frozen_reference(policy)
    assert isinstance(reference, AdaptersOff) and reference.policy is policy  # no second copy of the weights
    assert sum(p.numel() for p in reference.parameters()) == sum(p.numel() for p in policy.parameters())
    torch.testing.assert_close(_logprobs(reference), _logprobs(base), rtol=0, atol=1e-6)
    assert not torch.allclose(_logprobs(policy), _logprobs(base), atol=1e-3)  # the adapters do change the policy
    reference.eval()  # the reference's mode never reaches the policy (the training loop owns it)
    assert policy.training


def test_only_adapters_train_and_fresh_adapters_change_nothing(model_dir):
    base = load_causal_lm(model_dir)
    policy = load_causal_lm(model_dir, lora=LoRAConfig(r=4))
    assert is_lora(policy) and not is_lora(base)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    torch.testing.assert_close(_logprobs(policy), _logprobs(base), rtol=0, atol=0)  # B = 0 at the start


def test_adapter_init_follows_its_seed_not_the_global_rng(model_dir):
    def adapters(cfg):
        return {n: p for n, p in load_causal_lm(model_dir, lora=cfg).named_parameters() if p.requires_grad}

    first = adapters(LoRAConfig(r=4))
    torch.rand(1000)  # a run that consumed global random numbers first (a resumed run, another rank)
    again, other = adapters(LoRAConfig(r=4)), adapters(LoRAConfig(r=4, seed=1))
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first if ".lora_A." in n)


def test_merge_stream_by_hand():
    # W (2, 2) = I, A (1, 2) = [1, 2], B (2, 1) = [[1], [-1]], scaling 0.5: W' = I + 0.5 * [[1, 2], [-1, -2]]
    stream = [
        ("base_model.model.embed.weight", torch.ones(3)),
        ("base_model.model.l.q.base_layer.weight", torch.eye(2)),
        ("base_model.model.l.q.base_layer.bias", torch.zeros(2)),
        ("base_model.model.l.q.lora_A.default.weight", torch.tensor([[1.0, 2.0]])),
        ("base_model.model.l.q.lora_B.default.weight", torch.tensor([[1.0], [-1.0]])),
    ]
    merged = dict(merge_lora_stream(stream, 0.5))
    assert list(merged) == ["embed.weight", "l.q.bias", "l.q.weight"]
    assert merged["l.q.weight"].tolist() == [[1.5, 1.0], [-0.5, 0.0]]
    with pytest.raises(ValueError, match="without all of"):
        list(merge_lora_stream(stream[:4], 0.5))


@pytest.mark.parametrize(
    ("targets", "match"),
    [(["embed_tokens", "q_proj"], r"adapts model\.embed_tokens \(Embedding\): only nn\.Linear"),
     (["lm_head"], r"adapts lm_head, the output head tied to the input embeddings")],
)  # fmt: skip
def test_adapters_that_cannot_be_merged_are_refused_at_load(model_dir, targets, match):
    with pytest.raises(UserError, match=match):
        load_causal_lm(model_dir, lora=LoRAConfig(r=2, target_modules=targets))


def test_merged_state_drains_its_input():
    """A push's gathered state is replaced by the merged one, not held next to it: each entry leaves the input as it
    enters the merge (``W + 0.5 B A`` as in the hand-computed stream above)."""
    state = {
        "base_model.model.l.q.base_layer.weight": torch.eye(2),
        "base_model.model.l.q.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),
        "base_model.model.l.q.lora_B.default.weight": torch.tensor([[1.0], [-1.0]]),
        "base_model.model.norm.weight": torch.ones(2),
    }
    merged = merged_state(state, 0.5)
    assert state == {}
    assert sorted(merged) == ["l.q.weight", "norm.weight"]
    assert merged["l.q.weight"].tolist() == [[1.5, 1.0], [-0.5, 0.0]]


def test_engine_weights_are_the_merged_model(model_dir):
    """What a separate engine (vLLM) receives: the plain model's names, merged weights, same log-probs."""
    policy = _trained_lora(model_dir)
    plain = load_causal_lm(model_dir)
    params = dict(iter_full_params(policy))
    assert set(params) == {n for n, _ in plain.named_parameters()}
    plain.load_state_dict(params, strict=False)
    torch.testing.assert_close(_logprobs(plain), _logprobs(policy), rtol=0, atol=1e-5)


def test_merged_export_reloads_with_plain_automodel(model_dir, tmp_path):
    from peft import PeftModel

    policy = _trained_lora(model_dir)
    out = save_hf_folder(policy, load_tokenizer(model_dir), tmp_path / "hf")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not is_lora(merged) and (out / "adapter" / "adapter_config.json").is_file()
    torch.testing.assert_close(_logprobs(merged), _logprobs(policy), rtol=0, atol=1e-5)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter")
    torch.testing.assert_close(_logprobs(adapted), _logprobs(policy), rtol=0, atol=1e-6)


def test_checkpoint_state_keeps_only_what_trains(model_dir):
    policy = _trained_lora(model_dir)
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    state["other.weight"] = torch.zeros(1)
    drop_frozen_weights(state, {"policy.": policy, "critic.": None})
    lora_names = {f"policy.{n}" for n, p in policy.named_parameters() if p.requires_grad}
    assert set(state) == lora_names | {"other.weight"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "positive rank"),
        ({"alpha": -1.0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": []}, "empty"),
    ],
)
def test_bad_lora_settings_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoRAConfig(**kwargs)
    assert LoRAConfig(r=8).scaling == 2.0 and LoRAConfig(r=8, alpha=8).scaling == 1.0


def test_critic_with_lora_trains_adapters_and_value_head(model_dir):
    from searchr1.models import ValueModel

    plain = ValueModel(model_dir, seed=0)
    critic = ValueModel(model_dir, seed=0, lora=LoRAConfig(r=4))
    trainable = {n for n, p in critic.named_parameters() if p.requires_grad}
    assert {"value_head.weight", "value_head.bias"} <= trainable
    assert all(n.startswith("value_head.") or ".lora_" in n for n in trainable)
    ids = torch.randint(5, 200, (2, 9))
    args = (ids, torch.ones_like(ids), torch.arange(9).expand(2, 9))
    with torch.no_grad():
        torch.testing.assert_close(critic(*args), plain(*args), rtol=0, atol=1e-6)  # B = 0: the same values
