"""Crash-safe checkpoint files: ``AtomicCheckpointIO`` (Lightning plugin) and ``ExportPretrained`` (callback).

Lightning's ``TorchCheckpointIO`` serialises to memory and writes through an fsspec transaction, which on a local
path writes a ``tempfile.mkstemp()`` file in the *system* temp folder and then ``shutil.move``-s it to the target.
When that folder is on another filesystem than the checkpoints (``/tmp`` on local disk, runs on NFS/Lustre: the
usual cluster layout) the move is a copy into the final path, so a kill during it leaves a truncated ``last.ckpt``
that resume then picks up; the temp folder must also hold the whole checkpoint, and nothing is fsync-ed.
``AtomicCheckpointIO`` writes into a hidden temp file next to the target, fsyncs it, ``os.replace``-s it over the
target (atomic on POSIX within one filesystem) and fsyncs the folder: a reader sees the old file or the new one,
never a part; hidden temps that killed writers left in that folder are removed first
(:func:`searchr1.atomic.remove_stale_temps`). Remote (non-local) paths fall back to Lightning's own writer.
Sharded (FSDP2) checkpoints do not go through this plugin: ``FSDP2Strategy`` makes them crash-safe itself
(:mod:`searchr1.training.sharded_checkpoint`).

``ExportPretrained`` writes ``policy.save_pretrained`` + the tokenizer (loadable with ``from_pretrained``) at the
end of fit and every ``every_n_steps`` rollout steps, into a temp folder renamed into place
(:func:`searchr1.models.save_hf_folder`); under FSDP2 every rank takes part in gathering the full weights and
rank 0 writes them. The folder also holds ``searchr1_run.json``, the run's rollout and retriever settings
(:mod:`searchr1.rollout.run_settings`), which ``searchr1 eval`` / ``searchr1 infer`` use as their defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from searchr1.atomic import atomic_torch_save, remove_stale_temps
from searchr1.models import save_hf_folder
from searchr1.rollout.run_settings import RUN_SETTINGS_FILE


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (see the module docstring); loading is unchanged.

    Use: ``Trainer(plugins=[AtomicCheckpointIO()])`` or, in a config, ``trainer.plugins:
    [{class_path: searchr1.training.checkpoint_io.AtomicCheckpointIO}]``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (remote paths: Lightning's writer)."""
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        remove_stale_temps(Path(path).parent)
        atomic_torch_save(checkpoint, path)


class ExportPretrained(Callback):
    """Export the policy as a Hugging Face folder (``save_pretrained`` + tokenizer), written atomically.

    Args:
        dirpath: export folder; default ``<trainer.default_root_dir>/hf``. Step exports go to ``<dirpath>/step_N``,
            the end-of-fit one to ``<dirpath>/last``.
        every_n_steps: also export every N rollout steps (0: only at the end of fit).
        safe_serialization: write ``.safetensors`` (no pickle) rather than ``.bin``.
    """

    def __init__(self, dirpath: str | None = None, every_n_steps: int = 0, safe_serialization: bool = True) -> None:
        if every_n_steps < 0:
            raise ValueError(f"ExportPretrained.every_n_steps must be >= 0 (0: only at the end), got {every_n_steps}")
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps
        self.safe_serialization = safe_serialization

    def _root(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "hf"

    def export(self, trainer: Trainer, pl_module: LightningModule, name: str) -> Path | None:
        """Write ``<root>/<name>``; returns the folder on rank 0 (None elsewhere).

        Every rank must call it: under FSDP2 the full state dict is gathered from all shards (a collective), then
        rank 0 writes it; the ranks wait for the write to finish before going on.
        """
        from searchr1.training.sharding import full_state_dict

        state = full_state_dict(pl_module.policy)
        target = None
        if trainer.global_rank == 0:
            run = pl_module.run_settings() if hasattr(pl_module, "run_settings") else None
            extra = {RUN_SETTINGS_FILE: run.to_json()} if run is not None else None
            target = save_hf_folder(
                pl_module.policy, pl_module.tokenizer, self._root(trainer) / name, state, self.safe_serialization, extra
            )
        trainer.strategy.barrier("searchr1-export")
        return target

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int):
        steps = getattr(pl_module, "_rollout_steps", trainer.global_step)
        if self.every_n_steps and steps % self.every_n_steps == 0:
            self.export(trainer, pl_module, f"step_{steps}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.export(trainer, pl_module, "last")
