"""Loading a policy from a model folder or a SearchR1Module-style checkpoint, and building retrievers."""

from __future__ import annotations

import pytest
import torch

from searchr1.evaluation import build_retriever, load_policy
from searchr1.retrieval import BM25Retriever

from .conftest import HOTPOTQA_CORPUS


def _write_ckpt(path, tiny_dir, state, **hparams):
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"model_name_or_path": tiny_dir, "tokenizer": None, "dtype": None, **hparams},
            "epoch": 0,
        },
        path,
    )


def test_checkpoint_policy_weights_replace_the_base_weights(tiny_dir, tmp_path) -> None:
    base = load_policy(tiny_dir, device="cpu")
    trained = {f"policy.{k}": v + 0.5 for k, v in base.model.state_dict().items()}
    trained["critic.value_head.weight"] = torch.ones(1, 4)  # other modules' weights are ignored
    ckpt = tmp_path / "last.ckpt"
    _write_ckpt(ckpt, tiny_dir, trained, use_chat_template=False)

    loaded = load_policy(str(ckpt), device="cpu")
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, base.model.state_dict()[name] + 0.5)
    assert loaded.base_model == tiny_dir and loaded.source == str(ckpt)
    assert loaded.use_chat_template is False and base.use_chat_template is True
    assert loaded.model.config.use_cache and not loaded.model.training
    ids = torch.tensor([[5, 6, 7]])
    assert not torch.allclose(loaded.model(ids).logits, base.model(ids).logits)


def test_bad_checkpoints_are_explained(tiny_dir, tmp_path) -> None:
    base = load_policy(tiny_dir, device="cpu").model.state_dict()
    no_policy = tmp_path / "a.ckpt"
    _write_ckpt(no_policy, tiny_dir, {"critic.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="no state_dict entries under 'policy.'"):
        load_policy(str(no_policy))
    partial = tmp_path / "b.ckpt"
    _write_ckpt(partial, tiny_dir, {f"policy.{k}": v for k, v in list(base.items())[:3]})
    with pytest.raises(ValueError, match="do not fit"):
        load_policy(str(partial))
    torch.save({"state_dict": {}}, tmp_path / "c.ckpt")
    with pytest.raises(ValueError, match="model_name_or_path"):
        load_policy(str(tmp_path / "c.ckpt"))
    with pytest.raises(FileNotFoundError):
        load_policy(str(tmp_path / "missing.ckpt"))


def test_build_retriever(tmp_path) -> None:
    assert build_retriever() is None
    bm25 = build_retriever(corpus=str(HOTPOTQA_CORPUS))
    assert isinstance(bm25, BM25Retriever) and bm25.search(["Ed Wood"], 1)[0][0].title
    with pytest.raises(ValueError, match="one of"):
        build_retriever(corpus=str(HOTPOTQA_CORPUS), url="http://127.0.0.1:1")
    with pytest.raises(FileNotFoundError):
        build_retriever(corpus=str(tmp_path / "none.jsonl"))
    index = tmp_path / "index"
    built = build_retriever(corpus=str(HOTPOTQA_CORPUS), index_dir=str(index))  # builds, then reopens
    reopened = build_retriever(index_dir=str(index))
    assert [p.id for p in reopened.search(["Ed Wood"], 3)[0]] == [p.id for p in built.search(["Ed Wood"], 3)[0]]
