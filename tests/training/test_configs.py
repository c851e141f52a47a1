"""Every YAML in configs/ parses and builds its classes (run=False); bad options give the promised errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.cli import cli_main, default_config_path
from searchr1.training import AlgorithmConfig, SearchR1Module

DATA = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# GPU configs are checked on CPU: only the hardware options are replaced
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.precision=32-true"]


def test_there_are_configs():
    names = {c.name for c in CONFIGS}
    assert {"learn_cpu.yaml", "tiny_cpu.yaml", "ppo_qwen2.5-3b.yaml", "grpo_qwen2.5-3b.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_parses_and_instantiates(path, tmp_path):
    text = path.read_text()
    assert text.startswith("#"), "every config opens with a comment: purpose, hardware, launch command"
    assert "Launch" in text and "Hardware:" in text
    args = ["--config", str(path), *ON_CPU, f"--trainer.default_root_dir={tmp_path}"]
    if path.name.startswith(("learn_synthetic", "learn_smollm2")):  # corpus written by tools/learn_*.py before RL
        args.append(f"--model.retriever.init_args.corpus={DATA / 'hotpotqa_dev_sample' / 'corpus.jsonl'}")
    if path.name.startswith("sft_"):  # supervised warm start: its own CLI (searchr1-sft)
        from searchr1.training.sft import SFTModule, main

        assert isinstance(main(args, run=False).model, SFTModule)
        return
    cli = cli_main(args, run=False)
    assert isinstance(cli.model, SearchR1Module)
    assert isinstance(cli.model.algorithm, AlgorithmConfig)


def test_embedded_default_is_the_learn_cpu_config():
    assert Path(default_config_path()).read_text() == (CONFIGS[0].parent / "learn_cpu.yaml").read_text()
    # the HotpotQA-sample pipeline demo ships in the package too
    shipped = Path(default_config_path()).with_name("tiny_cpu.yaml")
    assert shipped.read_text() == (CONFIGS[0].parent / "tiny_cpu.yaml").read_text()


def test_bad_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*gae.*grpo.*rloo"):
        AlgorithmConfig(estimator="ppo2")


def test_grpo_needs_groups():
    with pytest.raises(ValueError, match="n_samples >= 2"):
        AlgorithmConfig(estimator="grpo", n_samples=1)


def test_unknown_config_key_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["--config", default_config_path(), "--model.algorithm.estimatr=grpo"], run=False)
    assert "estimatr" in capsys.readouterr().err


def test_bad_tiny_preset_lists_valid(tmp_path):
    from searchr1.models import resolve_model_path

    with pytest.raises(ValueError, match="micro, small, base"):
        resolve_model_path("tiny:huge")


GPU_CONFIGS = [p for p in CONFIGS if "qwen2.5-3b" in p.name and "1gpu" not in p.name]
ONE_GPU_PRESETS = [p for p in CONFIGS if p.name.endswith("_lora_1gpu.yaml")]


def _printed(path: Path) -> dict:
    import subprocess
    import sys

    import yaml

    searchr1 = str(Path(sys.executable).with_name("searchr1"))
    proc = subprocess.run([searchr1, "fit", "-c", str(path), "--print_config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize("path", ONE_GPU_PRESETS, ids=lambda p: p.name)
def test_small_gpu_presets_are_lora_bf16_mixed_checkpointed_on_one_gpu(path):
    assert len(ONE_GPU_PRESETS) == 2
    printed = _printed(path)
    assert printed["trainer"]["devices"] == 1 and printed["trainer"]["precision"] == "bf16-mixed"
    model = printed["model"]
    assert model["lora"]["r"] > 0 and model["gradient_checkpointing"] is True
    assert model["backend"] == "vllm" and 0 < model["backend_kwargs"]["gpu_memory_utilization"] <= 0.5
    assert "Memory" in path.read_text().split("seed_everything")[0]  # the arithmetic is in the header


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_configs_print_fp32_master_weights_with_bf16_compute_on_fsdp2(path):
    """``searchr1 fit -c <paper config> --print_config``: FSDP2, bf16-mixed, float32 parameters (no pure bf16)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    searchr1 = str(Path(sys.executable).with_name("searchr1"))
    proc = subprocess.run([searchr1, "fit", "-c", str(path), "--print_config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed["trainer"]["strategy"] == "fsdp2"
    assert printed["trainer"]["precision"] == "bf16-mixed"
    assert printed["model"]["dtype"] in ("float32", None)
