"""Moving the trainer's weights into a vLLM engine: the worker extension its RPC calls, and the streaming helpers.

Nothing here imports vllm: :class:`VLLMWorkerExtension` is mixed into vLLM's worker by import path (engine arg
``worker_extension_cls``), and the helpers only touch torch tensors and safetensors files.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class VLLMWorkerExtension:
    """Methods mixed into every vLLM worker (engine arg ``worker_extension_cls``), called by name via RPC.

    Calling by name works with the in-process engine and with vLLM's multiprocess engine alike (a function
    passed to ``collective_rpc`` needs ``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` there).
    """

    def searchr1_reload_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> bool:
        """Load checkpoint-format ``weights`` (read once, lazily) in place, then re-tie the LM head.

        Returns True when a tied head was rebound.
        """
        self.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
        return self.searchr1_rebind_tied_lm_head()

    def searchr1_reload_weights_from_file(self, path: str) -> bool:
        """Like :meth:`searchr1_reload_weights`, reading a safetensors file (multiprocess engines)."""
        from safetensors.torch import load_file

        return self.searchr1_reload_weights(list(load_file(path).items()))

    def searchr1_rebind_tied_lm_head(self) -> bool:
        """Make a tied LM head use the (reloaded) embedding again and re-run its weight post-processing.

        On CPU, ``process_weights_after_loading`` packs the head's weight into a oneDNN/SGL handle; a reload
        that carries no ``lm_head.weight`` (tied checkpoints, ``named_parameters()``) or only the embedding
        leaves that handle holding the old values. Returns True when a tied head was rebound.
        """
        model = self.model_runner.get_model()
        config = getattr(model, "config", None)
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if not (getattr(config, "tie_word_embeddings", False) and head is not None and embed is not None):
            return False
        head.weight = embed.weight
        quant_method = getattr(head, "quant_method", None)
        if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
            quant_method.process_weights_after_loading(head)
        return True


class Counted:
    """An iterator passing items through and counting them."""

    def __init__(self, items: Iterable) -> None:
        self._items, self.count = iter(items), 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self):
        item = next(self._items)
        self.count += 1
        return item


def weight_chunks(weights: Iterable[tuple[str, torch.Tensor]], limit: int):
    """Consecutive lists of ``weights`` of at most ``limit`` bytes each (a larger tensor gets a list of its own)."""
    chunk, size = [], 0
    for name, tensor in weights:
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk


def save_unshared(weights: list[tuple[str, torch.Tensor]], path: str) -> None:
    """Write ``weights`` as safetensors, keeping one name per shared storage (tied heads share the embedding)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in weights:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            tensors[name] = tensor.cpu().contiguous()
    save_file(tensors, path)
