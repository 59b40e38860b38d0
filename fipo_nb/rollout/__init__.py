"""Rollouts: G sampled responses per prompt, as token ids with masks and finish reasons.

    generate.py   generate(): prompts -> Rollout, with only the run's sampling settings in force
    compact.py    fipo_nb's decode loop (the "compact" backend): finished rows leave the batch
"""

from .generate import (
    BACKENDS, Rollout, concat_rollouts, decode_responses, encode_prompts, eos_token_ids, format_prompt, generate,
    model_defaults_off, pad_token_id, sampling_config, sampling_mode,
)

__all__ = [
    "BACKENDS", "Rollout", "concat_rollouts", "decode_responses", "encode_prompts", "eos_token_ids", "format_prompt",
    "generate", "model_defaults_off", "pad_token_id", "sampling_config", "sampling_mode",
]
