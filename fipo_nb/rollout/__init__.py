"""Rollouts: G sampled responses per prompt, as token ids with masks and finish reasons.

    records.py    the Rollout record (select, join, move its rows)
    sampling.py   what shapes the sampled distribution: the GenerationConfig, the model's own defaults off
    generate.py   generate(): prompts -> Rollout, with only the run's sampling settings in force
    compact.py    fipo_nb's decode loop (the "compact" backend): finished rows leave the batch
"""

from .generate import BACKENDS, decode_responses, encode_prompts, eos_token_ids, format_prompt, generate, pad_token_id
from .records import Rollout, concat_rollouts
from .sampling import model_defaults_off, sampling_config, sampling_mode

__all__ = [
    "BACKENDS", "Rollout", "concat_rollouts", "decode_responses", "encode_prompts", "eos_token_ids", "format_prompt",
    "generate", "model_defaults_off", "pad_token_id", "sampling_config", "sampling_mode",
]
