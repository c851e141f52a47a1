"""CollapseGuard is on in every shipped config (and the embedded default, which is configs/learn_cpu.yaml)."""

from __future__ import annotations

import pytest

from searchr1.cli import cli_main
from searchr1.training.callbacks import CollapseGuard

from .test_configs import CONFIGS, DATA, ON_CPU


@pytest.mark.parametrize("path", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_runs_a_collapse_guard(path, tmp_path):
    args = ["--config", str(path), *ON_CPU, f"--trainer.default_root_dir={tmp_path}"]
    if path.name.startswith(("learn_synthetic", "learn_smollm2")):  # corpus written by tools/learn_*.py before RL
        args.append(f"--model.retriever.init_args.corpus={DATA / 'hotpotqa_dev_sample' / 'corpus.jsonl'}")
    if path.name.startswith("sft_"):
        from searchr1.training.sft import main

        cli = main(args, run=False)
    else:
        cli = cli_main(args, run=False)
    guards = [cb for cb in cli.trainer.callbacks if isinstance(cb, CollapseGuard)]
    assert len(guards) == 1
    if path.name.startswith("learn_"):  # no checkpoints there (or only at the end): entropy alarms only warn
        assert guards[0].rules["entropy_collapse"].action == "warn"
    else:
        assert guards[0].rules["entropy_collapse"].action == "rollback"
