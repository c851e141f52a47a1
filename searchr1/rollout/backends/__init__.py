"""Generation backends behind one protocol (``base``); ``"vllm"`` is imported only when asked for."""

from searchr1.rollout.backends.base import (
    BACKENDS,
    GenerationBackend,
    GenerationOutput,
    SamplingParams,
    build_backend,
    get_backend_class,
)
from searchr1.rollout.backends.hf import HFBackend
from searchr1.rollout.backends.scripted import ScriptedBackend
from searchr1.rollout.backends.teacher import TeacherBackend

__all__ = [
    "BACKENDS",
    "GenerationBackend",
    "GenerationOutput",
    "HFBackend",
    "SamplingParams",
    "ScriptedBackend",
    "TeacherBackend",
    "build_backend",
    "get_backend_class",
]
