"""The last gaps of issues 27 and 31, through the ``searchr1`` console script: ``serve`` refuses a default ``--topk``
above the index's passage count at startup; a resume from an unfinished sharded checkpoint ends in the short
``searchr1: error:`` message naming the newest complete one; the tiny-model
cache and HF exports follow the umask (0755 folders, 0644 files under umask 022; ``safetensors`` writes 0600)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.test_user_errors import GOOD, ROOT, SEARCHR1, error_block, run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(300)
def test_serve_refuses_a_topk_above_the_index_size(tmp_path):
    (tmp_path / "good.jsonl").write_text(GOOD)  # 2 passages
    built = run([SEARCHR1, "index", "build", "--retriever", "bm25", "--out", "idx", "--corpus", "good.jsonl"], tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    proc = run([SEARCHR1, "serve", "--index", "idx", "--topk", "3", "--port", "1"], tmp_path)  # refused before bind
    assert proc.returncode == 2
    block = error_block(proc)
    assert "--topk 3 is above the index's 2 passages: give --topk 2 or less" in block, block
    assert "serving" not in proc.stdout
    debug = run([SEARCHR1, "serve", "--index", "idx", "--topk", "3", "--port", "1"], tmp_path, debug=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UserError" in debug.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_from_an_incomplete_sharded_checkpoint_is_a_short_error(tmp_path):
    """A folder without the completeness marker (a save cut short) is refused before any rank starts."""
    ckpt = tmp_path / "run" / "ckpt"
    (ckpt / "last.ckpt").mkdir(parents=True)  # shards of a killed save, no marker
    (ckpt / "last.ckpt" / "__0_0.distcp").write_bytes(b"")
    (ckpt / "step=2.ckpt").mkdir()
    (ckpt / "step=2.ckpt" / "complete.json").write_text(json.dumps({"global_step": 2}))
    config = str(ROOT / "configs" / "tiny_cpu_fsdp2.yaml")
    args = [SEARCHR1, "fit", "-c", config, f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.logger=false"]
    proc = run([*args, "--ckpt_path", str(ckpt / "last.ckpt")], tmp_path)
    assert proc.returncode == 2
    block = error_block(proc)
    assert f"{ckpt / 'last.ckpt'} is an incomplete sharded checkpoint" in block, block
    assert f"resume with --ckpt_path {ckpt / 'step=2.ckpt'}" in block, block
    assert "Initializing distributed" not in proc.stderr  # refused before the second rank was started


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_model_cache_follows_the_umask(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "good.jsonl").write_text(GOOD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEARCHR1_CACHE": str(cache)}
    env.pop("SEARCHR1_DEBUG", None)
    infer = [SEARCHR1, "infer", "--model", "tiny:micro", "--corpus", "good.jsonl", "--device", "cpu"]
    infer += ["--method", "direct", "--max-response-tokens", "2", "--no-color", "Who?"]
    proc = subprocess.run(
        infer, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, preexec_fn=lambda: os.umask(0o022)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (model,) = cache.glob("tiny-qwen2-*")
    assert mode(cache) == mode(model) == 0o755
    files = [p for p in model.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert {p.name: mode(p) for p in files} == {p.name: 0o644 for p in files}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_hf_export_weights_follow_the_umask(tmp_path, umask):
    """``safetensors`` creates its files 0600; the export's files get the umask's modes like the rest."""
    from searchr1.models.loading import load_causal_lm, load_tokenizer, save_hf_folder
    from searchr1.models.tiny import build_tiny_qwen2

    src = build_tiny_qwen2(tmp_path / "src", hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    old = os.umask(umask)
    try:
        out = save_hf_folder(load_causal_lm(str(src)), load_tokenizer(str(src)), tmp_path / "hf" / "last")
    finally:
        os.umask(old)
    assert mode(out) == 0o777 & ~umask
    modes = {p.name: mode(p) for p in out.iterdir()}
    assert "model.safetensors" in modes and modes == {name: 0o666 & ~umask for name in modes}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--topk", "2"], "serve: give either --index DIR (one or more) or --engine NAME"),
        (["infer", "--model", "tiny:micro", "--device", "cpu", "Who?"], "infer: give a search engine with --corpus"),
    ],
    ids=["serve", "infer"],
)
def test_a_missing_search_engine_is_a_short_error(tmp_path, args, named):
    block = error_block(run([SEARCHR1, *args], tmp_path))
    assert named in block, block
