"""fipo_nb: FIPO (Future-KL Influenced Policy Optimization) training, notebook first.

The maths lives in `fipo_nb.core`; configuration in `fipo_nb.config`.
"""

from .config import FIPOConfig
from .core import PolicyLossOutput, future_kl, group_advantages, influence_weights, policy_loss

__version__ = "0.1.0"

__all__ = [
    "FIPOConfig",
    "PolicyLossOutput",
    "future_kl",
    "group_advantages",
    "influence_weights",
    "policy_loss",
    "__version__",
]
