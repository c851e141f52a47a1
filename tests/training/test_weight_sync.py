"""WeightSync with an engine holding its own weights: asleep during the passes and the update, awake with the
new weights for every rollout."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from searchr1.rollout.backends.base import BACKENDS
from searchr1.rollout.backends.hf import HFBackend
from searchr1.training.callbacks import WeightSync

from .test_e2e import GRPO, make, trainer

EVENTS: list[str] = []


class CopyBackend(HFBackend):
    """An HF backend on its OWN copy of the model (like vLLM): it must be synced, and refuses work while asleep."""

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer

        super().__init__(
            AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), AutoTokenizer.from_pretrained(model)
        )
        self.asleep = False

    def generate_multiturn(self, *args, **kwargs) -> None:
        assert not self.asleep, "rollout while asleep"
        EVENTS.append("rollout")
        super().generate_multiturn(*args, **kwargs)

    def sync_weights(self, named_tensors) -> None:
        assert not self.asleep, "sync while asleep"
        EVENTS.append("sync")
        missing, unexpected = self.model.load_state_dict(dict(named_tensors), strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}  # a tied head follows the embedding

    def sleep(self) -> None:
        EVENTS.append("sleep")
        self.asleep = True

    def wake_up(self) -> None:
        EVENTS.append("wake")
        self.asleep = False


def test_engine_sleeps_through_the_update_and_rolls_out_with_synced_weights(tiny_model_dir, bm25, tmp_path):
    BACKENDS["copy-test"] = f"{__name__}:CopyBackend"
    try:
        module, data = make(tiny_model_dir, bm25, GRPO)
        module.backend_name = "copy-test"
        sleeping_updates = []
        passes = module.no_grad_passes

        def checked_passes(rollout):  # the log-prob passes (and the update after them) must run asleep
            sleeping_updates.append(module.engine(True).backend.asleep)
            return passes(rollout)

        module.no_grad_passes = checked_passes
        EVENTS.clear()
        trainer(tmp_path, 2, callbacks=[WeightSync()]).fit(module, datamodule=data)
        assert sleeping_updates == [True, True]  # the log-prob passes and the update ran with the engine asleep
        assert EVENTS[:8] == ["wake", "rollout", "sleep", "wake", "sync", "wake", "rollout", "sleep"]
        copy = module.engine(True).backend.model.state_dict()
        for name, tensor in module.policy.state_dict().items():  # the engine ends with the trained weights
            torch.testing.assert_close(copy[name], tensor.detach().cpu())
    finally:
        del BACKENDS["copy-test"]
