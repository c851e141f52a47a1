"""Files shipped inside the installed package: ``pkg:`` paths and the embedded default config."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PKG_PREFIX = "pkg:"
DEFAULT_CONFIG = "learn_cpu.yaml"
"""The embedded default: a tiny policy learns to search on the synthetic task (configs/learn_cpu.yaml)."""
PIPELINE_DEMO_CONFIG = "tiny_cpu.yaml"
"""The HotpotQA-sample pipeline demo (an untrained tiny policy; configs/tiny_cpu.yaml)."""


def package_root() -> Path:
    """The folder of the installed ``searchr1`` package."""
    return Path(str(files("searchr1")))


def package_path(spec: str) -> str:
    """``pkg:assets/x.jsonl`` → the absolute path of that file inside the installed package; other strings unchanged."""
    if isinstance(spec, str) and spec.startswith(PKG_PREFIX):
        return str(package_root() / spec[len(PKG_PREFIX) :])
    return spec


def default_config_path(name: str = DEFAULT_CONFIG) -> str:
    """A config shipped in the package: the embedded default, or ``name`` (e.g. :data:`PIPELINE_DEMO_CONFIG`)."""
    return str(package_root() / "configs" / name)
