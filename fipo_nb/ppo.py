"""PPO with a value model: GAE, the clipped value loss and the critic's metrics, to read beside the papers.

For response token t of sequence i (V: the critic's values at rollout time, r: token-level rewards):

    delta_t = r_t + gamma * V_{t+1} - V_t                     TD error (V past the last token: 0)
    A_t     = delta_t + gamma * lam * A_{t+1}                 GAE, Schulman et al. 2016 (arXiv 1506.02438)
    R_t     = A_t + V_t                                       the critic's target (before whitening)
    A~_t    = (A_t - mean(A)) / sqrt(var(A) + 1e-8)           whitened over the batch's valid tokens
    L_V     = 0.5 * mean_t max((V'_t - R_t)^2, (clip(V'_t, V_t - c, V_t + c) - R_t)^2)

Masked (padding / observation) tokens are skipped by the recursion: V_{t+1} and A_{t+1} are the
next *valid* token's. Semantics, argument order and float rounding follow verl 0.9.1
(`verl.trainer.ppo.core_algos`, `verl.utils.torch_functional`), bit for bit when the mask is int
(as verl's trainer makes it) or of the values' dtype, down to verl's float32 Bessel factor. One
difference: the recursion selects with where(), so NaN/inf at masked tokens stays out (verl's
`values * mask + (1 - mask) * next` would spread it).
VC-PPO (arXiv 2503.01491) decouples lambda: the critic's returns come from lam = 1.0, the policy's
advantages from lam = 0.95; VAPO (arXiv 2504.05118) makes the policy's lambda length-adaptive
(`length_adaptive_lambda`). Call `gae` once per lambda. Imports torch only.
"""

from __future__ import annotations

import torch

__all__ = ["critic_metrics", "explained_variance", "gae", "length_adaptive_lambda", "value_loss"]


def _masked_sum(values, mask, axis=None):
    # verl_F.masked_sum: NaN-safe where(), then * mask (a float64 mask promotes float32 values, as in verl)
    return (torch.where(mask.bool(), values, 0.0) * mask).sum(axis=axis)


def _masked_mean(values, mask, axis=None):
    # verl_F.masked_mean: the + 1e-8 goes through torch's promotion: an int/bool mask's count becomes a
    # float32 (default dtype) N + 1e-8 == N exactly; a float64 mask's count keeps the 1e-8
    return _masked_sum(values, mask, axis) / (mask.sum(axis=axis) + 1e-8)


def _masked_whiten(values, mask):
    """verl_F.masked_whiten / masked_var: (x - mean) * rsqrt(var_unbiased + 1e-8) over the mask."""
    mean = _masked_mean(values, mask)
    variance = _masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if count <= 1:
        raise ValueError(f"gae: whitening needs at least 2 valid tokens in the batch; got {int(count)}")
    # Bessel N / (N - 1): for an int mask verl's int / int is a float32 (default dtype) factor, even on float64
    variance = variance * (count / (count - 1))
    return (values - mean) * torch.rsqrt(variance + 1e-8)


def gae(token_level_rewards, values, response_mask, gamma, lam):
    """Advantages (whitened) and returns by GAE. verl: `core_algos.compute_gae_advantage_return`.

    token_level_rewards, values: [B, T] float; response_mask: [B, T] 0/1 (int as verl's trainer
    gives it, float, or bool, taken as int64). gamma: float. lam: float, or a per-sequence tensor
    [B] / [B, 1] (VAPO's length-adaptive lambda; cast to values' dtype). Returns (advantages,
    returns), both [B, T]: returns = A + V before whitening (the critic's target), advantages
    whitened over all valid tokens of the batch (verl_F.masked_whiten: masked mean, unbiased
    masked variance, rsqrt(var + 1e-8)). At a masked position the advantage carries the next
    valid token's A (0 after the last one), as in verl; anything there, even NaN, never reaches a
    valid token. Raises ValueError if the batch has fewer than 2 valid tokens (as verl does).
    """
    if values.dim() != 2 or token_level_rewards.shape != values.shape or response_mask.shape != values.shape:
        raise ValueError(
            "gae wants token_level_rewards, values and response_mask of one [B, T] shape; got "
            f"{tuple(token_level_rewards.shape)}, {tuple(values.shape)}, {tuple(response_mask.shape)}"
        )
    mask = response_mask.long() if response_mask.dtype == torch.bool else response_mask
    valid = mask.bool()  # [B, T]
    if isinstance(lam, torch.Tensor):
        if lam.dim() == 0:
            lam = float(lam)
        elif lam.numel() != values.shape[0]:
            raise ValueError(f"gae: a lam tensor must be [B] or [B, 1], B={values.shape[0]}; got {tuple(lam.shape)}")
        else:
            lam = lam.reshape(-1).to(device=values.device, dtype=values.dtype)  # [B]
    with torch.no_grad():
        nextvalues, lastgaelam = 0, 0  # V and A of the next valid token; none past the end
        reversed_advantages = []
        for t in reversed(range(values.shape[-1])):
            delta = token_level_rewards[:, t] + gamma * nextvalues - values[:, t]  # [B]
            lastgaelam_ = delta + gamma * lam * lastgaelam  # [B], verl's order of operations
            nextvalues = torch.where(valid[:, t], values[:, t], nextvalues)  # carried over masked tokens
            lastgaelam = torch.where(valid[:, t], lastgaelam_, lastgaelam)
            reversed_advantages.append(lastgaelam)
        advantages = torch.stack(reversed_advantages[::-1], dim=1)  # [B, T]
        returns = advantages + values
        advantages = _masked_whiten(advantages, mask)
    return advantages, returns


def _agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor):
    """verl's `core_algos.agg_loss`: the [B, T] loss matrix to a scalar."""
    if loss_agg_mode in ("token-mean", "token-sum"):
        if loss_agg_mode == "token-sum":
            return _masked_sum(loss_mat, loss_mask) * dp_size
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("(global) batch_num_tokens is required when dp_size > 1")
            batch_num_tokens = loss_mask.sum()
        return _masked_sum(loss_mat, loss_mask) / batch_num_tokens * dp_size
    if loss_agg_mode not in ("seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"):
        raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode}")
    seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)  # [B] token-sum
    tokens = torch.sum(loss_mask, dim=-1)  # [B]
    if loss_agg_mode == "seq-mean-token-mean":
        seq_losses = seq_losses / (tokens + 1e-8)  # [B] token-mean
    seq_mask = (tokens > 0).float()  # [B] fully masked sequences left out
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        global_batch_size = seq_mask.sum()
    loss = _masked_sum(seq_losses, seq_mask) / global_batch_size * dp_size  # seq-mean
    if loss_agg_mode == "seq-mean-token-sum-norm":
        loss = loss / (loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    return loss


def value_loss(vpreds, returns, values, response_mask, cliprange_value, loss_agg_mode="token-mean", *,
               dp_size=1, batch_num_tokens=None, global_batch_size=None, loss_scale_factor=None):
    """The clipped value loss and its clip fraction. verl: `core_algos.compute_value_loss` (from TRL).

    vpreds: [B, T] the critic now (carries the gradient); returns: [B, T] GAE targets; values:
    [B, T] the critic at rollout time; response_mask: [B, T] (verl's critic passes it as bool).
    vpredclipped = clip(vpreds, values - c, values + c); loss = 0.5 * agg(max((vpreds - R)^2,
    (vpredclipped - R)^2)), agg as verl's `agg_loss` (token-mean: masked sum / valid tokens, or
    / batch_num_tokens * dp_size). clipfrac: masked mean of [clipped loss > unclipped], a float32
    tensor as in verl. returns and values are detached (verl's come from the batch, gradient-free).
    """
    returns, values = returns.detach(), values.detach()
    vpredclipped = torch.max(torch.min(vpreds, values + cliprange_value), values - cliprange_value)  # clip_by_value
    vf_losses1 = (vpreds - returns) ** 2  # [B, T]
    vf_losses2 = (vpredclipped - returns) ** 2  # [B, T]
    clipped_vf_losses = torch.max(vf_losses1, vf_losses2)
    loss = 0.5 * _agg_loss(clipped_vf_losses, response_mask, loss_agg_mode, dp_size, batch_num_tokens,
                           global_batch_size, loss_scale_factor)
    clipfrac = _masked_mean(torch.gt(vf_losses2, vf_losses1).float(), response_mask)
    return loss, clipfrac


def length_adaptive_lambda(lengths, alpha=0.05):
    """VAPO's (arXiv 2504.05118) policy lambda = 1 - 1 / (alpha * length), clamped to [0, 1]. [B].

    Long responses get lambda near 1 (low bias on the far reward), short ones a smaller lambda
    (lower variance); alpha = 0.05 per VAPO. Length 0 gives 0. Float64 for integer lengths.

    >>> length_adaptive_lambda(torch.tensor([10, 20, 100]))
    tensor([0.0000, 0.0000, 0.8000], dtype=torch.float64)
    """
    if not alpha > 0:
        raise ValueError(f"length_adaptive_lambda: alpha must be > 0; got {alpha!r}")
    lengths = torch.as_tensor(lengths)
    if not lengths.is_floating_point():
        lengths = lengths.double()
    return (1.0 - 1.0 / (alpha * lengths)).clamp(0.0, 1.0)


def explained_variance(values, returns, mask):
    """1 - Var(R - V) / (Var(R) + 1e-5) over valid tokens, unbiased: verl's `critic/vf_explained_var`
    (`metric_utils.compute_data_metrics`). 1 for a perfect critic, ~0 for a constant one; NaN if no valid token.
    """
    valid = mask.bool()
    valid_values, valid_returns = torch.masked_select(values, valid), torch.masked_select(returns, valid)
    if valid_returns.numel() == 0:
        return float("nan")
    return (1.0 - torch.var(valid_returns - valid_values) / (torch.var(valid_returns) + 1e-5)).detach().item()


def critic_metrics(values, returns, advantages, mask, vf_loss=None, vf_clipfrac=None):
    """verl's critic metrics (`metric_utils.compute_data_metrics`, `workers/utils/losses.value_loss`):
    mean/max/min of values, returns and advantages over valid tokens ([B, T] each), the explained
    variance, and critic/vf_loss, critic/vf_clipfrac when given. Floats; NaN where no token is valid.
    """
    valid = mask.bool()
    metrics = {}
    for name, tensor in (("values", values), ("returns", returns), ("advantages", advantages)):
        picked = torch.masked_select(tensor, valid).detach()
        for stat in ("mean", "max", "min"):
            metrics[f"critic/{name}/{stat}"] = getattr(torch, stat)(picked).item() if picked.numel() else float("nan")
    metrics["critic/vf_explained_var"] = explained_variance(values, returns, mask)
    if vf_loss is not None:
        metrics["critic/vf_loss"] = float(vf_loss)
    if vf_clipfrac is not None:
        metrics["critic/vf_clipfrac"] = float(vf_clipfrac)
    return metrics
