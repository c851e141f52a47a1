"""Training: the LightningModule (policy, reference, critic), its update loop and callbacks."""

from searchr1.training.config import AlgorithmConfig

__all__ = ["AlgorithmConfig", "SearchR1Module"]


def __getattr__(name: str):
    if name == "SearchR1Module":
        from searchr1.training.module import SearchR1Module

        return SearchR1Module
    raise AttributeError(name)
