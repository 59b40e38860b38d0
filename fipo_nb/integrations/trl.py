"""FIPO inside TRL: `FIPOGRPOTrainer` is TRL's GRPOTrainer with fipo_nb's exact policy loss.

    from trl import GRPOConfig
    from fipo_nb import FIPOConfig
    from fipo_nb.integrations.trl import FIPOGRPOTrainer

    trainer = FIPOGRPOTrainer(model, reward_funcs, args=GRPOConfig(..., steps_per_generation=8),
                              train_dataset=dataset, fipo_config=FIPOConfig())   # default: the official recipe
    trainer.train()

Everything but the policy loss stays TRL's: generation (transformers `generate`, vLLM), rewards
and group advantages, the old log-probs, accelerate / DeepSpeed / FSDP, logging. Two methods
are overridden:

* `_compute_loss`: TRL's own forward (per-token log-probs and entropies), then
  `fipo_nb.core.policy_loss` under the FIPOConfig ("fipo", "dapo" or "grpo"); its metrics
  (`fipo/weight_mean`, `fipo/future_kl_mean`, `policy/dual_clip_frac`, ...) go into TRL's logs.
* `_prepare_inputs`: when TRL has generated a batch and split it into `steps_per_generation`
  micro-batches, count the response tokens of each optimizer update (gradient_accumulation_steps
  micro-batches, summed over processes), so that the token-mean is over exactly the tokens of the
  update. (TRL's "dapo" divides by the generation batch's count times GA / S, the average
  update's count; both agree when a generation feeds one update.) These are all the response
  tokens of the update, sequences removed by FIPO's drop rule included, as verl 0.9.1 counts
  them; the official code and fipo_nb's own trainer divide by the kept tokens only. (Which
  sequences are dropped is known only once each micro-batch's forward has run, and TRL's
  Trainer clips the gradients before any hook could rescale them.)

FIPO acts only on the second and later updates of a generation, against the log-probs that TRL
computes with the training model right after generating: updates per generation =
steps_per_generation * num_iterations / gradient_accumulation_steps. With one, FIPO is DAPO.

The FIPOConfig owns the loss: GRPOConfig's `loss_type` stays "dapo" (TRL's default), `epsilon` /
`epsilon_high` stay at their defaults or equal `clip_low` / `clip_high`, `delta` stays None (the
dual clip is `FIPOConfig.dual_clip`), `importance_sampling_level` stays "token", and the entropy
bonus stays off; anything else raises ValueError. TRL's per-token loss multipliers are kept:
the vLLM importance-sampling correction, `top_entropy_quantile` and `off_policy_mask_threshold`
scale the advantages (exact: the loss of A*m for a detached m >= 0 is m times the loss of A;
tokens that a multiplier zeroes do not count for the sequence drop rule); `beta`'s KL term is
added as a token-mean over the same tokens, and a MoE router's aux loss as TRL adds it.
"""

from __future__ import annotations

import functools
import warnings

import torch

from ..config import FIPOConfig
from ..core import policy_loss
from ..train.metrics import merge_loss_metrics

# TRL 1.16 calls transformers' renamed checkpointing API (GRPOConfig's `gradient_checkpointing`, the model's
# `gradient_checkpointing_enable` / `_disable` / `is_gradient_checkpointing`) in its config and in every train():
# FutureWarnings about calls the user never wrote and cannot change; those messages only, from transformers only
warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning,
                        module=r"transformers\.")

__all__ = ["FIPOGRPOTrainer"]

TESTED_TRL = "1.16"
_TRL_METHODS = ("_compute_loss", "_prepare_inputs", "_get_per_token_logps_and_entropies",
                "get_high_entropy_mask", "get_off_policy_mask")
_FORWARD_KEYS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                 "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def _check_grpo_args(args, config: FIPOConfig) -> None:
    """Raise ValueError naming the first GRPOConfig field that would fight the FIPOConfig."""
    defaults = type(args).__dataclass_fields__
    owned = "FIPOGRPOTrainer takes its policy loss from the FIPOConfig"
    if args.loss_type != "dapo":
        raise ValueError(f"GRPOConfig.loss_type={args.loss_type!r}: {owned}; leave loss_type at 'dapo' and "
                         f"set FIPOConfig(loss='fipo' | 'dapo' | 'grpo')")
    if args.epsilon not in (defaults["epsilon"].default, config.clip_low):
        raise ValueError(f"GRPOConfig.epsilon={args.epsilon}: {owned}; set FIPOConfig.clip_low "
                         f"(now {config.clip_low}) instead")
    if args.epsilon_high not in (None, config.clip_high):
        raise ValueError(f"GRPOConfig.epsilon_high={args.epsilon_high}: {owned}; set FIPOConfig.clip_high "
                         f"(now {config.clip_high}) instead")
    if args.delta is not None:
        raise ValueError(f"GRPOConfig.delta={args.delta}: {owned}; its dual clip is FIPOConfig.dual_clip "
                         f"(now {config.dual_clip})")
    if args.importance_sampling_level != "token":
        raise ValueError(f"GRPOConfig.importance_sampling_level={args.importance_sampling_level!r}: FIPO weighs "
                         "tokens, so it needs 'token'")
    if args.entropy_coef != 0.0 or args.use_adaptive_entropy:
        raise ValueError("GRPOConfig.entropy_coef / use_adaptive_entropy: FIPOGRPOTrainer has no entropy bonus "
                         "(the FIPO recipe uses none); leave entropy_coef=0 and use_adaptive_entropy=False")


class _FIPOLoss:
    """TRL's GRPOTrainer with `fipo_nb.core.policy_loss` as its policy loss (see the module doc).

    Takes GRPOTrainer's arguments, plus `fipo_config` (a FIPOConfig; default FIPOConfig(), the
    official FIPO 32B recipe: decay_rate 32, weight clip [1, 1.2], clip 0.2 / 0.28, dual clip 10).
    """

    _tag_names = ["trl", "grpo", "fipo"]

    def __init__(self, model, reward_funcs=None, args=None, *more, fipo_config: FIPOConfig | None = None, **kwargs):
        config = FIPOConfig() if fipo_config is None else fipo_config
        if not isinstance(config, FIPOConfig):
            raise TypeError(f"FIPOGRPOTrainer: fipo_config must be a fipo_nb.FIPOConfig; got {type(config).__name__}")
        self.fipo_config = config.validate()
        if args is not None:  # before the model loads; a default GRPOConfig agrees with every FIPOConfig
            _check_grpo_args(args, self.fipo_config)
        super().__init__(model, reward_funcs, args, *more, **kwargs)
        self.epsilon_low, self.epsilon_high = self.fipo_config.clip_low, self.fipo_config.clip_high
        if self.args.steps_per_generation % self.args.gradient_accumulation_steps:
            warnings.warn(
                f"steps_per_generation={self.args.steps_per_generation} is not a multiple of "
                f"gradient_accumulation_steps={self.args.gradient_accumulation_steps}: an optimizer update spans two "
                "generations, so the token-mean divides by TRL's estimate of the update's tokens (the generation "
                "batch's count x GA / S) instead of their exact count",
                stacklevel=2,
            )

    def _prepare_inputs(self, generation_batch):
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training and self._buffered_inputs is not before:  # TRL just generated and split a batch
            self._count_update_sizes(self._buffered_inputs)
        return inputs

    def _count_update_sizes(self, micro_batches: list[dict]) -> None:
        """Tag each micro-batch with the response tokens and sequences of its optimizer update, all processes."""
        accumulation = self.args.gradient_accumulation_steps
        if len(micro_batches) % accumulation:
            return  # updates straddle generations (warned at init): TRL's estimate in _update_size
        counts = [[int(_loss_mask(batch).sum()), batch["completion_mask"].size(0)] for batch in micro_batches]
        local = torch.tensor(counts, dtype=torch.long, device=self.accelerator.device)  # [S, 2] tokens, sequences
        per_update = local.view(-1, accumulation, 2).sum(dim=1)  # [S / GA, 2]
        totals = self.accelerator.reduce(per_update, reduction="sum").tolist()  # summed over processes
        for index, batch in enumerate(micro_batches):
            batch["fipo_update_tokens"], batch["fipo_update_sequences"] = totals[index // accumulation]

    def _update_size(self, inputs: dict, mask: torch.Tensor, mode: str) -> tuple[float, float]:
        """(response tokens, sequences) of the whole optimizer update, over all processes."""
        if "fipo_update_tokens" in inputs:
            return float(inputs["fipo_update_tokens"]), float(inputs["fipo_update_sequences"])
        # TRL's own normaliser: the generation batch's count scaled to one update; in eval, the batch
        tokens = float(inputs["num_items_in_batch"])
        sequences = float(mask.size(0) * self.accelerator.num_processes)
        if mode == "train":
            accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
            tokens *= accumulation / self.args.steps_per_generation
            sequences *= accumulation
        return tokens, sequences

    def _loss_multiplier(self, inputs, log_prob, entropies, mask, advantages):
        """TRL's detached per-token multipliers of the loss ([B, T] or [B, 1]), or None when there are none."""
        factors = []
        if self.top_entropy_quantile < 1.0:
            factors.append(self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile).float())
        if self.off_policy_mask_threshold is not None:
            old = inputs.get("old_per_token_logps", log_prob.detach())
            sampling = inputs.get("sampling_per_token_logps", old)
            factors.append(self.get_off_policy_mask(advantages, log_prob, sampling, mask,
                                                    self.off_policy_mask_threshold))  # [B, 1]
        if self.use_vllm and self.vllm_importance_sampling_correction:
            factors.append(inputs["importance_sampling_ratio"])  # [B, T] or [B, 1]
        return functools.reduce(torch.mul, factors) if factors else None

    def _compute_loss(self, model, inputs):
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)  # [B, P + T]
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)  # [B, P + T]
        mask = _loss_mask(inputs)  # [B, T]
        log_prob, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled, **{key: inputs.get(key) for key in _FORWARD_KEYS},
        )  # [B, T] each
        # TRL skips the old-log-prob pass when a generation feeds one update: then old == new, delta == 0
        old = inputs.get("old_per_token_logps")
        old = log_prob.detach() if old is None else old  # [B, T]
        advantages = inputs["advantages"]
        advantages = advantages[:, None] if advantages.dim() == 1 else advantages  # [B, 1] or [B, T]
        multiplier = self._loss_multiplier(inputs, log_prob, entropies, mask, advantages)
        if multiplier is not None:
            advantages = advantages * multiplier  # [B, T] or [B, 1]: FIPO's loss is positively homogeneous in A
        mode = "train" if self.model.training else "eval"
        tokens, sequences = self._update_size(inputs, mask, mode)
        out = policy_loss(log_prob, old, advantages, mask, self.fipo_config, num_tokens=tokens, num_sequences=sequences)
        processes = self.accelerator.num_processes  # DDP / DeepSpeed average gradients; the counts are global
        loss = out.loss * processes
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]  # [B, T]
            kl = torch.exp(ref - log_prob) - (ref - log_prob) - 1  # [B, T] k3 estimate, as TRL
            if self.args.use_bias_correction_kl:
                kl = kl * torch.exp(log_prob - old)
            loss = loss + self.beta * (kl * mask).sum() / max(tokens, 1.0) * processes
            self._metrics[mode]["kl"].append(self._global_mean(kl.detach(), mask))
        if aux_loss is not None:
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        self._metrics[mode]["entropy"].append(self._global_mean(entropies, mask))
        self._log_fipo_metrics(out.metrics, mode)
        return loss

    def _global_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        totals = self.accelerator.reduce(torch.stack([(values * mask).sum(), mask.sum().float()]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _log_fipo_metrics(self, metrics: dict[str, float], mode: str) -> None:
        """policy_loss's metrics over all processes, merged as the trainer merges micro-batches
        (`update.merge_loss_metrics`: token-weighted means, extremes, sums)."""
        names = sorted(metrics)
        local = torch.tensor([[metrics[name] for name in names]], dtype=torch.float64, device=self.accelerator.device)
        rows = self.accelerator.gather(local).tolist()  # [processes, metrics]
        for name, value in merge_loss_metrics([dict(zip(names, row)) for row in rows]).items():
            self._metrics[mode][name].append(float(value))


def _loss_mask(inputs: dict) -> torch.Tensor:
    """The response tokens that enter the loss: TRL's completion mask, less tool output where there is any."""
    mask = inputs["completion_mask"]  # [B, T]
    return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask


@functools.cache
def _trainer_class():
    try:
        import trl
        from trl import GRPOTrainer
    except ImportError as exc:
        raise ImportError(
            f"fipo_nb.integrations.trl.FIPOGRPOTrainer needs TRL: pip install 'fipo_nb[trl]' (tested with trl "
            f"{TESTED_TRL})"
        ) from exc
    missing = [name for name in _TRL_METHODS if not hasattr(GRPOTrainer, name)]
    if missing:
        raise ImportError(
            f"trl {trl.__version__}: GRPOTrainer has no {', '.join(missing)}; FIPOGRPOTrainer overrides TRL "
            f"internals and is written for trl {TESTED_TRL}: pip install 'trl=={TESTED_TRL}.*'"
        )
    if not trl.__version__.startswith(TESTED_TRL + "."):
        warnings.warn(
            f"FIPOGRPOTrainer overrides GRPOTrainer internals and is tested with trl {TESTED_TRL}; "
            f"trl {trl.__version__} is installed",
            stacklevel=3,
        )
    trainer = type("FIPOGRPOTrainer", (_FIPOLoss, GRPOTrainer), {"__module__": __name__, "__doc__": _FIPOLoss.__doc__})
    trainer.__qualname__ = "FIPOGRPOTrainer"
    return trainer


def __getattr__(name: str):
    if name == "FIPOGRPOTrainer":  # built on first use, so that importing this module never needs TRL
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
