"""Stage 7 of a step, one optimizer update: a mini-batch's gradient over its micro-batches, clipped, applied.

The official FIPO loss is the token-mean over the tokens *kept* after the sequence drop rule
(sequences with more than one dual-clipped negative token leave the loss). Which sequences are
dropped is only known once every micro-batch has been scored, so each micro-batch is
normalised by the mini-batch's response-token count (known up front: gradients keep their usual
size, no overflow in half precision) and, after the last one, the accumulated gradients are
rescaled once by tokens / kept, before clipping:

    grad = sum_{micro} d(sum_kept loss_t) / tokens * tokens / kept = d(sum_kept loss_t) / kept

which is the gradient of the paper's global token-mean, exactly, for any micro-batch split
("grpo" does the same with sequences). The old-log-prob pass and the updates split rows into
micro-batches the same way (`micro_batch_ranges`), so the same rows get the same layout in both;
the first update's own forward is its rows' old-log-prob pass (`on_policy`), so its log-ratio is
exactly 0 on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import FIPOConfig
from ..core import policy_loss

__all__ = [
    "MiniBatchGradient", "ValueUpdate", "accumulate_gradient", "micro_batch_ranges", "optimizer_step", "value_update",
]


def micro_batch_ranges(n_rows: int, rows_per_update: int, micro_batch_size: int) -> list[list[range]]:
    """Row ranges per mini-batch, each split into micro-batches of at most `micro_batch_size`.

    >>> micro_batch_ranges(6, 4, 3)
    [[range(0, 3), range(3, 4)], [range(4, 6)]]
    """
    out = []
    for start in range(0, n_rows, rows_per_update):
        stop = min(start + rows_per_update, n_rows)
        out.append([range(s, min(s + micro_batch_size, stop)) for s in range(start, stop, micro_batch_size)])
    return out


@dataclass
class MiniBatchGradient:
    """What accumulating one mini-batch's gradient produced. Per-row tensors are [n, R] on the CPU,
    in mini-batch row order (R: the rollout's response width)."""

    finite: bool  # False: a micro-batch gave a non-finite loss (the gradient is incomplete)
    tokens: int  # response tokens in the loss mask
    kept: int  # of them, kept after the drop rule: the token-mean's denominator
    metrics: list[dict] = field(default_factory=list)  # policy_loss metrics per micro-batch
    log_ratio: torch.Tensor | None = None  # [n, R] delta_t at this update (0 off the response)
    weights: torch.Tensor | None = None  # [n, R] f_t
    future_kl: torch.Tensor | None = None  # [n, R]
    in_loss: torch.Tensor | None = None  # [n] bool: the row kept a token after the drop rule


def accumulate_gradient(
    micro_batches: list[range],
    log_probs: Callable[[range], torch.Tensor],
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    response_mask: torch.Tensor,
    config: FIPOConfig,
    parameters: list[torch.nn.Parameter],
    *,
    on_policy: bool = False,
) -> MiniBatchGradient:
    """Backpropagate the mini-batch made of `micro_batches` into `parameters`' .grad (zeroed first).

    on_policy: the weights are those that sampled the rows (the first update of a step): each
    micro-batch's log-probs, detached, are its old log-probs, written into `old_log_probs` (their rows
    there are not read), so the log-ratio is exactly 0 and no separate no-grad pass is needed.
    log_probs(rows) -> [n, r] log pi_theta of those rows' responses, with grad (r <= R).
    old_log_probs, loss_mask, response_mask: [N, R] for the whole rollout; advantages: [N], or [N, R] (GAE).
    On return the gradient is that of the token-mean over kept tokens (see the module doc);
    it is not clipped and no optimizer step is taken.
    """
    rows = range(micro_batches[0].start, micro_batches[-1].stop)
    width = old_log_probs.shape[1]
    tokens = int(loss_mask[rows.start: rows.stop].sum())
    in_loss = loss_mask[rows.start: rows.stop].any(dim=1)  # [n] a new tensor: updated below
    sequences = int(in_loss.sum())
    result = MiniBatchGradient(
        finite=True, tokens=tokens, kept=0, log_ratio=torch.zeros(len(rows), width),
        weights=torch.ones(len(rows), width), future_kl=torch.zeros(len(rows), width), in_loss=in_loss,
    )
    for param in parameters:
        param.grad = None
    if tokens == 0:
        return result
    kept_sequences = 0
    bound = config.log_ratio_clamp
    for micro in micro_batches:
        new = log_probs(micro)  # [n, r] with grad
        r, device = new.shape[1], new.device
        if on_policy:  # the old-log-prob pass of these rows is this very forward
            old_log_probs[micro.start: micro.stop] = 0.0
            old_log_probs[micro.start: micro.stop, :r] = new.detach().to(old_log_probs)
        old = old_log_probs[micro.start: micro.stop, :r].to(device)  # [n, r]
        mask = loss_mask[micro.start: micro.stop, :r].to(device)  # [n, r]
        advantage = advantages[micro.start: micro.stop]  # [n] per response, or [n, R] per token (GAE): to r
        advantage = (advantage[:, :r] if advantage.dim() == 2 else advantage).to(device)
        out = policy_loss(new, old, advantage, mask, config,
                          num_tokens=tokens, num_sequences=sequences)  # normalised by the mini-batch's tokens
        if not torch.isfinite(out.loss):
            result.finite = False
            return result
        out.loss.backward()
        result.metrics.append(out.metrics)
        result.kept += int(out.token_mask.sum())
        kept_sequences += int(out.token_mask.any(dim=1).sum())
        local = slice(micro.start - rows.start, micro.stop - rows.start)
        response = response_mask[micro.start: micro.stop, :r].to(device)  # [n, r] filtered rows are traced too
        delta = torch.where(response, (new.detach() - old).clamp(-bound, bound), torch.zeros_like(old))
        result.log_ratio[local, :r] = delta.float().cpu()
        result.weights[local, :r] = out.weights.float().cpu()
        result.future_kl[local, :r] = out.future_kl.float().cpu()
        result.in_loss[local] &= out.token_mask.any(dim=1).cpu()  # the drop rule
    # token-mean over kept tokens (grpo: mean over kept sequences), not over all of them
    total, kept = (sequences, kept_sequences) if config.loss == "grpo" else (tokens, result.kept)
    if 0 < kept < total:
        with torch.no_grad():
            for param in parameters:
                if param.grad is not None:
                    param.grad.mul_(total / kept)
    return result


def optimizer_step(optimizer, parameters: list[torch.nn.Parameter], gradient: MiniBatchGradient,
                   grad_clip: float) -> str | float:
    """Clip the accumulated gradient and step the optimizer; the gradients are zeroed afterwards.

    Returns the gradient norm before clipping, "empty" when no token was left in the loss (no step:
    AdamW's decay would still move the weights) or "skipped" when the loss or gradient is not finite
    (the weights stay as they were).
    """
    try:
        if gradient.finite and gradient.kept == 0:
            return "empty"
        norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip or float("inf"))
        if not (gradient.finite and torch.isfinite(norm)):
            return "skipped"
        optimizer.step()
        return norm.item()
    finally:
        optimizer.zero_grad(set_to_none=True)


@dataclass
class ValueUpdate:
    """What one mini-batch's critic update did."""

    loss: float  # the clipped value loss, token-mean over the mini-batch
    clipfrac: float  # share of its tokens where the clipped branch was larger
    grad_norm: str | float  # as optimizer_step returns it


def value_update(micro_batches: list[range], values_of: Callable[[range], torch.Tensor], old_values: torch.Tensor,
                 returns: torch.Tensor, loss_mask: torch.Tensor, value_clip: float, optimizer,
                 parameters: list[torch.nn.Parameter], grad_clip: float) -> ValueUpdate:
    """One critic update on a mini-batch: the clipped value loss (`ppo.value_loss`) of each micro-batch,
    weighted by its share of the mini-batch's tokens (the exact token-mean over the mini-batch, as the
    policy's), backward, clip, step. values_of(rows) -> [n, r] V of those rows, with grad; old_values,
    returns, loss_mask: [N, R] for the whole rollout."""
    from ..ppo import value_loss

    rows = range(micro_batches[0].start, micro_batches[-1].stop)
    tokens = int(loss_mask[rows.start: rows.stop].sum())
    for param in parameters:
        param.grad = None
    total_loss = total_clip = 0.0
    finite = True
    for micro in micro_batches:
        mask = loss_mask[micro.start: micro.stop]
        share = int(mask.sum()) / tokens if tokens else 0.0
        if share == 0.0:
            continue
        vpreds = values_of(micro)  # [n, r]
        r, device = vpreds.shape[1], vpreds.device
        loss, clipfrac = value_loss(vpreds, returns[micro.start: micro.stop, :r].to(device),
                                    old_values[micro.start: micro.stop, :r].to(device), mask[:, :r].to(device),
                                    value_clip)
        if not torch.isfinite(loss):
            finite = False
            break
        (loss * share).backward()
        total_loss += loss.item() * share
        total_clip += clipfrac.item() * share
    gradient = MiniBatchGradient(finite=finite, tokens=tokens, kept=tokens)
    return ValueUpdate(total_loss, total_clip, optimizer_step(optimizer, parameters, gradient, grad_clip))
