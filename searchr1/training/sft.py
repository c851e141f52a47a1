"""Supervised fine-tuning (SFT) on search trajectories: the warm start of RL and Search-R1's SFT baseline.

Trajectories come from the real rollout engine: a ``TeacherBackend`` (:mod:`searchr1.rollout.backends.teacher`)
writes a given text for each turn (e.g. the synthetic task's gold search path) while the engine runs the real
retriever and inserts the real observations (of either protocol) with ``loss_mask = 0``. They are saved as JSONL
of exact token ids + mask (:func:`~searchr1.rollout.types.save_trajectories`) and trained on with the RL layout
(``RolloutBatch``): the loss is the mean negative log-likelihood over tokens with ``loss_mask == 1``, so retrieved
tokens are never imitated — the same masking as the RL update. At the end of ``fit`` the policy is saved as a
Hugging Face folder (``output_dir``, :func:`searchr1.models.save_hf_folder`), so RL starts from it with
``model.model_name_or_path: <output_dir>``. Console script: ``searchr1-sft`` (LightningCLI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader

from searchr1.data.qa import QAExample
from searchr1.errors import UserError, config_errors
from searchr1.models import load_causal_lm, load_tokenizer, save_hf_folder
from searchr1.protocols import get_protocol
from searchr1.rollout import RolloutBatch, RolloutEngine, Trajectory
from searchr1.rollout.types import load_trajectories
from searchr1.training.forward import response_logprobs
from searchr1.training.optim import warmup_lambda


def build_sft_trajectories(
    engine: RolloutEngine,
    examples: Sequence[QAExample],
    prompts: Sequence[str],
    keep: Callable[[QAExample, Trajectory], bool] | None = None,
    batch_size: int = 64,
) -> list[Trajectory]:
    """Roll out ``prompts`` (one per example) with ``engine`` (usually a ``TeacherBackend``) and filter.

    Args:
        engine: the rollout engine with the teacher backend and the real retriever.
        examples: the questions, aligned with ``prompts``.
        prompts: built prompts (``searchr1.protocols.build_prompt``).
        keep: keep a trajectory only when ``keep(example, trajectory)`` (default: it ended with an answer).
        batch_size: prompts per engine call.
    """
    keep = keep or (lambda ex, t: t.finish_reason == "answer")
    out = []
    for lo in range(0, len(prompts), batch_size):
        batch = engine.generate(list(prompts[lo : lo + batch_size]))
        for traj in batch.trajectories:
            traj.prompt_index += lo
            if keep(examples[traj.prompt_index], traj):
                out.append(traj)
    return out


def answer_was_retrieved(example: QAExample, traj: Trajectory, protocol: str = "search_r1") -> bool:
    """Keep-filter: the trajectory answered and a golden answer appears in its observations (of ``protocol``)."""
    observed = " ".join(get_protocol(protocol).observation_blocks(traj.response_text))
    return traj.finish_reason == "answer" and any(a in observed for a in example.golden_answers)


def sft_loss(logprobs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over masked tokens: (B, R), (B, R) → scalar (0 when nothing is masked in)."""
    return -(logprobs * loss_mask).sum() / loss_mask.sum().clamp(min=1)


class SFTDataModule(LightningDataModule):
    """Batches of saved trajectories as ``RolloutBatch`` (the RL layout: left-padded prompts, right-padded responses).

    Args:
        train_file: JSONL written by :func:`~searchr1.rollout.types.save_trajectories`.
        val_file: optional held-out JSONL (validation loss).
        batch_size: trajectories per step.
        pad_token_id: id used for padding (padding is masked out of attention and loss, so any id works).
        mask_observations: True (default): loss only on sampled tokens; False: also on ``<information>`` tokens
            (the masking ablation).
        seed: shuffling seed.
    """

    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        batch_size: int = 16,
        pad_token_id: int = 0,
        mask_observations: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_file, self.val_file = train_file, val_file
        self.batch_size, self.pad_token_id = batch_size, pad_token_id
        self.mask_observations, self.seed = mask_observations, seed
        self.train_set: list[Trajectory] = []
        self.val_set: list[Trajectory] = []

    def setup(self, stage: str | None = None) -> None:
        for path in (self.train_file, self.val_file):
            if path and not Path(path).is_file():
                raise UserError(
                    f"trajectory file {path} does not exist: build it with build_sft_trajectories (the inputs of "
                    "configs/sft_synthetic.yaml: python tools/learn_synthetic.py --prepare-sft)"
                )
        self.train_set = load_trajectories(self.train_file)
        if not self.train_set:
            raise ValueError(f"{self.train_file} holds no trajectories; build them with build_sft_trajectories")
        self.val_set = load_trajectories(self.val_file) if self.val_file else []

    def transfer_batch_to_device(self, batch: RolloutBatch, device: torch.device, dataloader_idx: int) -> RolloutBatch:
        """Move the batch's tensors (the data module's hook, so ``SFTModule`` has none and Lightning does not warn
        about one in both)."""
        return batch.to(device)

    def _collate(self, trajs: list[Trajectory]) -> RolloutBatch:
        batch = RolloutBatch.from_trajectories(trajs, self.pad_token_id)
        if not self.mask_observations:
            batch.loss_mask = batch.response_mask.clone()
        return batch

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set, self.batch_size, shuffle=True, generator=gen, collate_fn=self._collate, drop_last=True
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_set:
            return []
        return DataLoader(self.val_set, self.batch_size, collate_fn=self._collate)


class SFTModule(LightningModule):
    """Causal-LM fine-tuning on trajectories with the loss on ``loss_mask == 1`` tokens only.

    Args:
        model_name_or_path: starting weights (hub name, local folder or ``tiny:<preset>``).
        tokenizer: tokenizer path; default the model's (saved next to the weights in ``output_dir``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps (constant afterwards; :func:`~searchr1.training.optim.warmup_lambda`).
        output_dir: where ``save_pretrained`` writes model + tokenizer at the end of ``fit`` (None: not saved).
        dtype: parameter dtype name, None keeps float32.
    """

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        output_dir: str | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.policy: torch.nn.Module | None = None

    def configure_model(self) -> None:
        if self.policy is None:
            dtype = getattr(torch, self.hparams.dtype) if self.hparams.dtype else None
            self.policy = load_causal_lm(self.hparams.model_name_or_path, dtype).train()

    def _loss(self, batch: RolloutBatch) -> torch.Tensor:
        lp, _ = response_logprobs(
            self.policy, batch.input_ids, batch.attention_mask, batch.position_ids, batch.prompt_length
        )
        return sft_loss(lp, batch.loss_mask)

    def training_step(self, batch: RolloutBatch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("sft/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def validation_step(self, batch: RolloutBatch, batch_idx: int) -> None:
        self.log("sft/val_loss", self._loss(batch), prog_bar=True, batch_size=len(batch))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.policy.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(self.hparams.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        loss = self.trainer.callback_metrics.get("sft/loss")
        shown = f"final training loss {float(loss):.4f}" if loss is not None else "no training step ran"
        print(f"searchr1 sft: {self.trainer.global_step} steps, {shown}", flush=True)
        if self.hparams.output_dir:
            out = self.save_pretrained(self.hparams.output_dir)
            print(f"searchr1 sft: model saved to {out} (RL from it: --model.model_name_or_path={out})", flush=True)

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Save policy and tokenizer as a Hugging Face folder (the RL ``model_name_or_path``), atomically."""
        tokenizer = load_tokenizer(self.hparams.tokenizer or self.hparams.model_name_or_path)
        return save_hf_folder(self.policy, tokenizer, out_dir)


def main(args: list[str] | None = None, run: bool = True):
    """``searchr1 sft fit -c configs/sft_synthetic.yaml``: LightningCLI over ``SFTModule`` and ``SFTDataModule``."""
    from lightning.pytorch.cli import LightningCLI

    from searchr1.training.console import ShortErrorParser, adapt_trainer_config

    class SFTCLI(LightningCLI):
        def instantiate_classes(self) -> None:
            with config_errors():  # a constructor refusing a value: one message naming it, no traceback
                super().instantiate_classes()

        def instantiate_trainer(self, **kwargs):
            adapt_trainer_config(self._get(self.config_init, "trainer"))  # plain lines when piped; Ctrl-C report
            return super().instantiate_trainer(**kwargs)

    description = "Supervised warm start on saved trajectories (searchr1 sft fit -c configs/sft_synthetic.yaml)."
    return SFTCLI(
        SFTModule,
        SFTDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_class=ShortErrorParser,
        parser_kwargs={"prog": "searchr1 sft", "description": description},
    )


if __name__ == "__main__":
    main()
