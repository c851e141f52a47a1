"""docs/search_r1_parity.md's table is what the four paper configs hold, and its `same` rows really are the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["ppo_qwen2.5-3b", "grpo_qwen2.5-3b", "ppo_qwen2.5-3b_format", "grpo_qwen2.5-3b_format"]
RANKS = 8
ABSENT = object()


def _rows() -> list[dict[str, str]]:
    lines = (ROOT / "docs" / "search_r1_parity.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Search-R1 knob |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        rows.append(dict(zip(("knob", "theirs", "key", "ours", "relation"), cells)))
    return rows


ROWS = _rows()


def _per_config(cell: str) -> list[Any]:
    """``a / b / c / d`` (or one value for all) as YAML values; ``—`` is ABSENT."""
    parts = cell.split(" / ") if " / " in cell else [cell] * len(CONFIGS)
    assert len(parts) == len(CONFIGS), cell
    return [ABSENT if p == "—" else yaml.safe_load(p.strip("`")) for p in parts]


def _lookup(config: dict, path: str) -> Any:
    """``a.b.c`` in a parsed config; ``callbacks[Name]`` picks the list item whose class_path ends with Name."""
    node: Any = config
    for part in path.split("."):
        name, _, selector = part.partition("[")
        if name not in node:
            return ABSENT
        node = node[name]
        if selector:
            wanted = selector.rstrip("]")
            node = next((item for item in node if item["class_path"].endswith("." + wanted)), ABSENT)
            if node is ABSENT:
                return ABSENT
    return node


@pytest.fixture(scope="module")
def configs() -> list[dict]:
    return [yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()) for name in CONFIGS]


def test_table_covers_the_issue_knobs() -> None:
    keys = " ".join(r["key"] for r in ROWS)
    for key in ("top_p", "entropy_coef", "mini_batch_size", "max_turns", "lr_warmup_ratio", "critic_lr_warmup_ratio"):
        assert key in keys
    for knob in ("val_before_train", "total_training_steps", "save_freq", "test_freq", "chat template", "precision"):
        assert any(knob in r["knob"] for r in ROWS), knob


@pytest.mark.parametrize("row", [r for r in ROWS if r["key"] != "—"], ids=lambda r: r["key"])
def test_configs_hold_the_tables_values(row: dict[str, str], configs: list[dict]) -> None:
    keys = [k.strip().strip("`") for k in row["key"].split(" x ")]
    ours = [_per_config(v) for v in row["ours"].split(" x ")]
    for key, values in zip(keys, ours):
        for name, config, value in zip(CONFIGS, configs, values):
            assert _lookup(config, key) == value, f"{name}: {key}"


SAME_ROWS = [r for r in ROWS if r["key"] != "—" and " x " not in r["key"] and not r["relation"].startswith("departure")]


@pytest.mark.parametrize("row", SAME_ROWS, ids=lambda r: r["knob"])
def test_same_rows_match_search_r1(row: dict[str, str]) -> None:
    theirs, ours = _per_config(row["theirs"]), _per_config(row["ours"])
    relation = row["relation"]
    assert relation.startswith(("same", "per rank")), relation
    for t, o in zip(theirs, ours):
        if relation.startswith("per rank"):
            assert t / RANKS == o
        else:
            assert t == o


def test_every_departure_says_why() -> None:
    for row in ROWS:
        if row["relation"].startswith("departure"):
            assert len(row["relation"]) > len("departure: ") + 20, row["knob"]
