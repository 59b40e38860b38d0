"""Settings: what a run is, declared once per field.

    fields.py      setting(): a field's doc, allowed values, scope and verl mapping, declared on the field;
                   the validation derived from them
    algorithm.py   FIPOConfig (the algorithm)
    training.py    TrainConfig (the run); settings only verl runs and only fipo_nb's own trainer runs at the end
    presets.py     named setups, and `key=value` overrides (the CLI's --set)
"""

from .algorithm import LOSSES, FIPOConfig
from .training import (
    ADAPTER_MODES, ANSWER_MODES, LR_SCHEDULES, REWARD_ERRORS, ROLLOUT_BACKENDS, STRATEGIES, TrainConfig,
)

__all__ = [
    "ADAPTER_MODES", "ANSWER_MODES", "FIPOConfig", "LOSSES", "LR_SCHEDULES", "REWARD_ERRORS", "ROLLOUT_BACKENDS",
    "STRATEGIES", "TrainConfig",
]
