"""An engine holding its own weights (like vLLM), with no weight-sync callback configured: every rollout of fit,
validate, test and a resumed fit samples from the policy's current weights; one engine serves training and
evaluation; the engine sleeps through the passes and the update; weights arrive as a stream."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM

from searchr1.rollout.backends.base import BACKENDS
from searchr1.rollout.backends.hf import HFBackend
from searchr1.training import SearchR1Module
from searchr1.training.callbacks import WeightSync

from .test_e2e import GRPO, CrashAt, make

EVENTS: list[str] = []
BUILT: list[CopyBackend] = []
LIVE: dict[str, torch.nn.Module] = {}  # the module's policy, to compare with the engine copy at every rollout


class CopyBackend(HFBackend):
    """An HF backend on its OWN copy of the model (like vLLM): it must be synced, and refuses work while asleep."""

    shares_policy_weights = False

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer

        assert not model.startswith("tiny:"), "presets must be resolved before reaching the engine"
        super().__init__(
            AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), AutoTokenizer.from_pretrained(model)
        )
        self.asleep = False
        self.stale_rollouts = 0
        BUILT.append(self)

    def generate_multiturn(self, *args, **kwargs) -> None:
        assert not self.asleep, "rollout while asleep"
        EVENTS.append("rollout")
        mine = self.model.state_dict()
        same = all(torch.equal(mine[n], p.detach()) for n, p in LIVE["policy"].named_parameters())
        self.stale_rollouts += int(not same)
        super().generate_multiturn(*args, **kwargs)

    def sync_weights(self, named_tensors) -> None:
        assert not self.asleep, "sync while asleep"
        assert not isinstance(named_tensors, (list, tuple, dict)), "weights must arrive as a stream"
        EVENTS.append("sync")
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, tensor in named_tensors:  # one tensor at a time
                params[name].copy_(tensor)

    def sleep(self) -> None:
        EVENTS.append("sleep")
        self.asleep = True

    def wake_up(self) -> None:
        EVENTS.append("wake")
        self.asleep = False


@pytest.fixture
def copy_backend():
    BACKENDS.register_lazy("copy-test", f"{__name__}:CopyBackend")
    EVENTS.clear()
    BUILT.clear()
    yield
    BACKENDS.unregister("copy-test")


def trainer(root, steps, callbacks=(), val_batches=1):
    return Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=val_batches,
        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=list(callbacks),
    )  # fmt: skip


def _module(model_dir, bm25, **kw):
    module, data = make(model_dir, bm25, GRPO)
    module.backend_name = "copy-test"
    module.configure_model()
    LIVE["policy"] = module.policy
    return module, data


def test_every_rollout_samples_the_current_policy_without_any_callback(tiny_model_dir, bm25, tmp_path, copy_backend):
    module, data = _module(tiny_model_dir, bm25)
    sleeping = []
    passes = module.no_grad_passes

    def checked_passes(rollout):  # the log-prob passes (and the update after them) must run asleep
        sleeping.append(module.engine(True).backend.asleep)
        return passes(rollout)

    module.no_grad_passes = checked_passes
    run = trainer(tmp_path, 2)
    run.fit(module, datamodule=data)  # validation at the epoch end runs after two updates
    assert sleeping == [True, True]
    # first rollout: pushed before; after each update: woken and pushed; validation: awake, current
    step = ["wake", "sync", "wake", "rollout", "sleep"]  # after an update: woken, pushed; (awake) rollout; asleep
    assert ["wake", "sync", "rollout", "sleep", *step, "wake", "sync", "wake", "rollout"] == EVENTS
    run.validate(module, datamodule=data)
    # plain dataloaders of QAExample (no data module): Lightning's default transfer rejects frozen dataclasses, so
    # give the module the data module's identity transfer
    module.transfer_batch_to_device = lambda batch, device, dataloader_idx: batch
    run.test(module, dataloaders=data.val_dataloader())
    (engine,) = BUILT  # one engine for training, validation and test
    assert module.engine(False).backend is module.engine(True).backend is engine
    assert engine.stale_rollouts == 0 and EVENTS.count("rollout") == 6  # 2 train, 1 + 1 val, 2 test batches
    for name, tensor in module.policy.named_parameters():  # it ends with the trained weights
        torch.testing.assert_close(engine.model.state_dict()[name], tensor.detach())


@pytest.mark.slow
def test_validate_a_trained_module_and_resume_see_the_trained_weights(tiny_model_dir, bm25, tmp_path, copy_backend):
    module, data = _module(tiny_model_dir, bm25)
    with torch.no_grad():  # "trained": every weight differs from the starting folder the engine loads
        for p in module.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer(tmp_path / "v", 1).validate(module, datamodule=data)
    assert BUILT[0].stale_rollouts == 0 and EVENTS[:3] == ["wake", "sync", "rollout"]

    first, data = _module(tiny_model_dir, bm25)  # an old config still listing WeightSync loads and works
    ckpt = ModelCheckpoint(dirpath=tmp_path / "a", save_last=True, every_n_train_steps=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(tmp_path / "a", 3, [ckpt, WeightSync(), CrashAt(2)], val_batches=0).fit(first, datamodule=data)
    resumed, data = _module(tiny_model_dir, bm25)
    EVENTS.clear()
    trainer(tmp_path / "b", 3, val_batches=0).fit(resumed, datamodule=data, ckpt_path=str(tmp_path / "a" / "last.ckpt"))
    engine = BUILT[-1]  # built after the restore, from the starting folder: stale until pushed
    assert resumed._rollout_steps == 3 and EVENTS[:3] == ["wake", "sync", "rollout"]
    assert engine.stale_rollouts == 0


def test_tiny_preset_is_resolved_before_the_engine(bm25, tmp_path, copy_backend):
    module = SearchR1Module(model_name_or_path="tiny:micro", retriever=bm25, backend="copy-test")
    module.configure_model()
    backend = module.engine(True).backend
    assert isinstance(backend, CopyBackend) and module.engine(False).backend is backend
