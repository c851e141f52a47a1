"""Load what evaluation and inference need: the policy (HF path or Lightning ``.ckpt``), its backend, a retriever.

A ``.ckpt`` written by ``SearchR1Module`` is read with ``torch.load(weights_only=True)`` (its hyperparameters
are plain types): the model is built from ``hyper_parameters["model_name_or_path"]`` and the ``state_dict``
entries under ``policy.`` are loaded into it (strictly: a missing or unexpected key is an error). Anything
else is a Hugging Face model name or folder (or ``tiny:<preset>``) loaded with ``from_pretrained``. Either way the
run's rollout and retriever settings come along when the model carries them (:class:`RunSettings`: in the
checkpoint, or ``searchr1_run.json`` in an exported folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from searchr1.retrieval import Retriever
from searchr1.rollout import GenerationBackend, get_backend_class
from searchr1.rollout.run_settings import RunSettings

POLICY_PREFIX = "policy."


@dataclass
class LoadedPolicy:
    """A policy ready for generation.

    Attributes:
        model: the causal LM (eval mode, on ``device``).
        tokenizer: its tokenizer (left padding, pad token set).
        use_chat_template: from the checkpoint's hyperparameters (True for plain model paths).
        base_model: the ``from_pretrained`` path the weights were built on.
        source: what was given (model path or checkpoint file).
        protocol: the rollout protocol the checkpoint was trained with (``search_r1`` for plain model paths).
        run: the training run's rollout and retriever settings, when the model carries them (else None).
    """

    model: Any
    tokenizer: Any
    use_chat_template: bool
    base_model: str
    source: str
    protocol: str = "search_r1"
    run: RunSettings | None = None


def is_checkpoint(path: str) -> bool:
    """True for a Lightning checkpoint file (``.ckpt``)."""
    return str(path).endswith(".ckpt")


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The hyperparameters and the policy weights (``policy.`` prefix removed) of a ``SearchR1Module`` checkpoint."""
    return _split_checkpoint(_load_checkpoint(path), path)


def _load_checkpoint(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _split_checkpoint(ckpt: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    hparams = ckpt.get("hyper_parameters") or {}
    if "model_name_or_path" not in hparams:
        raise ValueError(
            f"{path} has no hyper_parameters['model_name_or_path']; is it a SearchR1Module checkpoint? "
            "Pass the Hugging Face model folder instead"
        )
    state = {k[len(POLICY_PREFIX) :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(POLICY_PREFIX)}
    if not state:
        raise ValueError(f"{path} has no state_dict entries under '{POLICY_PREFIX}' (no policy weights)")
    return hparams, state


def load_policy(
    model: str,
    tokenizer: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    chat_template: str | None = None,
) -> LoadedPolicy:
    """Load a policy from a model path or a ``SearchR1Module`` checkpoint.

    Args:
        model: Hugging Face name/folder, ``tiny:<preset>``, or a ``.ckpt`` file.
        tokenizer: tokenizer path; default the checkpoint's ``tokenizer`` hyperparameter, else the model's.
        dtype: ``float32``, ``bfloat16`` or ``float16``; default the checkpoint's ``dtype``, else float32.
        device: ``cpu``/``cuda``/…; default CUDA when available.
        chat_template: a Jinja chat-template file replacing the tokenizer's; default the checkpoint's
            ``chat_template`` hyperparameter, else the tokenizer's own.
    """
    from searchr1.models import LoRAConfig, load_causal_lm, load_tokenizer

    hparams: dict[str, Any] = {}
    state = None
    base = model
    if is_checkpoint(model):
        ckpt = _load_checkpoint(model)
        hparams, state = _split_checkpoint(ckpt, model)
        run = RunSettings.from_checkpoint(ckpt, source=model)
        base = hparams["model_name_or_path"]
    else:
        run = RunSettings.read(model) if Path(model).is_dir() else None
    dtype = dtype or hparams.get("dtype")
    if dtype is not None and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    lora = LoRAConfig(**hparams["lora"]) if hparams.get("lora") else None  # such checkpoints hold the adapters only
    lm = load_causal_lm(base, dtype=getattr(torch, dtype) if dtype else None, lora=lora)
    if state is not None:
        missing, unexpected = lm.load_state_dict(state, strict=False)
        if lora is not None:
            missing = [k for k in missing if ".lora_" in k]
        if missing or unexpected:
            raise ValueError(
                f"{model}: policy weights do not fit {base} (missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}); was the checkpoint trained from another model?"
            )
    if lora is not None:
        lm = lm.merge_and_unload()  # generation runs the plain model with merged weights
    lm.config.use_cache = True  # training turns the cache off; generation wants it
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(
        tokenizer or hparams.get("tokenizer") or base, chat_template=chat_template or hparams.get("chat_template")
    )
    protocol = (run.rollout if run is not None else {}).get("protocol", "search_r1")
    use_chat = run.use_chat_template if run is not None else bool(hparams.get("use_chat_template", True))
    return LoadedPolicy(lm.to(device).eval(), tok, use_chat, base, model, protocol, run)


def build_backend_for(
    policy: LoadedPolicy, backend: str = "hf", batch_size: int = 64, export_dir: str | None = None, **kwargs: Any
) -> GenerationBackend:
    """A generation backend for ``policy``: ``hf`` on the loaded model, or ``vllm`` on its weights.

    vLLM loads weights from a folder: a checkpoint's policy is first saved to ``export_dir`` (required then).
    """
    cls = get_backend_class(backend)
    if getattr(cls, "shares_policy_weights", False):  # samples with the loaded module itself
        return cls(policy.model, policy.tokenizer, batch_size=batch_size, **kwargs)
    path = policy.source
    if is_checkpoint(path):
        if export_dir is None:
            raise ValueError(f"backend {backend!r} loads weights from a folder: pass export_dir for {path}")
        path = str(export_policy(policy, export_dir))
    else:
        from searchr1.models import resolve_model_path

        path = resolve_model_path(path)
    return cls(model=path, **kwargs)


def export_policy(policy: LoadedPolicy, out_dir: str | Path) -> Path:
    """Save the policy (model + tokenizer) as a Hugging Face folder, atomically (e.g. a ``.ckpt`` for vLLM)."""
    from searchr1.models import save_hf_folder

    return save_hf_folder(policy.model, policy.tokenizer, out_dir)


def build_retriever(
    corpus: str | None = None,
    index_dir: str | None = None,
    url: str | None = None,
    device: str | None = None,
    bm25: dict[str, Any] | None = None,
) -> Retriever | None:
    """The search engine: a retrieval server (``url``), an index folder (BM25 or dense, by its manifest), or
    BM25 over a corpus file indexed in memory. None when nothing is given.

    ``bm25``: build settings (``k1``, ``b``, ``stopwords``, ``stemmer``) of a BM25 index built here from ``corpus``
    (a saved index keeps its own).
    """
    bm25 = bm25 or {}
    given = [x for x in (corpus, index_dir, url) if x]
    if len(given) > 1 and not (corpus and index_dir and not url):
        raise ValueError("give one of --corpus, --index-dir or --retriever-url (--corpus with --index-dir builds it)")
    if url:
        from searchr1.retrieval import HTTPRetriever

        return HTTPRetriever(url=url)
    if index_dir:
        from searchr1.retrieval import BM25Retriever
        from searchr1.retrieval.indexes import load_retriever

        if corpus and not (Path(index_dir) / "manifest.json").exists():
            return BM25Retriever(index_dir=index_dir, corpus=corpus, show_progress=True, **bm25)
        return load_retriever(index_dir, device=device)
    if corpus:
        from searchr1.retrieval import BM25Retriever

        if not Path(corpus).is_file():
            raise FileNotFoundError(f"corpus {corpus} does not exist")
        return BM25Retriever(corpus=corpus, **bm25)
    return None
