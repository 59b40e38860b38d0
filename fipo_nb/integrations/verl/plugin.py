"""The part of the verl integration that runs inside verl's workers (imports verl at import time).

    actor_rollout_ref.model.external_lib=fipo_nb.integrations.verl

makes every worker import `fipo_nb.integrations.verl`, which imports this module when verl is
loaded. Importing it registers the policy loss "fipo_nb" with verl (loss.py) and installs the
trace hook on the actor's loss (traces.py).
"""

from .loss import (  # noqa: F401  (importing loss.py registers the loss with verl)
    LOSS_NAME, VERL_NAMES, FIPOPolicyLossConfig, fipo_config_of, fipo_nb_policy_loss, verl_metrics,
)
from .traces import HOOK, TraceHook, install_trace_hook, traced_ppo_loss  # noqa: F401

install_trace_hook()
