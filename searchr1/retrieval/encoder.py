"""Text encoder for dense retrieval: a ``transformers`` model, pooled and L2-normalised (E5 recipe).

Default ``intfloat/e5-base-v2`` as in Search-R1: mean pooling over non-pad tokens, L2 normalisation,
``"query: "`` / ``"passage: "`` prefixes, fp16 on GPU. Pooling is a registry (``mean``, ``cls``); so are the
presets that set pooling and prefixes by model family (``e5``, ``bge``, ``minilm``), so users do not hand-set them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from searchr1.registry import Registry

# pooling functions ``(hidden (B, T, H), mask (B, T)) -> (B, H)``
POOLERS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("pooling")
# pooling and prefixes by model family
ENCODER_PRESETS: Registry[dict[str, str]] = Registry("encoder preset")


@POOLERS.register("mean")
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the hidden states of real tokens: ``(B, T, H), (B, T) -> (B, H)``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@POOLERS.register("cls")
def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the first token: ``(B, T, H) -> (B, H)``."""
    return hidden[:, 0]


# E5 model cards: mean pooling and query/passage prefixes; BGE: CLS pooling; sentence-transformers MiniLM: mean
ENCODER_PRESETS.register("e5")({"pooling": "mean", "query_prefix": "query: ", "passage_prefix": "passage: "})
ENCODER_PRESETS.register("bge")({"pooling": "cls", "query_prefix": "", "passage_prefix": ""})
ENCODER_PRESETS.register("minilm")({"pooling": "mean", "query_prefix": "", "passage_prefix": ""})


def encoder_preset(name: str, **overrides: str | None) -> dict[str, str]:
    """Pooling and prefixes of a preset, with the non-None ``overrides`` (``pooling``, ``query_prefix``,
    ``passage_prefix``) replacing its values; the error lists the valid presets."""
    return {**ENCODER_PRESETS.get(name), **{k: v for k, v in overrides.items() if v is not None}}


def get_pooler(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Pooling function by name; the error lists the valid ones."""
    return POOLERS.get(name)


class TextEncoder:
    """Encodes queries and passages into unit vectors.

    Args:
        model_name_or_path: Hugging Face name or local folder with a model and tokenizer.
        preset: ``e5`` (mean pooling, ``"query: "``/``"passage: "``), ``bge`` (CLS, no prefixes) or ``minilm``
            (mean, no prefixes): the defaults of the three settings below.
        pooling: pooling registry name (``mean`` for E5, ``cls`` for BGE-style models); None = the preset's.
        query_prefix: prepended to every query; None = the preset's.
        passage_prefix: prepended to every passage; None = the preset's.
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass.
        device: ``cuda``, ``cpu`` or None (CUDA when available).
        fp16: half precision on CUDA (ignored on CPU).
    """

    def __init__(
        self,
        model_name_or_path: str = "intfloat/e5-base-v2",
        pooling: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
        fp16: bool = True,
        preset: str = "e5",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        chosen = encoder_preset(preset, pooling=pooling, query_prefix=query_prefix, passage_prefix=passage_prefix)
        pooling, query_prefix, passage_prefix = chosen["pooling"], chosen["query_prefix"], chosen["passage_prefix"]
        self.model_name_or_path = model_name_or_path
        self.pooling = pooling
        self._pool = get_pooler(pooling)
        self.query_prefix, self.passage_prefix = query_prefix, passage_prefix
        self.max_length, self.batch_size = max_length, batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        dtype = torch.float16 if fp16 and self.device.type == "cuda" else torch.float32
        self.model = AutoModel.from_pretrained(model_name_or_path, dtype=dtype).to(self.device).eval()
        self._max_tokens = min(max_length, getattr(self.model.config, "max_position_embeddings", max_length))

    @property
    def dim(self) -> int:
        """Embedding size ``H``."""
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """Embed ``texts`` (with the query or passage prefix) into ``(len(texts), H)`` float32 unit rows."""
        prefix = self.query_prefix if is_query else self.passage_prefix
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start : start + self.batch_size]]
            enc = self.tokenizer(batch, max_length=self._max_tokens, padding=True, truncation=True, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            hidden = self.model(**enc).last_hidden_state  # (B, T, H)
            pooled = F.normalize(self._pool(hidden, enc["attention_mask"]).float(), dim=-1)  # (B, H)
            out[start : start + len(batch)] = pooled.cpu().numpy()
        return out

    def settings(self) -> dict[str, object]:
        """What the manifest records (and checks) about this encoder."""
        return {
            "encoder": self.model_name_or_path,
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "max_length": self.max_length,
            "dim": self.dim,
        }
