"""Bad scale-out setups are refused at startup with a message saying what to change (CLI and Trainer paths)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from lightning.pytorch import Trainer

from searchr1.cli import cli_main
from searchr1.resources import PIPELINE_DEMO_CONFIG, default_config_path
from searchr1.training import AlgorithmConfig, SearchR1Module
from searchr1.training.scaling import (
    ScaleSetup,
    SetupError,
    check_setup,
    low_precision_warning,
    setup_problems,
    strategy_kind,
)

OK = dict(strategy="ddp", accelerator="cpu", batch_size=4, n_samples=4, mini_batch_size=8)


def test_strategy_kind_reads_names_objects_and_class_paths():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    assert strategy_kind("fsdp") == strategy_kind("lightning.pytorch.strategies.FSDPStrategy") == "fsdp"
    assert strategy_kind("fsdp2") == strategy_kind("searchr1.training.strategies.FSDP2Strategy") == "fsdp2"
    assert strategy_kind("lightning.pytorch.strategies.ModelParallelStrategy") == "fsdp2"
    assert strategy_kind("deepspeed_stage_3_offload") == strategy_kind("DeepSpeedStrategy") == "deepspeed"
    assert strategy_kind("ddp_spawn") == strategy_kind(DDPStrategy()) == "ddp"
    assert strategy_kind("auto") == strategy_kind(SingleDeviceStrategy("cpu")) == "single"


def test_a_good_setup_has_no_problems():
    assert setup_problems(ScaleSetup(**OK)) == []
    assert setup_problems(ScaleSetup(**{**OK, "mini_batch_size": None})) == []
    assert setup_problems(ScaleSetup(**{**OK, "strategy": "fsdp2"})) == []  # FSDP2 runs on CPU ranks (gloo)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", None), ("32-true", "bfloat16"), ("16-true", None)])
def test_pure_low_precision_warns_with_the_lr_it_swallows(precision, dtype):
    setup = ScaleSetup(**{**OK, "precision": precision, "dtype": dtype, "policy_lr": 1e-6})
    # Adam moves a weight by ~lr per step; bf16 keeps 8 significant bits, so the step rounds away when it is below
    # half the spacing, i.e. for |w| > lr * 2**8 = 2.56e-4
    assert "lr=1e-06" in low_precision_warning(setup) and "2.6e-04" in low_precision_warning(setup)
    with pytest.warns(UserWarning, match="pure low-precision training"):
        check_setup(setup)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", None), ("32-true", "float32"), ("32-true", None)])
def test_fp32_master_weights_do_not_warn(precision, dtype):
    assert low_precision_warning(ScaleSetup(**{**OK, "precision": precision, "dtype": dtype})) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "fsdp"}, "FSDP1 FSDPStrategy.*--trainer.strategy=fsdp2"),
        ({"strategy": "fsdp", "accelerator": "gpu"}, "FSDP1 FSDPStrategy.*--trainer.strategy=fsdp2"),
        ({"strategy": "deepspeed"}, "needs CUDA GPUs.*--trainer.strategy=fsdp2 or ddp"),
        ({"strategy": "deepspeed", "accelerator": "gpu"}, r"pip install -e '\.\[gpu\]'"),
        ({"strategy": "deepspeed", "accelerator": "gpu", "needs_critic": True}, "single optimizer.*fsdp"),
        ({"backend": "vllm"}, "vllm is not installed.*setup_vllm_venv.*--model.backend=hf"),
        ({"critic_name_or_path": "x", "estimator": "grpo"}, "uses no critic.*estimator=gae"),
        ({"mini_batch_size": 6}, r"4 x 4 = 16.*divisor of 16"),  # 16 sequences per rank do not split into 6s
        ({"mini_batch_size": 32}, "divisor of 16"),  # larger than a rank's rollout batch (a global number?)
    ],
)
def test_each_bad_setup_names_its_fix(change, message):
    with pytest.raises(SetupError, match=message):
        check_setup(ScaleSetup(**{**OK, **change}))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.strategy=fsdp", "--trainer.accelerator=cpu"], "--trainer.strategy=fsdp2"),
        (["--model.backend=vllm"], "vllm is not installed"),
        (["--model.critic_name_or_path=tiny:micro"], "uses no critic"),
        (["--model.algorithm.mini_batch_size=5"], "divisor of 16"),
    ],
)
def test_cli_refuses_before_building_anything(args, message):
    with pytest.raises(SystemExit) as exit_info:  # the HotpotQA demo: 4 prompts x 4 samples per step
        cli_main(["fit", "-c", default_config_path(PIPELINE_DEMO_CONFIG), *args])
    assert message in str(exit_info.value.code)


@pytest.mark.slow
def test_cli_error_is_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "searchr1", "fit", "--trainer.strategy=fsdp", "--trainer.accelerator=cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("searchr1: error: trainer.strategy=fsdp is Lightning's FSDP1")
    )


def test_trainer_path_checks_in_setup_before_loading_models(tmp_path):
    module = SearchR1Module(
        model_name_or_path="/nonexistent/model",  # never loaded: the check runs first
        critic_name_or_path="/nonexistent/critic",
        algorithm=AlgorithmConfig(estimator="grpo", n_samples=2),
    )
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, max_steps=1, default_root_dir=tmp_path)
    with pytest.raises(SetupError, match="uses no critic"):
        trainer.fit(module, train_dataloaders=[[]])
    assert module.policy is None
