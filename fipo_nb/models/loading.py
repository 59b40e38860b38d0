"""Policies to train: load_policy (qlora | lora | full) from a name, a folder or a model object.

Models are never switched to eval(): bitsandbytes 0.50 on CPU repacks 4-bit weights during
an eval-mode no-grad forward, after which every training forward fails. Dropout is forced to
0 instead, so train() mode computes the same function as eval().
"""

from __future__ import annotations

import contextlib
import functools
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..config import ADAPTER_MODES as MODES
from .offline import SMOLLM2, TINY_MODELS, smollm2_checkpoint, tiny_checkpoint, tiny_model

HUB_PROBE_S = 3.0  # how long one connection attempt to the hub may take before it counts as unreachable


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
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    name = model if isinstance(model, str) else type(model).__name__
    quantization = _quantization_config(mode, dtype)
    model, tokenizer = _model_and_tokenizer(model, tokenizer, quantization, dtype=dtype, device=device, seed=seed)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    switch_off_dropout(model)  # called from here: its warning names load_policy's caller (stacklevel 3)
    if quantization is None:
        model.to(device=device, dtype=dtype)
    if gradient_checkpointing:
        set_activation_checkpointing(model, True)
    model = _trainable_model(model, mode, lora_r=lora_r, lora_alpha=lora_alpha, target_modules=target_modules)
    model.train()
    return Policy(model=model, tokenizer=tokenizer, name=name, mode=mode)


def _quantization_config(mode: str, dtype: torch.dtype):
    """The 4-bit NF4 load config (double quantisation, compute in `dtype`) for mode "qlora", else None."""
    if mode != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
    )


def _checkpoint_source(name: str, seed: int = 0) -> str:
    """Where from_pretrained reads a named model: the offline models' folders, else the name itself
    (a hub id or a local folder)."""
    if name == SMOLLM2:
        return str(smollm2_checkpoint())
    if name in TINY_MODELS:
        return str(tiny_checkpoint(name, seed))
    return name


def _model_and_tokenizer(model, tokenizer, quantization, *, dtype: torch.dtype, device: torch.device, seed: int):
    """(model, tokenizer) for a name, a folder or a model object; a tiny model is built in memory
    unless it is to be quantised, which happens only when loading from a folder."""
    if not isinstance(model, str):
        if tokenizer is None:
            raise ValueError("load_policy: pass `tokenizer` along with a model object")
        if quantization is not None:
            raise ValueError("load_policy: mode='qlora' needs a name or path (quantisation happens at load time)")
        return model, tokenizer
    if model in TINY_MODELS and quantization is None:
        return tiny_model(model, seed)
    return _from_pretrained(_checkpoint_source(model, seed), tokenizer, quantization, dtype=dtype, device=device)


def _from_pretrained(source: str, tokenizer, quantization, *, dtype: torch.dtype, device: torch.device):
    """(model, tokenizer) read by transformers from a folder or the hub; ModelLoadError says what to
    do when neither has it. Without a network the hub is not asked at all (its client would retry for
    a minute): the Hugging Face cache is read, or the error comes at once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else None
    offline = not Path(source).is_dir() and not hub_reachable()
    if offline:
        kwargs["local_files_only"] = True
    try:
        with _no_progress_bars_in_notebooks():
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source, local_files_only=offline)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:  # not a folder here, and the hub unreachable or without that id
        where = ("the Hugging Face hub cannot be reached from here and its cache does not hold it" if offline else
                 f"the Hugging Face hub did not give it ({str(exc).splitlines()[0]})")
        raise ModelLoadError(
            f"model {source!r} cannot be loaded: it is not a model folder here, and {where}; download it where "
            "there is network and pass model=/path/to/folder"
        ) from exc
    return model, tokenizer


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the Hugging Face hub can be reached: False at once under HF_HUB_OFFLINE, else one TCP
    connection to its host (at most HUB_PROBE_S seconds), asked once per process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=HUB_PROBE_S):
            return True
    except OSError:  # no name resolution, no route, refused, timed out
        return False


@contextlib.contextmanager
def _no_progress_bars_in_notebooks():
    """transformers' "Loading weights" bar is a widget in a notebook, saved frozen at 0% in an executed
    notebook's output: off while loading there (terminals keep it)."""
    from transformers.utils import logging as hf_logging

    quiet = "ipykernel" in sys.modules and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def _trainable_model(model, mode: str, *, lora_r: int, lora_alpha: int, target_modules):
    """The model with what trains switched on: every weight ("full"), or LoRA adapters on
    `target_modules` ("lora", "qlora"; peft freezes the base)."""
    if mode not in ("lora", "qlora"):
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if mode == "qlora":  # fp32 norms, input grads; checkpointing was set by load_policy, non-reentrant
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    with warnings.catch_warnings():  # peft asks transformers 5 for a renamed property: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)
