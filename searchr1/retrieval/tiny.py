"""A tiny randomly initialised BERT encoder built locally (tests, benchmarks, offline demos).

Nothing is downloaded: a WordPiece tokenizer is trained on the given texts with ``tokenizers`` and a
2-layer ``BertModel`` is initialised at random; both are written with ``save_pretrained`` so the normal
``from_pretrained`` path of :class:`~searchr1.retrieval.encoder.TextEncoder` loads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def make_tiny_encoder(
    out_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int = 2000,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny BERT (model + fast WordPiece tokenizer) into ``out_dir`` and return the folder."""
    from transformers import BertModel

    return _tiny_bert(BertModel, out_dir, texts, vocab_size, hidden_size, num_layers, max_positions, seed)


def make_tiny_cross_encoder(
    out_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int = 1000,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_positions: int = 256,
    seed: int = 0,
) -> Path:
    """Write a tiny randomly initialised cross-encoder (``BertForSequenceClassification``, one label, and a
    WordPiece tokenizer trained on ``texts``) into ``out_dir``; ``sentence_transformers.CrossEncoder`` loads it.

    Its scores are random but deterministic: enough to test batching, ordering and serving, not ranking quality.
    """
    from transformers import BertForSequenceClassification

    return _tiny_bert(
        BertForSequenceClassification, out_dir, texts, vocab_size, hidden_size, num_layers, max_positions, seed, 1
    )


def _tiny_bert(
    model_cls: type,
    out_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    max_positions: int,
    seed: int,
    num_labels: int | None = None,
) -> Path:
    """Train a WordPiece tokenizer on ``texts``, initialise ``model_cls`` at random, save both to ``out_dir``."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, show_progress=False)
    BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, model_max_length=max_positions).save_pretrained(out)
    torch.manual_seed(seed)
    labels = {} if num_labels is None else {"num_labels": num_labels}
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
        **labels,
    )
    model_cls(config).save_pretrained(out)
    return out
