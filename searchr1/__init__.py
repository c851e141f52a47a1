"""searchr1: train LLMs with reinforcement learning to reason and call a search engine (Search-R1).

The package is organised by stage: ``algorithms`` (pure tensor math), ``rewards`` (QA scoring),
``retrieval`` (indexes, server, client), ``rollout`` (multi-turn generation with retrieval and
loss masks), ``models`` (loading and saving models), ``data`` (prompts and QA data) and ``training`` (the
LightningModule and callbacks); ``docs/architecture.md`` says what each may import.
Heavy submodules are imported lazily so ``import searchr1`` stays fast.
"""

from __future__ import annotations

from searchr1._lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "SearchR1Module": "searchr1.training.module",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]
