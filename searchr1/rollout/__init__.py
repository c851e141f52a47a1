"""Multi-turn rollout with search: the engine, its containers, config and generation backends."""

from searchr1.protocols import STOP_STRINGS, Action, extract_answer, parse_action
from searchr1.rollout.backends import (
    GenerationBackend,
    GenerationOutput,
    HFBackend,
    SamplingParams,
    ScriptedBackend,
    build_backend,
    get_backend_class,
)
from searchr1.rollout.config import RolloutConfig
from searchr1.rollout.engine import RolloutEngine
from searchr1.rollout.types import RolloutBatch, Trajectory

__all__ = [
    "STOP_STRINGS",
    "Action",
    "GenerationBackend",
    "GenerationOutput",
    "HFBackend",
    "RolloutBatch",
    "RolloutConfig",
    "RolloutEngine",
    "SamplingParams",
    "ScriptedBackend",
    "Trajectory",
    "build_backend",
    "extract_answer",
    "get_backend_class",
    "parse_action",
]
