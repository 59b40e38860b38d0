"""What shapes the sampled distribution, and nothing else: the run's own settings in force while sampling.

    sampling_config      a GenerationConfig that names every logits processor (NEUTRAL_SAMPLING) so
                         transformers fills nothing in from the model's own generation_config
    model_defaults_off   the model's own generation_config swapped for the library's while sampling
    sampling_mode        no grad, and gradient checkpointing (which turns the KV cache off) paused
"""

from __future__ import annotations

import contextlib

import torch

from ..models import is_activation_checkpointing, set_activation_checkpointing


# Every logits processor generate() knows, at its neutral value. transformers fills each field a
# GenerationConfig leaves unset (or at the library default) from the model's own generation_config
# (Qwen2.5-Instruct ships repetition_penalty=1.05, top_k=20, top_p=0.8): sampling would then come from
# a distribution that the log-prob pass never scores, an uncorrected off-policy bias.
NEUTRAL_SAMPLING = dict(
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0, min_length=0, min_new_tokens=None, bad_words_ids=None, suppress_tokens=None,
    begin_suppress_tokens=None, sequence_bias=None, forced_bos_token_id=None, forced_eos_token_id=None,
    typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, min_p=None, top_h=None, exponential_decay_length_penalty=None,
    renormalize_logits=False, guidance_scale=None, watermarking_config=None, num_beams=1, num_beam_groups=1,
    num_return_sequences=1, penalty_alpha=None, dola_layers=None, prompt_lookup_num_tokens=None,
    output_scores=False, output_logits=False, return_dict_in_generate=False,
)


def sampling_config(*, temperature: float, top_p: float, top_k: int, max_new_tokens: int, stop_ids: list[int],
                    pad_id: int):
    """A GenerationConfig that says everything: only these settings shape the sampled distribution."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()  # fields of this transformers version (some above are newer or older)
    neutral = {key: value for key, value in NEUTRAL_SAMPLING.items() if key in known}
    return GenerationConfig(
        **neutral, do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p if temperature > 0 else 1.0, top_k=top_k if temperature > 0 else 0,
        max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id, use_cache=True,
    )


@contextlib.contextmanager
def model_defaults_off(model):
    """Swap each wrapped transformers model's own generation_config for the library's defaults
    while sampling, so that nothing of it (repetition penalty, top_k, suppressed words, ...) can
    be merged into the config generate() is given; restored afterwards."""
    from transformers import GenerationConfig

    swapped = [m for m in model.modules() if isinstance(m.__dict__.get("generation_config"), GenerationConfig)]
    saved = [m.generation_config for m in swapped]
    for module in swapped:
        module.generation_config = GenerationConfig()
    try:
        yield
    finally:
        for module, config in zip(swapped, saved):
            module.generation_config = config


@contextlib.contextmanager
def sampling_mode(model):
    """No grad, and gradient checkpointing paused (it turns the KV cache off in train mode)."""
    checkpointing = is_activation_checkpointing(model)
    if checkpointing:
        set_activation_checkpointing(model, False)
    try:
        with torch.no_grad():
            yield
    finally:
        if checkpointing:
            set_activation_checkpointing(model, True)
