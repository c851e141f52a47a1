"""Multi-turn rollout with search: the engine, its containers, config and generation backends."""

from searchr1.rewards.qa import extract_answer  # one definition, shared with the rewards
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
from searchr1.rollout.engine import STOP_STRINGS, RolloutEngine
from searchr1.rollout.parsing import Action, parse_action
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
