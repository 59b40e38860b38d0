"""`fipo_nb.trainer`: the public path of `fipo_nb.train.trainer`, where the code lives (README and notebooks import from here)."""

from .train.trainer import FIPOTrainer, SampledStep, StepResult  # noqa: F401
