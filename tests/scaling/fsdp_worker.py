"""FSDP on CPU (gloo, 2 processes) without Lightning: the wrapping, generation and weight-gathering code paths.

Lightning's ``FSDPStrategy`` refuses CPU, but torch's FSDP itself runs there, so this script wraps the tiny policy
exactly as ``FSDPStrategy``'s ``configure_model`` context would (``enable_wrap`` with FSDP's settings, then
:func:`searchr1.training.scaling.fsdp_wrap`) and checks, on every rank, against an unwrapped copy:

* ``iter_full_params`` yields the plain Hugging Face names with the full, unchanged tensors;
* greedy ``generate`` inside ``full_params_for_generation`` gives the unwrapped model's tokens;
* a forward through the FSDP root gives the unwrapped logits and backward reaches the shards (the update's path).

Each rank writes ``OUT/rank{r}.json``. Run: ``python -m torch.distributed.run --nproc_per_node 2 fsdp_worker.py
MODEL_DIR OUT``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import enable_wrap
from transformers import AutoModelForCausalLM

from searchr1.training.scaling import fsdp_wrap, full_params_for_generation, iter_full_params


def main() -> None:
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    reference = {n: p.detach().clone() for n, p in plain.named_parameters()}
    with enable_wrap(wrapper_cls=FullyShardedDataParallel, device_id=torch.device("cpu"), use_orig_params=True):
        wrapped = fsdp_wrap(AutoModelForCausalLM.from_pretrained(model_dir).eval())
    units = sum(isinstance(m, FullyShardedDataParallel) for m in wrapped.modules())
    gathered = list(iter_full_params(wrapped))
    prompt = torch.tensor([[5 + rank, 17, 29, 3]])
    with torch.no_grad():
        expected = plain.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)
        with full_params_for_generation(wrapped):
            got = wrapped.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)
    logits = wrapped(input_ids=prompt).logits
    with torch.no_grad():
        logits_diff = (logits - plain(input_ids=prompt).logits).abs().max().item()
    logits.float().pow(2).mean().backward()
    result = {
        "units": units,
        "names": [n for n, _ in gathered],
        "plain_names": list(reference),
        "max_abs_diff": max((t - reference[n]).abs().max().item() for n, t in gathered if n in reference),
        "generated": got.tolist(),
        "expected": expected.tolist(),
        "logits_max_abs_diff": logits_diff,
        "grads": sum(p.grad is not None for p in wrapped.parameters()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    # Teardown: wait for every rank, destroy the group while the interpreter is whole, then skip interpreter
    # finalisation. Gloo's worker threads can still hold tensors whose release needs the GIL; at finalisation that
    # aborts the process now and then ("terminate called without an active exception", SIGABRT).
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
