"""Fixtures: a small synthetic task on disk and a micro Qwen2 whose tokenizer was trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.data.synthetic import generate_task, tokenizer_texts, write_task
from searchr1.models.tiny import build_tiny_qwen2

MICRO = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def task():
    return generate_task(seed=3, num_people=40, num_first_names=8, num_last_names=8)


@pytest.fixture(scope="module")
def task_files(task, tmp_path_factory):
    return write_task(task, tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def model_dir(task, tmp_path_factory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("micro"), texts=tokenizer_texts(task), vocab_size=600, **MICRO)
