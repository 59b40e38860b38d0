"""Configuration dataclasses.

`FIPOConfig` holds the algorithm's knobs. Its defaults are the official FIPO 32B script
(Qwen2.5-32B base, DAPO-Math-17k); see ../shared/reference/FIPO_REFERENCE.md, "Official
hyperparameters". Every field carries a docstring line saying what it does and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

LOSSES = ("fipo", "dapo", "grpo")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class FIPOConfig:
    """The FIPO objective (and its DAPO / GRPO baselines), as in the official code."""

    loss: str = "fipo"
    """"fipo" (Future-KL weighted), "dapo" (weights == 1, token-mean) or "grpo" (symmetric clip, sequence mean)."""

    clip_low: float = 0.2
    """eps_low: the ratio is clipped below at 1 - clip_low."""

    clip_high: float = 0.28
    """eps_high: the ratio is clipped above at 1 + clip_high (DAPO's clip-higher; ignored by "grpo")."""

    dual_clip: float | None = 10.0
    """c: negative-advantage losses are capped at -A * c, and tokens with ratio > c do not feed
    Future-KL (the participation mask M_k). None disables both."""

    decay_rate: float = 32.0
    """tau, a half-life in tokens: gamma = 2 ** (-1 / tau). The paper found 8 collapses early, 256 is volatile."""

    weight_clip: float | None = 0.2
    """eps_f: influence weights are clipped to [1, 1 + eps_f] (high-only) or [1 - eps_f, 1 + eps_f];
    0 or None means no clipping beyond the official cap at 10."""

    weight_clip_high_only: bool = True
    """True: [1, 1 + eps_f] (the 32B recipe). False: [1 - eps_f, 1 + eps_f] (the 7B pilot)."""

    safety_threshold: float | None = 10.0
    """Where A < 0 and the ratio exceeds this, the weight is held in [0.8, 1.0]. None disables the rule."""

    drop_dual_clipped_sequences: bool | None = None
    """Drop a sequence from the loss when more than one of its negative-advantage tokens hits the
    dual-clip bound. None resolves to True for "fipo" (official FIPO) and False for the baselines."""

    log_ratio_clamp: float = 20.0
    """log pi - log pi_old is clamped to [-this, this] before exp, as the official code does."""

    def __post_init__(self):
        if self.drop_dual_clipped_sequences is None:
            self.drop_dual_clipped_sequences = self.loss == "fipo"

    def validate(self) -> "FIPOConfig":
        """Raise ValueError naming the first field outside its allowed range; return self."""
        if self.loss not in LOSSES:
            raise ValueError(f"FIPOConfig.loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not _is_number(self.clip_low) or not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"FIPOConfig.clip_low must be a number in [0, 1); got {self.clip_low!r}")
        if not _is_number(self.clip_high) or self.clip_high < 0.0:
            raise ValueError(f"FIPOConfig.clip_high must be a number >= 0; got {self.clip_high!r}")
        if self.dual_clip is not None:
            if not _is_number(self.dual_clip) or self.dual_clip <= 1.0 + self.clip_high:
                raise ValueError(
                    f"FIPOConfig.dual_clip must exceed 1 + clip_high = {1.0 + self.clip_high:g} "
                    f"(or be None); got {self.dual_clip!r}"
                )
        if not _is_number(self.decay_rate) or self.decay_rate <= 0.0:
            raise ValueError(f"FIPOConfig.decay_rate must be a number > 0 (tokens); got {self.decay_rate!r}")
        if self.weight_clip is not None and (
            not _is_number(self.weight_clip) or not 0.0 <= self.weight_clip < 1.0
        ):
            raise ValueError(
                f"FIPOConfig.weight_clip must be in [0, 1), or 0/None for no clipping; got {self.weight_clip!r}"
            )
        if not isinstance(self.weight_clip_high_only, bool):
            raise ValueError(
                f"FIPOConfig.weight_clip_high_only must be True or False; got {self.weight_clip_high_only!r}"
            )
        if self.safety_threshold is not None and (
            not _is_number(self.safety_threshold) or self.safety_threshold <= 0.0
        ):
            raise ValueError(
                f"FIPOConfig.safety_threshold must be a number > 0 or None; got {self.safety_threshold!r}"
            )
        if not isinstance(self.drop_dual_clipped_sequences, bool):
            raise ValueError(
                "FIPOConfig.drop_dual_clipped_sequences must be True, False or None (auto); "
                f"got {self.drop_dual_clipped_sequences!r}"
            )
        if not _is_number(self.log_ratio_clamp) or self.log_ratio_clamp <= 0.0:
            raise ValueError(f"FIPOConfig.log_ratio_clamp must be a number > 0; got {self.log_ratio_clamp!r}")
        return self

    @property
    def gamma(self) -> float:
        """The per-token decay gamma = 2 ** (-1 / decay_rate)."""
        return 2.0 ** (-1.0 / self.decay_rate)

    def to_dict(self) -> dict:
        return asdict(self)
