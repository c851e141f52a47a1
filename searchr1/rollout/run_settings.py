"""The settings a trained policy needs besides its weights to act as it did in training (``RunSettings``).

A policy trained with ``topk 1, max_turns 2, 32 tokens per turn`` and BM25 without stemming, evaluated with the
evaluation defaults (``topk 3, max_turns 4, 500 tokens``, Porter stemming), sees other documents and runs out of
turns: the trained default model scored EM 0.020 that way against 0.680 with its own settings. So the settings
travel with the model: the training module writes them into every Lightning checkpoint
(``checkpoint["searchr1"]["run"]``) and ``ExportPretrained`` writes them next to the weights as
``searchr1_run.json``; ``searchr1 eval`` / ``searchr1 infer`` read them as their defaults (flags still override).

What is recorded: every :class:`~searchr1.rollout.RolloutConfig` field (turns, token limits, ``topk``, protocol,
sampling), whether prompts use the chat template, and the retriever (:func:`describe_retriever`: BM25's corpus or
index folder with its ``k1``/``b``/stopwords/stemmer, a server's URLs, else only its class name).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchr1.retrieval import Retriever
from searchr1.rollout.config import RolloutConfig

RUN_SETTINGS_FILE = "searchr1_run.json"
BM25_BUILD_SETTINGS = ("k1", "b", "stopwords", "stemmer")
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k")
"""Rollout fields an evaluation chooses itself (greedy by default), not taken from the run."""


@dataclass
class RunSettings:
    """Rollout and retriever settings of a training run (JSON-safe values only).

    Attributes:
        rollout: the :class:`RolloutConfig` fields as trained (``dataclasses.asdict``).
        retriever: :func:`describe_retriever` of the training retriever, or None when unknown.
        use_chat_template: prompts were formatted with the tokenizer's chat template.
        source: where these settings were read from (not written).
    """

    rollout: dict[str, Any] = field(default_factory=dict)
    retriever: dict[str, Any] | None = None
    use_chat_template: bool = True
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form (``source`` left out)."""
        return {"rollout": dict(self.rollout), "retriever": self.retriever, "use_chat_template": self.use_chat_template}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> RunSettings:
        """Read :meth:`to_dict` output (unknown keys are ignored, so newer files still load)."""
        return cls(
            rollout=dict(data.get("rollout") or {}),
            retriever=data.get("retriever"),
            use_chat_template=bool(data.get("use_chat_template", True)),
            source=source,
        )

    def to_json(self) -> str:
        """The content of ``searchr1_run.json``."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def write(self, folder: str | Path) -> Path:
        """Write ``<folder>/searchr1_run.json``; returns its path."""
        path = Path(folder) / RUN_SETTINGS_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> RunSettings | None:
        """The settings next to an exported model (``<folder>/searchr1_run.json``), or None when there are none."""
        path = Path(folder) / RUN_SETTINGS_FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], source: str = "") -> RunSettings | None:
        """The settings of a ``SearchR1Module`` checkpoint: its ``searchr1.run`` entry, else (checkpoints written
        before it existed) the ``rollout`` and ``use_chat_template`` hyperparameters, without a retriever."""
        saved = (checkpoint.get("searchr1") or {}).get("run")
        if saved is not None:
            return cls.from_dict(saved, source)
        hparams = checkpoint.get("hyper_parameters") or {}
        if not isinstance(hparams.get("rollout"), dict):
            return None
        return cls(dict(hparams["rollout"]), None, bool(hparams.get("use_chat_template", True)), source)

    def rollout_fields(self) -> dict[str, Any]:
        """The recorded rollout fields that :class:`RolloutConfig` knows, sampling ones left out."""
        known = {f.name for f in dataclasses.fields(RolloutConfig)} - set(SAMPLING_FIELDS)
        return {k: v for k, v in self.rollout.items() if k in known}


def run_settings(rollout: RolloutConfig, retriever: Retriever | None, use_chat_template: bool) -> RunSettings:
    """The settings of a run that trains with ``rollout``, ``retriever`` and ``use_chat_template``."""
    return RunSettings(dataclasses.asdict(rollout), describe_retriever(retriever), bool(use_chat_template))


def describe_retriever(retriever: Retriever | None) -> dict[str, Any] | None:
    """What rebuilds ``retriever`` for evaluation: ``{"kind": "bm25", "corpus" | "index_dir", "k1", "b",
    "stopwords", "stemmer"}``, ``{"kind": "http", "url": [...]}``, else ``{"kind": <class name>}``."""
    if retriever is None:
        return None
    from searchr1.retrieval import BM25Retriever, HTTPRetriever
    from searchr1.retrieval.search_log import SearchRecorder

    while isinstance(retriever, SearchRecorder):  # the run's search log wraps the real engine
        retriever = retriever.retriever
    if isinstance(retriever, BM25Retriever):
        manifest = retriever.manifest
        settings = {k: manifest.settings[k] for k in BM25_BUILD_SETTINGS if k in manifest.settings}
        folder = retriever.saved_index
        where = {"corpus": _absolute(manifest.corpus_path)} if folder is None else {"index_dir": _absolute(str(folder))}
        return {"kind": "bm25", **where, **settings}
    if isinstance(retriever, HTTPRetriever):
        return {"kind": "http", "url": list(retriever.urls)}
    return {"kind": type(retriever).__name__}


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path
