"""Rollout fixtures (tiny tokenizer, real BM25) for the reward tests that score real engine trajectories."""

from tests.rollout.conftest import bm25, tiny_model_dir, tiny_tokenizer  # noqa: F401
