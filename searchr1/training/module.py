"""``SearchR1Module``: one LightningModule for PPO and GRPO with search-augmented rollouts.

A training step reads as the Search-R1 recipe: rollout (multi-turn generation with retrieval; retrieved
tokens have ``loss_mask = 0``) → score (outcome reward, exact match by default) → old/reference
log-probs and values (no grad) → advantages → policy/critic updates (manual optimization, PPO epochs ×
mini-batches × token-budget micro-batches) → metrics. PPO and GRPO differ only by the estimator name
and by whether a critic exists (see ``AlgorithmConfig``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable

from searchr1.distributed import Lockstep
from searchr1.models import LoRAConfig, ValueModel
from searchr1.protocols import get_protocol
from searchr1.retrieval import Retriever
from searchr1.rewards import get_reward
from searchr1.rollout import RolloutBatch, RolloutConfig, RolloutEngine
from searchr1.training import strategies  # noqa: F401 - registers the ``fsdp2`` strategy name
from searchr1.training.async_hooks import AsyncRolloutMixin
from searchr1.training.async_rollout import AsyncRolloutConfig, AsyncTrainerRollout
from searchr1.training.checkpoint_hooks import CheckpointMixin
from searchr1.training.config import AlgorithmConfig
from searchr1.training.engine_weights import EngineWeights, build_rollout_backend
from searchr1.training.eval_hooks import EvaluationMixin
from searchr1.training.forward import batched_logprobs, batched_values, old_logprobs_except
from searchr1.training.metrics import EvalTally, search_quality_metrics, step_metrics
from searchr1.training.model_setup import ModelSetupMixin
from searchr1.training.scaling import ddp_reducer_off, full_params_for_generation, gradient_sync_hook
from searchr1.training.sharding import is_fsdp2, rank_lockstep
from searchr1.training.step_count import one_global_step
from searchr1.training.steps import StepOutput, build_update_batch, score_rollout
from searchr1.training.update import PolicyCriticUpdater, Trainee, first_update_rows


class SearchR1Module(ModelSetupMixin, AsyncRolloutMixin, EvaluationMixin, CheckpointMixin, LightningModule):
    """Policy (+ frozen reference, + critic when the estimator needs one) trained with search rollouts.

    The training step is here; model setup, asynchronous rollouts, evaluation and checkpoint hooks are mixins
    (:mod:`~searchr1.training.model_setup`, :mod:`~searchr1.training.async_hooks`,
    :mod:`~searchr1.training.eval_hooks`, :mod:`~searchr1.training.checkpoint_hooks`).

    Args:
        model_name_or_path: policy weights: a hub name (``Qwen/Qwen2.5-3B``), a local folder, or
            ``tiny:<preset>`` for a randomly initialised tiny Qwen2 built offline (``micro``, ``small``, ``base``).
        tokenizer: tokenizer name/path; default: the model's.
        critic_name_or_path: critic backbone; default: the policy's starting weights (as Search-R1).
        retriever: the search engine (any ``Retriever``; e.g. ``searchr1.retrieval.BM25Retriever`` in-process
            or ``searchr1.retrieval.HTTPRetriever`` for a server).
        rollout: generation/search settings for training rollouts.
        algorithm: advantage estimator, losses, KL, PPO epochs and batch sizes.
        reward: reward name (``em``, ``em_format``, ``f1``, ``substring``) or a callable.
        reward_kwargs: arguments of the named reward (e.g. ``em_format`` scores).
        backend: generation backend, ``hf`` (transformers on the live policy) or ``vllm``.
        backend_kwargs: extra constructor arguments of the backend.
        policy_optimizer: optimizer factory for the policy; default AdamW(lr=policy_lr).
        critic_optimizer: optimizer factory for the critic; default AdamW(lr=critic_lr).
        policy_lr: policy learning rate (Search-R1: 1e-6).
        critic_lr: critic learning rate (Search-R1: 1e-5).
        weight_decay: AdamW weight decay of the default optimizers.
        lr_warmup_ratio: policy warm-up share of the total steps (constant LR afterwards, as in Search-R1).
        critic_lr_warmup_ratio: the same for the critic.
        gradient_checkpointing: activation checkpointing in policy and critic.
        dtype: parameter dtype (``float32``, ``bfloat16``, ``float16``); None: float32, i.e. fp32 master weights and
            optimizer state (compute in bf16 comes from ``trainer.precision: bf16-mixed``). ``bfloat16``/``float16``
            is pure low-precision training (no master copy: small updates round away; a startup warning says so).
        reference_cpu_offload: under FSDP2, keep the frozen reference's shards on CPU between its forwards.
        use_chat_template: format prompts with the tokenizer's chat template (instruct models).
        chat_template: a Jinja chat-template file replacing the tokenizer's (``pkg:`` paths allowed), e.g.
            ``pkg:assets/chat_templates/chatml_tools.jinja`` so a ChatML model without tool support can use the
            ``tool_call`` protocol; exported with the tokenizer.
        lora: train LoRA adapters (policy, and critic) on frozen base weights (``--model.lora.r=8``); the reference
            is then the policy with its adapters off; None: full fine-tuning.
        val_do_sample: sample during validation/test (default greedy).
        val_temperature: sampling temperature when ``val_do_sample``.
        seed: base seed of rollout sampling and mini-batch shuffling (per step and rank) and of the value head init.
        async_rollout: train asynchronously on rollout servers with bounded staleness (docs/async.md); None:
            synchronous in-process rollouts.
    """

    def __init__(
        self,
        model_name_or_path: str = "tiny:micro",
        tokenizer: str | None = None,
        critic_name_or_path: str | None = None,
        retriever: Retriever | None = None,
        rollout: RolloutConfig = RolloutConfig(),  # noqa: B008 - immutable-by-convention config
        algorithm: AlgorithmConfig = AlgorithmConfig(),  # noqa: B008
        reward: str = "em",
        reward_kwargs: dict[str, Any] | None = None,
        backend: str = "hf",
        backend_kwargs: dict[str, Any] | None = None,
        policy_optimizer: OptimizerCallable | None = None,
        critic_optimizer: OptimizerCallable | None = None,
        policy_lr: float = 1e-6,
        critic_lr: float = 1e-5,
        weight_decay: float = 0.01,
        lr_warmup_ratio: float = 0.0,
        critic_lr_warmup_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        dtype: str | None = None,
        reference_cpu_offload: bool = False,
        use_chat_template: bool = True,
        chat_template: str | None = None,
        lora: LoRAConfig | None = None,
        val_do_sample: bool = False,
        val_temperature: float = 1.0,
        seed: int = 0,
        async_rollout: AsyncRolloutConfig | None = None,
    ) -> None:
        super().__init__()
        # plain types only in hparams, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(
            ignore=[
                "retriever",
                "policy_optimizer",
                "critic_optimizer",
                "rollout",
                "algorithm",
                "async_rollout",
                "lora",
            ]
        )
        self.hparams["lora"] = dataclasses.asdict(lora) if lora is not None else None
        self.lora = lora
        self.strict_loading = lora is None  # LoRA checkpoints hold only the adapters (the base is rebuilt)
        self.hparams["rollout"] = dataclasses.asdict(rollout)
        self.hparams["algorithm"] = dataclasses.asdict(algorithm)
        self.hparams["async_rollout"] = dataclasses.asdict(async_rollout) if async_rollout is not None else None
        if async_rollout is not None and async_rollout.max_staleness > 0 and algorithm.rollout_correction == "none":
            raise ValueError(
                "async_rollout.max_staleness > 0 samples with older policies: set algorithm.rollout_correction to "
                "'tis' (or 'mis') so the behaviour log-probs weight the loss (decoupled PPO, docs/async.md)"
            )
        self.async_config = async_rollout
        self._async: AsyncTrainerRollout | None = None
        self._async_restore: dict | None = None  # the driver's snapshot from a checkpoint being resumed
        if callable(reward):  # a user callable is code, not a checkpointable setting: record its name only
            self.hparams["reward"] = f"{getattr(reward, '__module__', '?')}.{getattr(reward, '__qualname__', reward)}"
        self.automatic_optimization = False
        self.rollout_config = rollout
        self.algorithm = algorithm
        self.retriever = retriever
        self.reward_fn = get_reward(reward, **(reward_kwargs or {}))
        self.backend_name = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self._optimizer_factories = (policy_optimizer, critic_optimizer)
        self._tokenizer = None  # loaded on first use, so building the module (config checks) downloads nothing
        self.policy: torch.nn.Module | None = None
        self._frozen: dict[str, torch.nn.Module] = {}  # the reference: not a submodule (see ``reference``)
        self.critic: ValueModel | None = None
        self._engines: dict[bool, RolloutEngine] = {}  # one backend, two sampling settings (train / evaluation)
        self._engine_weights: EngineWeights | None = None
        self._rollout_steps = 0
        self._eval_tally = EvalTally(protocol=rollout.protocol)

    @property
    def lockstep(self) -> Lockstep | None:
        """The rank agreement when several ranks train together, else None."""
        return rank_lockstep(self._trainer, self.device)

    def _backward(self, loss: torch.Tensor) -> None:
        with ddp_reducer_off(self.trainer.strategy.model):
            self.manual_backward(loss)

    def updater(self) -> PolicyCriticUpdater:
        """The update of one step, wired to this module's models, optimizers, schedulers and strategy."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        critic = Trainee(self.critic, optimizers[1], schedulers[1]) if self.critic is not None else None
        return PolicyCriticUpdater(
            self.algorithm,
            Trainee(self.policy, optimizers[0], schedulers[0]),
            critic,
            temperature=self.rollout_config.temperature,
            seed=self.hparams.seed,
            backward=self._backward,
            sync_gradients=gradient_sync_hook(self.trainer),
            lockstep=self.lockstep,
            failure_context=self._failure_context,
        )

    def _failure_context(self) -> str:
        callback = getattr(self._trainer, "checkpoint_callback", None) if self._trainer is not None else None
        last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "") or "none yet"
        return f" at rollout step {self._rollout_steps} (global step {self.global_step}); last good checkpoint: {last}"

    def engine(self, train: bool = True) -> RolloutEngine:
        """The rollout engine: one backend per rank, with training sampling settings or evaluation ones.

        Evaluation reuses the training backend (greedy by default, ``val_do_sample``/``val_temperature``), so it
        samples from the weights being trained. A backend sharing the policy module is built on it; any other
        (vLLM) loads the starting weights (``tiny:`` presets resolved to their folder) and is kept current by
        :class:`~searchr1.training.engine_weights.EngineWeights`.
        """
        if not self._engines:
            # sharded policy: every decode forward is a collective, so the ranks decode in lockstep
            lockstep = self.lockstep if is_fsdp2(self.policy) else None
            backend = build_rollout_backend(
                self.backend_name,
                self.backend_kwargs,
                self.policy,
                self.tokenizer,
                lockstep,
                self.hparams.model_name_or_path,
            )
            self._engine_weights = EngineWeights(backend)
            config = self.rollout_config
            val = dataclasses.replace(
                config, do_sample=self.hparams.val_do_sample, temperature=self.hparams.val_temperature
            )
            self._engines = {True: RolloutEngine(backend, self.retriever, self.tokenizer, config)}
            self._engines[False] = RolloutEngine(backend, self.retriever, self.tokenizer, val)
        return self._engines[train]

    @property
    def engine_weights(self) -> EngineWeights:
        """The weight state of the engine's copy (built with the engine)."""
        self.engine(True)
        return self._engine_weights  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------ training
    def training_step(self, batch: list, batch_idx: int) -> StepOutput:
        """One rollout step; it counts as one ``trainer.global_step`` (:mod:`searchr1.training.step_count`)."""
        with one_global_step(self._trainer):
            return self._rollout_step(batch)

    def _rollout_step(self, batch: list) -> StepOutput:
        timings: dict[str, float] = {}
        with _timer(timings, "rollout"):
            rollout = self.rollout(batch, train=True)
        self.engine_weights.after_rollout()  # free the engine's memory (vLLM: KV cache, weights) for the passes below
        with _timer(timings, "score"):
            golds = [ex.golden_answers for ex in batch]
            scores = score_rollout(rollout, golds, self.reward_fn, self._rollout_steps, self.lockstep)
        with _timer(timings, "old_ref_values"):
            old_lp, ref_lp, values, fresh = self.no_grad_passes(rollout)
        with _timer(timings, "advantages"):
            data, token_rewards = self.compute_advantages(rollout, scores, old_lp, ref_lp, values, fresh)
        with _timer(timings, "update"):
            stats = self.updater().run(data, step=self._rollout_steps)
        with _timer(timings, "weight_sync"):
            self.engine_weights.after_update(self.policy)
            if self._async is not None:  # the rollout servers sample the next tokens with these weights
                self._async.push(self.policy, self._rollout_steps + 1)
        self.log_step_metrics(rollout, scores, token_rewards, stats, timings, batch)
        self._rollout_steps += 1
        self._mark_batch_consumed()
        return StepOutput(rollout, scores)

    def rollout(self, batch: list, train: bool) -> RolloutBatch:
        """Generate search-augmented trajectories for a batch of ``QAExample`` (n samples each when training).

        With ``async_rollout`` the training batch comes from the rollout servers (sampled up to ``max_staleness``
        versions ago, see :mod:`searchr1.training.async_rollout`).
        """
        if train and self.async_config is not None:
            return self._take_async(batch)
        protocol = get_protocol(self.rollout_config.protocol)
        prompts = [protocol.build_prompt(ex.question, self.tokenizer, self.hparams.use_chat_template) for ex in batch]
        n = self.algorithm.n_samples if train else 1
        seed = self.hparams.seed + 1_000_003 * self._rollout_steps + 7919 * self.global_rank if train else None
        self.engine_weights.before_rollout(self.policy)
        with full_params_for_generation(self.policy):
            rollout = self.engine(train).generate(prompts, n=n, seed=seed)
        return rollout.to(self.device)

    def no_grad_passes(self, rollout: RolloutBatch):
        """Old log-probs (unless fully on-policy; not for the rows the update's first mini-batch supplies itself),
        reference log-probs, critic values, and the rows whose old log-probs were skipped (or None)."""
        cfg, budget, temp = self.algorithm, self.algorithm.micro_token_budget, self.rollout_config.temperature
        single_update = cfg.ppo_epochs == 1 and (cfg.mini_batch_size is None or cfg.mini_batch_size >= len(rollout))
        kl_folded = cfg.kl_in_reward and cfg.kl_coef > 0
        need_old = not single_update or kl_folded
        lockstep = self.lockstep
        self._move_reference()
        skip = None if kl_folded else first_update_rows(len(rollout), cfg, self.hparams.seed, self._rollout_steps)
        old_lp, fresh = None, None
        if need_old:
            old_lp, fresh = old_logprobs_except(self.policy, rollout, temp, budget, skip, lockstep)
        ref = self.reference
        ref_lp = batched_logprobs(ref, rollout, temp, budget, lockstep) if ref is not None else None
        values = batched_values(self.critic, rollout, budget, lockstep) if self.critic is not None else None
        return old_lp, ref_lp, values, fresh

    def compute_advantages(self, rollout, scores, old_lp, ref_lp, values, fresh=None):
        cfg = self.algorithm
        return build_update_batch(
            rollout,
            scores,
            cfg.estimator,
            old_logprobs=old_lp,
            ref_logprobs=ref_lp,
            values=values,
            kl_coef=cfg.kl_coef,
            kl_kind=cfg.kl_kind,
            kl_in_reward=cfg.kl_in_reward,
            gamma=cfg.gamma,
            lam=cfg.lam,
            lockstep=self.lockstep,  # GAE / REINFORCE++ whiten over the global batch
            proximal_is_current=fresh,
        )

    def log_step_metrics(self, rollout, scores, token_rewards, stats, timings, batch) -> None:
        golds = [batch[int(i)].golden_answers for i in rollout.prompt_index.tolist()]
        metas = [batch[int(i)].metadata for i in rollout.prompt_index.tolist()]
        kl_path, backend = self.algorithm.kl_path, self.engine(True).backend
        metrics = step_metrics(rollout, scores, token_rewards, stats, timings, golds, kl_path, backend)
        self.log_dict(metrics, batch_size=len(rollout), sync_dist=True, prog_bar=False)
        # this rank's trajectories, no reduction: which search/* values exist depends on the data (NaN dropped)
        search = search_quality_metrics(rollout, golds, metas, self.rollout_config.protocol)
        self.log_dict({k: v for k, v in search.items() if v == v}, batch_size=len(rollout), sync_dist=False)
        bar = {
            "em": metrics["train/em"],
            "reward": metrics["train/reward"],
            "searches": metrics["rollout/searches_mean"],
        }
        self.log_dict(bar, batch_size=len(rollout), prog_bar=True, logger=False)

    def _mark_batch_consumed(self) -> None:
        """Advance the data module's resumable position together with the weights, inside ``training_step``.

        Not in ``on_train_batch_end``: Lightning runs the callbacks' ``on_train_batch_end`` (``ModelCheckpoint``
        saving ``every_n_train_steps``) before the module's, so a checkpoint would hold the updated weights with
        the old data position, and a resumed run would train on the last batch again.
        """
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "mark_batch_consumed"):
            datamodule.mark_batch_consumed()


class _timer:
    """Context manager adding elapsed seconds to ``store[name]``."""

    def __init__(self, store: dict[str, float], name: str) -> None:
        self.store, self.name = store, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.store[self.name] = self.store.get(self.name, 0.0) + time.perf_counter() - self.start
