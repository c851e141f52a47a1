"""A clean terminal: the narrow filters for upstream messages a user cannot act on (installed by the CLIs).

Each filter names the message and the module that emits it, so any other warning still shows. What is ours was
fixed at the cause instead (one ``transfer_batch_to_device``, the ``cache`` argument of new transformers,
evaluation datasets without ``__len__``; Lightning's "Found N module(s) in eval mode" no longer arises because the
frozen reference is not a submodule). ``tests/learning/test_default_run.py`` runs the default ``fit`` and fails on
any warning outside :data:`ALLOWED`.
"""

from __future__ import annotations

import logging
import warnings

UPSTREAM_WARNINGS: tuple[tuple[str, str], ...] = (
    # (message regex, module regex) for warnings.filterwarnings
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # the module checkpoints after its update, with the matching data position (training/module.py): intended
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps", r"lightning\."),
    # an SFT run (searchr1 sft) has no validation set: intended
    (r"Total length of `list` across ranks is zero", r"lightning\.pytorch\.utilities\.data"),
    # val/ and test/ metrics are all-reduced by hand (EvalTally.means) and logged once, rank_zero_only: Lightning's
    # advice to add sync_dist=True (printed once per metric under DDP/FSDP2) does not apply to them
    (r"It is recommended to use `self\.log\('(val|test)/.*sync_dist=True", r""),
    # FSDP2's last.ckpt is a distributed-checkpoint folder rewritten at every save: overwriting it is the intent
    (r"Detected an existing checkpoint in .*last\.ckpt, overwriting since self\.overwrite=True", r"torch\."),
)
"""Upstream warnings filtered by message and module."""

UPSTREAM_INFO_PREFIXES: tuple[str, ...] = ("💡 Tip: For seamless cloud logging",)
"""Lightning info lines dropped (the LitLogger advertisement)."""

ALLOWED: tuple[str, ...] = ()
"""Warnings the default ``fit`` may print (regexes; empty: none)."""


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Install the filters above (idempotent), and hide transformers' per-file progress bars."""
    for message, module in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(UPSTREAM_INFO_PREFIXES))
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars of tiny local folders
