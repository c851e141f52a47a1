"""The clean-terminal filters are narrow: the named upstream message from the named module is hidden, the same
message from anywhere else (and any other warning) still shows."""

from __future__ import annotations

import logging
import warnings

from searchr1.quiet import quiet_known_noise

LEAF = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."


def _shown(message: str, module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module)
    return bool(caught)


def test_upstream_noise_is_hidden_only_where_it_comes_from():
    assert not _shown(LEAF, "lightning.pytorch.utilities._pytree")
    assert _shown(LEAF, "searchr1.training.module")
    assert _shown("something else is deprecated", "lightning.pytorch.utilities._pytree")


def test_the_litlogger_tip_is_dropped_and_other_info_kept(caplog):
    quiet_known_noise()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_distributed_run_noise_is_hidden_precisely():
    """The FSDP2 demo's warnings: sync_dist advice for hand-reduced val/test metrics, and the rewrite of last.ckpt."""
    advice = "It is recommended to use `self.log('{}', ..., sync_dist=True)` when logging on epoch level"
    assert not _shown(advice.format("val/em"), "lightning.pytorch.trainer.connectors.logger_connector.result")
    assert not _shown(advice.format("test/nq/f1"), "lightning.pytorch.trainer.connectors.logger_connector.result")
    assert _shown(advice.format("train/reward"), "lightning.pytorch.trainer.connectors.logger_connector.result")
    overwrite = "Detected an existing checkpoint in {}, overwriting since self.overwrite=True. Past version 2.5"
    saver = "torch.distributed.checkpoint.state_dict_saver"
    assert not _shown(overwrite.format("runs/x/checkpoints/last.ckpt"), saver)
    assert _shown(overwrite.format("runs/x/checkpoints/epoch=0-step=4.ckpt"), saver)
