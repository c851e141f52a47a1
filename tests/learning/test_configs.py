"""The learning-demo configs parse with their CLIs (classes built, nothing run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from searchr1.data.synthetic import generate_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "steps"), [("sft_synthetic_read", 1200), ("sft_synthetic", 60)])
def test_sft_configs_build_module_and_data(monkeypatch, name, steps):
    from searchr1.training.sft import SFTDataModule, SFTModule, main

    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    cli = main(["--config", str(ROOT / "configs" / f"{name}.yaml")], run=False)
    assert isinstance(cli.model, SFTModule) and isinstance(cli.datamodule, SFTDataModule)
    assert cli.datamodule.mask_observations and cli.trainer.max_steps == steps


@pytest.mark.parametrize(("name", "estimator"), [("grpo", "grpo"), ("ppo", "gae")])
def test_rl_configs_build(name, estimator, tmp_path):
    from searchr1.cli import cli_main
    from searchr1.data.synthetic import write_task

    files = write_task(generate_task(0, num_people=20, num_first_names=5, num_last_names=5), tmp_path)
    args = ["--config", str(ROOT / "configs" / f"learn_synthetic_{name}.yaml")]
    args += [f"--model.retriever.init_args.corpus={files.corpus}", f"--data.train_files=[{files.train}]"]
    cli = cli_main(args, run=False)
    assert cli.model.algorithm.estimator == estimator
    assert cli.model.rollout_config.topk == 1
