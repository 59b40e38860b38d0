"""The policy loss "fipo_nb" inside verl (imports verl): `fipo_nb.core.policy_loss` under verl's
global normalisation, and `FIPOPolicyLossConfig`, verl's PolicyLossConfig with FIPO's fields.

verl hands the loss one micro-batch at a time with `config.global_batch_info` = {dp_size,
batch_num_tokens, global_batch_size}; FSDP averages gradients over data-parallel ranks and the
engine calls backward() per micro-batch, so the micro-batch loss is `sum / batch_num_tokens *
dp_size` ("token-mean", for "fipo" and "dapo") or `sum of sequence means / global_batch_size *
dp_size` ("seq-mean-token-mean", for "grpo"): summed over micro-batches and ranks it is exactly
the whole mini-batch's mean. verl's `batch_num_tokens` counts every response token of the
mini-batch, sequences removed by FIPO's drop rule included (the official fork divides by the
kept tokens): a plugin inside verl inherits verl's count.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from verl.trainer.ppo import core_algos
from verl.workers.config import PolicyLossConfig

from ...config import FIPOConfig
from ...core import policy_loss
from .fields import AGGREGATION, fipo_from_verl, policy_loss_fields

LOSS_NAME = "fipo_nb"
# fipo_nb metric -> verl's name (the trainer prefixes "actor/" to whatever lacks it)
VERL_NAMES = {"policy/clip_frac": "actor/pg_clipfrac", "policy/dual_clip_frac": "actor/pg_clipfrac_lower",
              "policy/approx_kl": "actor/ppo_kl"}

_TRACE_FIELDS = [  # set by the launch from TrainConfig.trace_samples and the run directory
    ("trace_dir", Optional[str], None,
     "Run directory: rank 0 writes TRACE_DIR/traces/step-N.parquet and TRACE_DIR/metrics.jsonl; None: off."),
    ("trace_samples", int, 4,
     "Responses traced per step (chosen over mini-batches and advantage signs, as fipo_nb's trainer does)."),
]


def _fipo_config(self, actor_config) -> FIPOConfig:
    """The FIPOConfig these settings and the actor's clip settings describe (validated)."""
    return fipo_from_verl(actor_config, self)


def _policy_loss_config() -> type:
    """verl's PolicyLossConfig plus FIPOConfig's fields as the verl loss carries them (fields.policy_loss_fields):
    one declaration, in FIPOConfig, for both."""
    spec = policy_loss_fields() + _TRACE_FIELDS
    doc = ("verl's policy-loss settings plus FIPO's. The clip range and dual clip c are the actor's own\n"
           "`clip_ratio_low`, `clip_ratio_high` and `clip_ratio_c`, so verl's losses and this one read the same\n"
           "numbers; the other fields are fipo_nb.FIPOConfig's, derived from its declaration:\n\n"
           + "".join(f"    {name}: {text}\n" for name, _, _, text in spec))
    fields = [(name, kind, dataclasses.field(default=default, metadata={"doc": text}))
              for name, kind, default, text in spec]
    cls = dataclasses.make_dataclass("FIPOPolicyLossConfig", fields, bases=(PolicyLossConfig,),
                                     namespace={"__doc__": doc, "fipo_config": _fipo_config})
    cls.__module__ = __name__  # pickled by reference (Ray ships configs to workers) and named by _target_
    return cls


FIPOPolicyLossConfig = _policy_loss_config()


def fipo_config_of(actor_config) -> FIPOConfig:
    """FIPOConfig from a verl ActorConfig whose policy_loss is a FIPOPolicyLossConfig."""
    settings = actor_config.policy_loss
    if not isinstance(settings, FIPOPolicyLossConfig):
        raise ValueError("the fipo_nb loss needs actor_rollout_ref.actor.policy_loss._target_="
                         "fipo_nb.integrations.verl.FIPOPolicyLossConfig (it carries FIPO's settings); got "
                         f"{type(settings).__name__}")
    return settings.fipo_config(actor_config)


@core_algos.register_policy_loss(LOSS_NAME)
def fipo_nb_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                        rollout_is_weights=None):
    """verl policy loss "fipo_nb": fipo_nb.core.policy_loss on one micro-batch, globally normalised.

    Tensors are padded [bs, T] (advantages per token, response_mask bool); returns (loss, metrics)
    with metrics under verl's actor/ names.
    """
    fipo = fipo_config_of(config)
    if loss_agg_mode != AGGREGATION[fipo.loss]:
        raise ValueError(f"the fipo_nb loss with fipo_loss={fipo.loss!r} aggregates as "
                         f"actor.loss_agg_mode={AGGREGATION[fipo.loss]!r}; got {loss_agg_mode!r}")
    if rollout_is_weights is not None:
        raise ValueError("the fipo_nb loss does not apply rollout importance-sampling weights "
                         "(algorithm.rollout_correction.rollout_is): leave them off")
    info = config.global_batch_info
    dp_size = int(info.get("dp_size") or 1)
    out = policy_loss(log_prob, old_log_prob, advantages, response_mask, fipo,
                      num_tokens=info.get("batch_num_tokens"), num_sequences=info.get("global_batch_size"))
    return out.loss * dp_size, verl_metrics(out.metrics)


def verl_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """fipo_nb's metric names under verl's: its own names where verl has one, else actor/<fipo_nb name>."""
    return {VERL_NAMES.get(key, f"actor/{key}"): value for key, value in metrics.items()}
