"""fipo_nb: FIPO (Future-KL Influenced Policy Optimization) training, notebook first.

The maths lives in `fipo_nb.core`; configuration in `fipo_nb.config`; the training loop in
`fipo_nb.trainer` (`fipo_nb.FIPOTrainer`, imported on first use: it pulls in the model stack).
"""

import logging

from .config import FIPOConfig, TrainConfig
from .core import PolicyLossOutput, future_kl, group_advantages, influence_weights, policy_loss

__version__ = "0.1.0"


class _NoHubKernelNotice(logging.Filter):
    """bitsandbytes on CPU logs, at import, that it could not fetch an optional kernel from the
    Hugging Face hub (the `kernels` package); fipo_nb works offline and uses the built-in path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "from kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoHubKernelNotice())

__all__ = [
    "FIPOConfig",
    "FIPOTrainer",
    "TrainConfig",
    "PolicyLossOutput",
    "future_kl",
    "group_advantages",
    "influence_weights",
    "policy_loss",
    "__version__",
]


def __getattr__(name: str):
    if name == "FIPOTrainer":  # lazily: importing the trainer loads transformers, peft and math-verify
        from .train.trainer import FIPOTrainer

        return FIPOTrainer
    raise AttributeError(f"module 'fipo_nb' has no attribute {name!r}")
