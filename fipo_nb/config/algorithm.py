"""FIPOConfig: the algorithm's knobs, each declared once (`setting()`: doc, allowed values, verl mapping).

Defaults are the official FIPO 32B script (Qwen2.5-32B base, DAPO-Math-17k); see
../shared/reference/FIPO_REFERENCE.md, "Official hyperparameters". Under verl the clips are the
actor's own settings (`Actor`: verl's losses read the same numbers) and the rest are fields of
verl's policy-loss config (`PolicyLoss`: integrations/verl/loss.py derives FIPOPolicyLossConfig from them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .fields import Actor, PolicyLoss, check_fields, invalid, setting

LOSSES = ("fipo", "dapo", "grpo")


@dataclass
class FIPOConfig:
    """The FIPO objective (and its DAPO / GRPO baselines), as in the official code."""

    loss: str = setting(
        "fipo", '"fipo" (Future-KL weighted), "dapo" (weights == 1, token-mean) or "grpo" (symmetric clip, '
                'sequence mean).',
        choices=LOSSES, verl=PolicyLoss("fipo_loss"))
    clip_low: float = setting(
        0.2, "eps_low: the ratio is clipped below at 1 - clip_low.",
        at_least=0, below=1, verl=Actor("clip_ratio_low"))
    clip_high: float = setting(
        0.28, 'eps_high: the ratio is clipped above at 1 + clip_high (DAPO\'s clip-higher; ignored by "grpo").',
        at_least=0, verl=Actor("clip_ratio_high"))
    dual_clip: float | None = setting(
        10.0, "c: negative-advantage losses are capped at -A * c, and tokens with ratio > c do not feed "
              "Future-KL (the participation mask M_k). None disables both. Must exceed 1 + clip_high.",
        verl=Actor("clip_ratio_c", flag="dual_clip"))
    decay_rate: float = setting(
        32.0, "tau, a half-life in tokens: gamma = 2 ** (-1 / tau). The paper found 8 collapses early, 256 is "
              "volatile.",
        above=0, verl=PolicyLoss())
    weight_clip: float | None = setting(
        0.2, "eps_f: influence weights are clipped to [1, 1 + eps_f] (high-only) or [1 - eps_f, 1 + eps_f]; "
             "0 or None means no clipping beyond the official cap at 10.",
        at_least=0, below=1, verl=PolicyLoss())
    weight_clip_high_only: bool = setting(
        True, "True: [1, 1 + eps_f] (the 32B recipe). False: [1 - eps_f, 1 + eps_f] (the 7B pilot).",
        verl=PolicyLoss())
    safety_threshold: float | None = setting(
        10.0, "Where A < 0 and the ratio exceeds this, the weight is held in [0.8, 1.0]. None disables the rule.",
        above=0, verl=PolicyLoss())
    drop_dual_clipped_sequences: bool | None = setting(
        None, "Drop a sequence from the loss when more than one of its negative-advantage tokens hits the "
              'dual-clip bound. None resolves to True for "fipo" (official FIPO) and False for the baselines.',
        verl=PolicyLoss())
    log_ratio_clamp: float = setting(
        20.0, "log pi - log pi_old is clamped to [-this, this] before exp, as the official code does.",
        above=0, verl=PolicyLoss())

    def __post_init__(self):
        if self.drop_dual_clipped_sequences is None:
            self.drop_dual_clipped_sequences = self.loss == "fipo"

    def validate(self) -> "FIPOConfig":
        """Raise ValueError naming the first field outside what it allows; return self."""
        check_fields(self)
        # the dual clip caps what the upper clip has already let through, so it sits above it
        if self.dual_clip is not None and self.dual_clip <= 1.0 + self.clip_high:
            raise invalid(self, "dual_clip", f"exceed 1 + clip_high = {1.0 + self.clip_high:g} (or be None)")
        return self

    @property
    def gamma(self) -> float:
        """The per-token decay gamma = 2 ** (-1 / decay_rate)."""
        return 2.0 ** (-1.0 / self.decay_rate)

    def to_dict(self) -> dict:
        return asdict(self)
