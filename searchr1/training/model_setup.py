"""Model setup of :class:`~searchr1.training.module.SearchR1Module` (a mixin): checks, models, optimizers.

Before any model is loaded every rank checks the strategy/hardware/batch layout (:func:`check_setup`), the
behaviour log-probs and the retriever; ``configure_model`` then loads the policy, the frozen reference and the
critic (LoRA adapters when ``lora`` is set; sharded under FSDP2), and ``configure_optimizers`` builds their
optimizers. The state it reads (``hparams``, ``algorithm``, ``lora``, ...) is set by ``SearchR1Module.__init__``.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info

from searchr1.models import ValueModel, frozen_reference, load_causal_lm, load_tokenizer
from searchr1.retrieval import Retriever
from searchr1.training.engine_weights import check_behaviour_logprobs
from searchr1.training.optim import build_optimizers, warmup_steps
from searchr1.training.scaling import ScaleSetup, check_setup, strategy_kind
from searchr1.training.search_health import check_retriever
from searchr1.training.sharding import is_fsdp2, shard_for_training


class ModelSetupMixin:
    """``setup``, ``configure_model`` and ``configure_optimizers`` of the training module, and its lazy tokenizer."""

    @property
    def reference(self) -> torch.nn.Module | None:
        """The frozen reference policy (KL), or None.

        Deliberately not a registered submodule: it never enters the state dict, so checkpoints (single-file or
        FSDP2 distributed) hold only what trains, Lightning's precision/device moves leave it alone, and it is
        rebuilt from the starting weights at load.
        """
        return self._frozen.get("reference")

    @property
    def tokenizer(self):
        """The policy tokenizer (left padding), loaded on first use."""
        if self._tokenizer is None:
            hp = self.hparams
            self._tokenizer = load_tokenizer(hp.tokenizer or hp.model_name_or_path, chat_template=hp.chat_template)
        return self._tokenizer

    def setup(self, stage: str) -> None:
        """Check the strategy/hardware/batch layout on every rank before any model is loaded."""
        if self._trainer is None:
            return
        check_setup(self.scale_setup(self.trainer))
        check_behaviour_logprobs(self.backend_name, self.backend_kwargs, self.rollout_config)
        check_retriever(self.retriever, self.trainer.strategy)  # a dead retrieval server: refuse to start
        cfg = self.algorithm
        rank_zero_info(f"searchr1: estimator {cfg.estimator}, KL path {cfg.kl_path} ({cfg.kl_kind}, β={cfg.kl_coef})")

    def scale_setup(self, trainer) -> ScaleSetup:
        """What :func:`~searchr1.training.scaling.check_setup` needs, read from ``trainer`` and this module."""
        datamodule = getattr(trainer, "datamodule", None)
        return ScaleSetup(
            strategy=strategy_kind(trainer.strategy),
            accelerator="cpu" if type(trainer.accelerator).__name__ == "CPUAccelerator" else "gpu",
            backend=self.backend_name,
            estimator=self.algorithm.estimator,
            needs_critic=self.algorithm.needs_critic,
            critic_name_or_path=self.hparams.critic_name_or_path,
            batch_size=getattr(datamodule, "batch_size", None),
            n_samples=self.algorithm.n_samples,
            mini_batch_size=self.algorithm.mini_batch_size,
            precision=str(trainer.precision),
            dtype=self.hparams.dtype,
            policy_lr=self.hparams.policy_lr,
            lora=self.lora is not None,
        )

    def configure_model(self) -> None:
        """Load policy, reference and critic (once; Lightning calls this before restoring a checkpoint).

        Under FSDP2 (``ModelParallelStrategy``/``fsdp2``: ``self.device_mesh`` is set) each model is sharded with
        ``fully_shard`` per decoder layer, then the root; parameters stay fp32 shards (the optimizer's masters) and
        compute runs in bf16 under ``trainer.precision: bf16-mixed`` (``MixedPrecisionPolicy``, fp32 gradient
        reduction). The reference is sharded too and never stepped.
        """
        if self.policy is not None:
            return
        hp = self.hparams
        dtype = getattr(torch, hp.dtype) if hp.dtype else None
        policy = load_causal_lm(hp.model_name_or_path, dtype, hp.gradient_checkpointing, lora=self.lora).train()
        reference = frozen_reference(policy) if self.algorithm.uses_reference else None
        critic = None
        if self.algorithm.needs_critic:
            path = hp.critic_name_or_path or hp.model_name_or_path
            critic = ValueModel(path, dtype, hp.gradient_checkpointing, seed=hp.seed, lora=self.lora).train()
        if self.device_mesh is not None:  # FSDP2: fp32 shards, compute in the precision's dtype
            policy, reference, critic = shard_for_training(
                self.device_mesh, str(self.trainer.precision), policy, reference, critic, hp.reference_cpu_offload
            )
        self.policy, self.critic = policy, critic
        if reference is not None:
            self._frozen["reference"] = reference
        if self.retriever is None:
            self.retriever = _default_retriever()

    def _move_reference(self) -> None:
        """Put an unsharded reference on this module's device (FSDP2 placed sharded ones already)."""
        ref = self.reference
        if ref is not None and not is_fsdp2(ref):
            device = next(ref.parameters()).device
            if device != self.device:
                self._frozen["reference"] = ref.to(self.device)

    def configure_optimizers(self):
        hp = self.hparams
        try:
            total = self.trainer.estimated_stepping_batches
        except Exception:  # no trainer attached (plain use) or unknown length
            total = None
        return build_optimizers(
            self.policy,
            self.critic,
            policy_lr=hp.policy_lr,
            critic_lr=hp.critic_lr,
            weight_decay=hp.weight_decay,
            warmup=(warmup_steps(hp.lr_warmup_ratio, total), warmup_steps(hp.critic_lr_warmup_ratio, total)),
            factories=self._optimizer_factories,
        )


def _default_retriever() -> Retriever:
    """In-process BM25 over the HotpotQA sample corpus shipped in the package (laptop default)."""
    from searchr1.resources import package_path
    from searchr1.retrieval import BM25Retriever

    return BM25Retriever(corpus=package_path("pkg:assets/hotpotqa_dev_sample/corpus.jsonl"))
