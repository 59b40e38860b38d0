"""Settings: what a run is, declared once per field.

    settings.py   FIPOConfig (the algorithm) and TrainConfig (the run): each field's type, allowed
                  values, doc and verl mapping where it is declared
    presets.py    named setups, and `key=value` overrides (the CLI's --set)
"""

from .settings import (
    ADAPTER_MODES, ANSWER_MODES, LOSSES, LR_SCHEDULES, REWARD_ERRORS, ROLLOUT_BACKENDS, STRATEGIES, FIPOConfig,
    TrainConfig,
)

__all__ = [
    "ADAPTER_MODES", "ANSWER_MODES", "FIPOConfig", "LOSSES", "LR_SCHEDULES", "REWARD_ERRORS", "ROLLOUT_BACKENDS",
    "STRATEGIES", "TrainConfig",
]
