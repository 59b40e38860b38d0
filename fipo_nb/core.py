"""FIPO's objective, term by term, to be read beside the paper (arXiv 2603.19835).

For response token t of sequence i (theta: the policy being trained, old: the policy as it
was right after the rollout):

    delta_t     = clamp(log pi_theta - log pi_old, -20, 20)            log-ratio
    r_t         = exp(delta_t)                                          importance ratio
    M_k         = 1[delta_k <= log c]                                   participation mask
    FutureKL_t  = sum_{k >= t} gamma^(k - t) * M_k * mask_k * delta_k   gamma = 2^(-1/tau)
    f_t         = clamp(exp(FutureKL_t), lo, hi), safety rule, detached influence weight
    A~_t        = A_i * f_t
    loss_t      = dual-clipped PPO loss with clip-higher on A~_t
    loss        = token-mean over kept tokens (sequence drop rule applied)

Semantics follow the official code (a verl fork, `loss_mode=future_kl`). Two places are
exact where the official code approximates, on purpose:
  * Future-KL is a chunked scan in float32 (float64 for float64 input), O(B*T*C) time and
    O(B*T) memory. The official code builds T x 128 decay blocks (O(B*T^2) work) in the input
    dtype, which loses precision in bf16.
  * The token-mean is over the kept tokens of the whole mini-batch (`num_tokens`, and the
    trainer's rescaling in update.py), so splitting a mini-batch into micro-batches gives the
    same gradient. The official code takes the token-mean per micro-batch and rescales, which
    only approximates the global mean.
This module imports no model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .config import FIPOConfig

__all__ = [
    "PolicyLossOutput",
    "discounted_suffix_sum",
    "future_kl",
    "future_kl_reference",
    "group_advantages",
    "influence_weights",
    "informative_groups",
    "policy_loss",
    "weight_bounds",
]

MAX_LOG_WEIGHT = 20.0  # exp() sees FutureKL clamped here: raw weights stay finite (<= e^20 ~ 4.9e8)
NO_CLIP_CAP = 10.0  # the official cap on weights when weight clipping is off
SAFETY_RANGE = (0.8, 1.0)  # the safety rule holds weights of risky negative tokens here
CLIP_TOL = 1e-7  # a weight this close to a bound counts as clipped (official metric)
DEFAULT_CHUNK = 64  # scan chunk C: cost O(B*T*C); 64 is fastest on CPU and GPU alike here


def _accumulation_dtype(tensor: torch.Tensor) -> torch.dtype:
    # bf16/fp16 sums over hundreds of tokens lose digits: accumulate in float32 at least
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _decay_matrix(gamma: float, size: int, dtype: torch.dtype, device) -> torch.Tensor:
    """D[k, t] = gamma^(k - t) for k >= t, else 0. Built in float64, every entry <= 1."""
    pos = torch.arange(size, dtype=torch.float64)
    dist = pos[:, None] - pos[None, :]  # [C, C], dist[k, t] = k - t
    decay = torch.where(dist >= 0, gamma ** dist.clamp(min=0), torch.zeros((), dtype=torch.float64))
    return decay.to(dtype=dtype, device=device)


def discounted_suffix_sum(x: torch.Tensor, gamma: float, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """y_t = sum_{k >= t} gamma^(k - t) * x_k along the last dim, exactly, by a chunked scan.

    Same as the reverse loop ``y_t = x_t + gamma * y_{t+1}`` but without T sequential steps:
    within each chunk of C tokens a [C, C] decay matrix gives the local suffix sums; the value
    at each chunk's start then obeys the same recurrence over chunks with gamma^C, solved by
    recursion (log_C(T) levels). Time O(B*T*C), extra memory O(B*T); no gamma^(-k) anywhere,
    so nothing overflows at any T.

    >>> discounted_suffix_sum(torch.tensor([[1.0, 0.0, 2.0]]), 0.5)
    tensor([[1.5000, 1.0000, 2.0000]])
    """
    if chunk_size < 2:
        raise ValueError(f"discounted_suffix_sum: chunk_size must be >= 2; got {chunk_size}")
    batch, length = x.shape  # [B, T]
    if length == 0:
        return x.clone()
    size = min(chunk_size, length)
    n_chunks = -(-length // size)
    padded = F.pad(x, (0, n_chunks * size - length))  # [B, n*C]
    chunks = padded.view(batch, n_chunks, size)  # [B, n, C]
    local = chunks @ _decay_matrix(gamma, size, x.dtype, x.device)  # [B, n, C] suffix sums inside each chunk
    if n_chunks > 1:
        heads = local[:, :, 0]  # [B, n] each chunk's sum, discounted to its first token
        starts = discounted_suffix_sum(heads, gamma**size, chunk_size)  # [B, n] y at each chunk's start
        following = F.pad(starts[:, 1:], (0, 1))  # [B, n] y at the start of the next chunk
        offsets = torch.arange(size, 0, -1, dtype=torch.float64)  # [C] distance to the next chunk
        tail = (gamma**offsets).to(dtype=x.dtype, device=x.device)  # [C] gamma^(C - t)
        local = local + following[:, :, None] * tail  # [B, n, C]
    return local.reshape(batch, n_chunks * size)[:, :length]  # [B, T]


def future_kl(
    log_ratio: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    decay_rate: float,
    dual_clip: float | None = None,
    log_ratio_clamp: float = 20.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """FutureKL_t = sum_{k >= t} gamma^(k-t) * M_k * mask_k * delta_k, with the current token.

    log_ratio: [B, T] log pi_theta - log pi_old (any float dtype; anything at masked positions,
    even inf/NaN, is ignored). response_mask: [B, T] bool or 0/1. dual_clip: c; tokens with
    delta > log(c) are left out (M_k = 0); None keeps every token. Returns [B, T] in float32
    (float64 for float64 input), 0 at masked positions.

    >>> future_kl(torch.tensor([[0.4, 0.2, 0.8]]), torch.ones(1, 3), decay_rate=1.0)  # gamma = 0.5
    tensor([[0.7000, 0.6000, 0.8000]])
    """
    if log_ratio.dim() != 2 or response_mask.shape != log_ratio.shape:
        raise ValueError(
            f"future_kl wants log_ratio and response_mask of the same [B, T] shape; "
            f"got {tuple(log_ratio.shape)} and {tuple(response_mask.shape)}"
        )
    if not decay_rate > 0:
        raise ValueError(f"future_kl: decay_rate must be > 0; got {decay_rate!r}")
    mask = response_mask.to(device=log_ratio.device).bool()  # [B, T]
    delta = log_ratio.to(_accumulation_dtype(log_ratio)).clamp(-log_ratio_clamp, log_ratio_clamp)  # [B, T]
    feeds = mask
    if dual_clip is not None:
        feeds = feeds & (delta <= math.log(dual_clip))  # M_k: a ratio already past c feeds nothing
    terms = torch.where(feeds, delta, torch.zeros_like(delta))  # [B, T] NaN-safe masking
    gamma = 2.0 ** (-1.0 / decay_rate)  # gamma = 2^(-1/tau), tau a half-life in tokens
    scanned = discounted_suffix_sum(terms, gamma, chunk_size)  # [B, T]
    return torch.where(mask, scanned, torch.zeros_like(scanned))


def future_kl_reference(log_ratio, response_mask, *, decay_rate, dual_clip=None, log_ratio_clamp=20.0):
    """The definition as a float64 reverse loop, y_t = M_t mask_t delta_t + gamma * y_{t+1}: slow
    (T Python steps), for checking `future_kl` (tests, benchmarks/future_kl.py). [B, T] float64."""
    delta = log_ratio.double().clamp(-log_ratio_clamp, log_ratio_clamp)  # [B, T]
    mask = response_mask.bool()
    feeds = mask if dual_clip is None else mask & (delta <= math.log(dual_clip))  # M_k
    x = torch.where(feeds, delta, torch.zeros_like(delta))
    gamma = 2.0 ** (-1.0 / decay_rate)
    out = torch.zeros_like(x)
    acc = torch.zeros(x.shape[0], dtype=torch.float64)  # [B]
    for k in range(x.shape[1] - 1, -1, -1):
        acc = x[:, k] + gamma * acc
        out[:, k] = acc
    return torch.where(mask, out, torch.zeros_like(out))


def weight_bounds(weight_clip: float | None, weight_clip_high_only: bool) -> tuple[float, float]:
    """(lo, hi) for f_t: high-only [1, 1+eps], two-sided [1-eps, 1+eps], none [0, 10]."""
    if not weight_clip:
        return 0.0, NO_CLIP_CAP
    if weight_clip_high_only:
        return 1.0, 1.0 + weight_clip
    return 1.0 - weight_clip, 1.0 + weight_clip


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Advantages [B] or [B, T] -> [B, T] (float, detached) matching `like`."""
    adv = advantages.detach().to(device=like.device, dtype=like.dtype)
    if adv.dim() == 1:
        adv = adv[:, None]  # [B, 1]
    if adv.dim() != 2 or adv.shape[0] != like.shape[0] or adv.shape[1] not in (1, like.shape[1]):
        raise ValueError(
            f"advantages must be [B] or [B, T] for log-probs of shape {tuple(like.shape)}; "
            f"got {tuple(advantages.shape)}"
        )
    return adv.expand_as(like)


def influence_weights(
    future_kl: torch.Tensor,
    advantages: torch.Tensor,
    ratio: torch.Tensor,
    *,
    weight_clip: float | None,
    weight_clip_high_only: bool,
    safety_threshold: float | None,
) -> torch.Tensor:
    """f_t = clamp(exp(FutureKL_t), lo, hi), then the safety rule; detached. [B, T].

    Safety rule: where A < 0 and r_t > safety_threshold, f_t is held in [0.8, 1.0], so a token
    the update already pushes hard is not penalised more.

    >>> influence_weights(torch.tensor([[0.0, math.log(2.0)]]), torch.tensor([1.0]), torch.ones(1, 2),
    ...                   weight_clip=0.2, weight_clip_high_only=True, safety_threshold=10.0)
    tensor([[1.0000, 1.2000]])
    """
    lo, hi = weight_bounds(weight_clip, weight_clip_high_only)
    fkl = future_kl.detach()
    weights = torch.exp(fkl.clamp(max=MAX_LOG_WEIGHT)).clamp(min=lo, max=hi)  # [B, T]
    if safety_threshold is not None:
        adv = _per_token(advantages, fkl)  # [B, T]
        risky = (adv < 0) & (ratio.detach().to(fkl.dtype) > safety_threshold)  # [B, T]
        weights = torch.where(risky, weights.clamp(*SAFETY_RANGE), weights)
    return weights


@dataclass
class PolicyLossOutput:
    """What `policy_loss` returns. Tensors are [B, T] unless said otherwise."""

    loss: torch.Tensor  # scalar, differentiable w.r.t. log_prob
    future_kl: torch.Tensor  # FutureKL_t (float32), 0 at masked positions
    weights: torch.Tensor  # f_t, detached; all 1 for "dapo"/"grpo"
    token_mask: torch.Tensor  # bool: response tokens kept after the sequence drop rule
    metrics: dict[str, float] = field(default_factory=dict)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    count = int(mask.sum())
    return float(torch.where(mask, values, torch.zeros_like(values)).sum() / count) if count else 0.0


def _masked_extreme(values: torch.Tensor, mask: torch.Tensor, which: str) -> float:
    picked = values[mask]
    if picked.numel() == 0:
        return 0.0
    return float(picked.max() if which == "max" else picked.min())


def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: FIPOConfig,
    *,
    num_tokens: int | None = None,
    num_sequences: int | None = None,
) -> PolicyLossOutput:
    """The FIPO / DAPO / GRPO policy-gradient loss on one (micro-)batch.

    log_prob: [B, T] under the policy being trained (carries the gradient); old_log_prob: [B, T]
    from the no-grad pass right after the rollout; advantages: [B] or [B, T]; response_mask:
    [B, T]. num_tokens: denominator of the token-mean, for a mini-batch split into
    micro-batches. None: this batch's tokens kept after the drop rule, the official loss on a
    whole mini-batch. The trainer (`update.accumulate_gradient`) passes the mini-batch's
    response-token count and rescales the summed gradient by tokens / kept once every
    micro-batch is done, which is exactly the official mean over kept tokens; verl's global
    normalisation passes its all-token count and keeps it. num_sequences: the same for
    "grpo"'s sequence mean. A batch with nothing to learn from gives loss 0, never NaN.
    """
    config.validate()
    if log_prob.shape != old_log_prob.shape or log_prob.shape != response_mask.shape or log_prob.dim() != 2:
        raise ValueError(
            "policy_loss wants log_prob, old_log_prob and response_mask of one [B, T] shape; got "
            f"{tuple(log_prob.shape)}, {tuple(old_log_prob.shape)}, {tuple(response_mask.shape)}"
        )
    mask = response_mask.to(device=log_prob.device).bool()  # [B, T]
    new = log_prob.float() if log_prob.dtype != torch.float64 else log_prob  # [B, T]
    old = old_log_prob.detach().to(device=new.device, dtype=new.dtype)  # [B, T]
    adv = _per_token(advantages, new)  # [B, T] A_i per token
    adv = torch.where(mask, adv, torch.zeros_like(adv))
    zero = torch.zeros_like(new)

    bound = config.log_ratio_clamp
    delta = torch.where(mask, (new - old).clamp(-bound, bound), zero)  # [B, T] delta_t, 0 off-mask
    ratio = torch.exp(delta)  # [B, T] r_t

    fkl = future_kl(
        delta.detach(), mask, decay_rate=config.decay_rate, dual_clip=config.dual_clip, log_ratio_clamp=bound
    )  # [B, T]
    if config.loss == "fipo":
        weights = influence_weights(
            fkl,
            adv,
            ratio,
            weight_clip=config.weight_clip,
            weight_clip_high_only=config.weight_clip_high_only,
            safety_threshold=config.safety_threshold,
        )  # [B, T] f_t
    else:
        weights = torch.ones_like(fkl)  # DAPO / GRPO: every token weighs the same

    clip_high = config.clip_low if config.loss == "grpo" else config.clip_high
    weighted_adv = adv * weights.to(new.dtype)  # [B, T] A~ = A * f
    loss1 = -weighted_adv * ratio  # [B, T] l1
    loss2 = -weighted_adv * ratio.clamp(1.0 - config.clip_low, 1.0 + clip_high)  # [B, T] l2, clip-higher
    clipped1 = torch.maximum(loss1, loss2)  # [B, T] cl1
    keep = mask
    if config.dual_clip is not None:
        loss3 = -weighted_adv * config.dual_clip  # [B, T] l3
        per_token = torch.where(weighted_adv < 0, torch.minimum(loss3, clipped1), clipped1)  # [B, T]
        hit_dual = (adv < 0) & (clipped1 > loss3) & mask  # [B, T] negative tokens at the dual-clip bound
        if config.drop_dual_clipped_sequences:
            keep = mask & (hit_dual.sum(dim=1, keepdim=True) <= 1)  # drop sequences with > 1 such token
    else:
        per_token = clipped1
        hit_dual = torch.zeros_like(mask)
    per_token = torch.where(keep, per_token, zero)  # [B, T]

    if config.loss == "grpo":
        seq_tokens = keep.sum(dim=1)  # [B]
        seq_mean = per_token.sum(dim=1) / seq_tokens.clamp(min=1)  # [B]
        denominator = num_sequences if num_sequences is not None else int((seq_tokens > 0).sum())
        loss = seq_mean.sum() / max(denominator, 1)
    else:
        denominator = num_tokens if num_tokens is not None else int(keep.sum())
        loss = per_token.sum() / max(denominator, 1)

    with torch.no_grad():
        metrics = _metrics(config, mask, keep, delta, ratio, fkl, weights, loss1, loss2, hit_dual)
    return PolicyLossOutput(loss=loss, future_kl=fkl, weights=weights, token_mask=keep, metrics=metrics)


def _metrics(config, mask, keep, delta, ratio, fkl, weights, loss1, loss2, hit_dual) -> dict[str, float]:
    """Statistics over response tokens (masked means, as the official code logs them)."""
    lo, hi = weight_bounds(config.weight_clip, config.weight_clip_high_only)
    raw = torch.exp(fkl.clamp(max=MAX_LOG_WEIGHT))  # [B, T] unclipped exp(FutureKL)
    has_tokens = mask.any(dim=1)  # [B]
    dropped = has_tokens & ~keep.any(dim=1)  # [B]
    return {
        "fipo/weight_mean": _masked_mean(weights, mask),
        "fipo/weight_min": _masked_extreme(weights, mask, "min"),
        "fipo/weight_max": _masked_extreme(weights, mask, "max"),
        "fipo/raw_weight_mean": _masked_mean(raw, mask),
        "fipo/raw_weight_min": _masked_extreme(raw, mask, "min"),
        "fipo/raw_weight_max": _masked_extreme(raw, mask, "max"),
        "fipo/weight_clip_frac_upper": _masked_mean((weights >= hi - CLIP_TOL).float(), mask),
        "fipo/weight_clip_frac_lower": _masked_mean((weights <= lo + CLIP_TOL).float(), mask),
        "fipo/future_kl_mean": _masked_mean(fkl, mask),
        "fipo/future_kl_min": _masked_extreme(fkl, mask, "min"),
        "fipo/future_kl_max": _masked_extreme(fkl, mask, "max"),
        "policy/clip_frac": _masked_mean((loss2 > loss1).float(), mask),
        "policy/dual_clip_frac": _masked_mean(hit_dual.float(), mask),
        "policy/dropped_seq_frac": float(dropped.sum()) / max(int(has_tokens.sum()), 1),
        "policy/approx_kl": _masked_mean(-delta, mask),  # k1 estimate of KL(old || theta), official ppo_kl
        "policy/ratio_mean": _masked_mean(ratio, mask),
        "policy/ratio_max": _masked_extreme(ratio, mask, "max"),
        "policy/tokens": float(mask.sum()),
        "policy/kept_tokens": float(keep.sum()),
        "policy/sequences": float(has_tokens.sum()),
    }


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """A_i = (R_i - mean_group(R)) / (std_group(R) + eps), one per sample. [N] -> [N].

    Samples are laid out group by group (G consecutive samples share a prompt). The std is
    the unbiased one (N - 1), as verl and TRL compute it; normalize_std=False gives Dr. GRPO's
    centred rewards. A group whose rewards are all equal gets advantage 0.

    >>> group_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0]), 4)  # mean -0.5, std 1
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    """
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages wants rewards of shape [N]; got {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_advantages: group_size must be an integer >= 2; got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"group_advantages: {rewards.numel()} rewards do not split into groups of {group_size}"
        )
    values = rewards.to(_accumulation_dtype(rewards))
    bad = (~torch.isfinite(values)).nonzero()
    if bad.numel():
        index = int(bad[0])
        raise ValueError(f"group_advantages: reward {index} is {values[index].item()}, not a finite number")
    groups = values.view(-1, group_size)  # [N/G, G]
    centred = groups - groups.mean(dim=1, keepdim=True)  # [N/G, G]
    if normalize_std:
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)  # [N]


def informative_groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: True for groups whose values are not all equal. [N] -> [N/G].

    A group where every sample scored the same has zero advantage everywhere and teaches
    nothing; DAPO drops it and samples more prompts (verl filters on accuracy by default).

    >>> informative_groups(torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]), 2)
    tensor([ True, False, False])
    """
    groups = torch.as_tensor(values).reshape(-1, group_size)  # [N/G, G]
    return groups.max(dim=1).values > groups.min(dim=1).values
