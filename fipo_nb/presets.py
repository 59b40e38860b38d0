"""`fipo_nb.presets`: the public path of `fipo_nb.config.presets`, where the code lives (README and notebooks import from here)."""

from .config.presets import PRESETS, Preset, apply_overrides, get_preset, valid_keys  # noqa: F401
