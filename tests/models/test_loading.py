"""``searchr1.models.loading``: the one saver writes a loadable folder atomically; presets resolve with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from searchr1.models import TINY_PRESETS, load_causal_lm, load_tokenizer, resolve_model_path, save_hf_folder


@pytest.fixture(scope="module")
def micro():
    path = resolve_model_path("tiny:micro")
    return load_causal_lm(path), load_tokenizer(path)


def test_saved_folder_loads_back_with_the_same_weights(micro, tmp_path: Path):
    model, tok = micro
    out = save_hf_folder(model, tok, tmp_path / "hf")
    again = load_causal_lm(str(out))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert load_tokenizer(str(out)).encode("<search> x </search>") == tok.encode("<search> x </search>")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp folder left behind


def test_given_state_dict_is_what_gets_written(micro, tmp_path: Path):
    """The FSDP2 path hands in the gathered full state dict; those tensors, not the module's, are saved."""
    model, tok = micro
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    out = save_hf_folder(model, tok, tmp_path / "hf", state_dict=state)
    assert all(not v.any() for v in load_causal_lm(str(out)).state_dict().values())


def test_failed_save_keeps_the_old_folder(micro, tmp_path: Path):
    model, tok = micro
    target = save_hf_folder(model, tok, tmp_path / "hf")
    before = sorted(p.name for p in target.iterdir())

    class Broken:
        def save_pretrained(self, folder):
            (Path(folder) / "partial").write_text("half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_hf_folder(model, Broken(), target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_unknown_preset_and_missing_folder_say_what_to_give():
    with pytest.raises(ValueError, match="valid: " + ", ".join(TINY_PRESETS)):
        resolve_model_path("tiny:huge")
    with pytest.raises(FileNotFoundError, match="tiny:micro"):
        resolve_model_path("/no/such/model")
    assert resolve_model_path("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"  # hub names pass through untouched
