"""`fipo_nb.plan`: the public path of `fipo_nb.integrations.verl.plan`, where the code lives (README and notebooks import from here)."""

from .integrations.verl.plan import Plan, model_shape, plan  # noqa: F401
