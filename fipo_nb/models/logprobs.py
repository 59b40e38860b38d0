"""Per-token log-probs of a response without materialising the [B, T, V] log-softmax.

With Qwen's vocabulary (V = 151,936), float32 logits for 8 x 2048 tokens take 10 GB and their
log_softmax another 10 GB. Only log p(target) is needed: log p = logit[target] - logsumexp(logits),
so the output head runs on row chunks of the hidden states and each chunk's logits are dropped
as soon as their gather and logsumexp are taken. Under autograd, a frozen linear head (LoRA,
QLoRA: the head is not trained) gets its gradient with respect to the hidden states in the same
pass: d log p / d h = (onehot - softmax) W / temperature is one more product with W, taken while
the chunk's logits are at hand, and backward only scales it by the incoming gradient, so no
logits are kept and none are computed again. A head with trainable weights is checkpointed
instead: backward recomputes that chunk's logits. Either way peak memory is about one chunk of
logits (benchmarks/logprobs.py measures it).

This module never calls model.eval() or model.train(): callers decide the mode (bitsandbytes
4-bit on CPU breaks after an eval-mode no-grad forward, so the trainer stays in train mode).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = ["head_logprobs", "naive_token_logprobs", "selective_log_softmax", "token_logprobs"]

SOFTMAX_CHUNK = 256  # rows per logsumexp: its [rows, V] temporaries stay ~150 MB at Qwen's V


def selective_log_softmax(logits: Tensor, targets: Tensor, *, chunk_size: int = SOFTMAX_CHUNK,
                          overwrite: bool = False) -> Tensor:
    """log softmax(logits)[target] in float32, row chunk by row chunk. [..., V], [...] -> [...].

    gather(target) - logsumexp: never builds a log_softmax copy of `logits`, and the float32
    cast and logsumexp temporaries cover `chunk_size` rows at a time. `overwrite`: the caller hands
    `logits` over (float32, no autograd), and logsumexp runs in its memory (`_logsumexp_`).

    >>> selective_log_softmax(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))  # log(1/2)
    tensor([-0.6931])
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits [..., V] and targets [...] disagree: {tuple(logits.shape)} vs {tuple(targets.shape)}")
    overwrite = overwrite and logits.dtype == torch.float32 and not (logits.requires_grad and torch.is_grad_enabled())
    rows = logits.reshape(-1, logits.shape[-1])  # [N, V], a view when logits are contiguous
    index = targets.reshape(-1, 1).long()  # [N, 1]
    picked = []
    for chunk, target in zip(rows.split(chunk_size), index.split(chunk_size)):
        chunk = chunk.float()  # [c, V] float32 (no copy when already float32)
        lse = _logsumexp_ if overwrite else functools.partial(torch.logsumexp, dim=-1)
        picked.append(chunk.gather(-1, target).squeeze(-1) - lse(chunk))  # [c] (gather first: lse may overwrite)
    out = torch.cat(picked) if picked else rows.new_zeros(0, dtype=torch.float32)  # [N]
    return out.view(targets.shape)


def _logsumexp_(logits: Tensor) -> Tensor:
    """torch.logsumexp(logits, dim=-1) ([c, V] -> [c]) computed in `logits`' own memory, which it overwrites:
    torch's own steps (the row max, an infinite max taken as 0, exp of the difference, sum, log, plus the max),
    so the same float32 values bit for bit (tests/test_logprobs.py) without a [c, V] temporary. On the CPU
    each such temporary is fresh memory from the system (~100 MB for 512 rows of a 49k vocabulary)."""
    top = logits.amax(dim=-1, keepdim=True)  # [c, 1]
    top.masked_fill_(top.abs() == float("inf"), 0.0)
    total = logits.sub_(top).exp_().sum(dim=-1)  # [c]
    return total.log_().add_(top.squeeze(-1))


def _chunk_logprobs(hidden: Tensor, targets: Tensor, head: nn.Module, temperature: float) -> Tensor:
    own = not torch.is_grad_enabled() and _unhooked_linear(head)  # the head's output is this function's alone
    logits = F.linear(hidden, head.weight, head.bias) if own else head(hidden)  # [c, V], what head(hidden) gives
    own = own or logits.dtype != torch.float32  # .float() below makes a copy
    logits = logits.float()
    if temperature != 1.0:  # as verl: sample and score at the same temperature
        logits = logits.div_(temperature) if own and not torch.is_grad_enabled() else logits / temperature
        own = True
    return selective_log_softmax(logits, targets, overwrite=own and not torch.is_grad_enabled())  # [c]


class _FrozenHeadLogProbs(torch.autograd.Function):
    """log softmax(hidden W^T + b) / temperature)[target] for a frozen linear head, [c, H] -> [c] float32.
    The forward pass also computes d out / d hidden = (onehot - softmax) W / temperature ([c, H]), the only
    thing backward needs: the same value autograd computes, with its products in another order."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature):
        logits = F.linear(hidden, weight, bias).float()  # [c, V], as the head module computes it
        if temperature != 1.0:
            logits.div_(temperature)  # its own memory: the same values as logits / temperature
        picked = logits.gather(-1, targets[:, None]).squeeze(-1)  # [c]
        lse = torch.logsumexp(logits, dim=-1)  # [c]
        probs = logits.sub_(lse[:, None]).exp_()  # [c, V] softmax, in the logits' memory
        probs.scatter_add_(-1, targets[:, None], probs.new_full((len(targets), 1), -1.0))  # softmax - onehot
        if temperature != 1.0:
            probs.div_(temperature)
        ctx.save_for_backward(-(probs.to(weight.dtype) @ weight))  # [c, H] (onehot - softmax) W / temperature
        return picked - lse

    @staticmethod
    def backward(ctx, grad):
        (jacobian,) = ctx.saved_tensors
        return grad[:, None].to(jacobian.dtype) * jacobian, None, None, None, None


def _unhooked_linear(head: nn.Module) -> bool:
    """A plain nn.Linear whose forward nothing hooks into: F.linear with its weights is what calling it does."""
    from torch.nn.modules import module as _module

    hooked = (head._forward_hooks or head._forward_pre_hooks or _module._global_forward_hooks
              or _module._global_forward_pre_hooks)
    return type(head) is nn.Linear and not hooked


def _frozen_linear(head: nn.Module) -> bool:
    """A plain nn.Linear whose weights are not trained and whose forward nothing hooks into (a hook must run, and
    autograd must see what it does: such a head takes the checkpointed path)."""
    return _unhooked_linear(head) and not any(p.requires_grad for p in head.parameters())


def head_logprobs(
    hidden: Tensor,
    head: nn.Module,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    checkpoint: bool = True,
) -> Tensor:
    """log softmax(head(hidden) / temperature)[target] in float32. [..., H], [...] -> [...].

    Rows are flattened and sent through `head` `chunk_size` at a time. With grad enabled and
    `checkpoint`, each chunk of a frozen nn.Linear head computes its gradient with respect to the
    hidden states as it goes (`_FrozenHeadLogProbs`: the same log-probs, and the same gradients up to
    float rounding); any other head is wrapped in torch.utils.checkpoint (non-reentrant), so only
    its inputs are kept and backward recomputes its logits.
    """
    if chunk_size < 1:
        raise ValueError(f"head_logprobs: chunk_size must be >= 1; got {chunk_size}")
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [N, H]
    flat_targets = targets.reshape(-1)  # [N]
    use_checkpoint = checkpoint and torch.is_grad_enabled()
    fused = use_checkpoint and flat_hidden.requires_grad and _frozen_linear(head)
    out = []
    for h, t in zip(flat_hidden.split(chunk_size), flat_targets.split(chunk_size)):
        if fused:
            out.append(_FrozenHeadLogProbs.apply(h, head.weight, head.bias, t, temperature))  # [c]
        elif use_checkpoint:
            out.append(_checkpoint(_chunk_logprobs, h, t, head, temperature, use_reentrant=False))  # [c]
        else:
            out.append(_chunk_logprobs(h, t, head, temperature))  # [c]
    result = torch.cat(out) if out else flat_hidden.new_zeros(0, dtype=torch.float32)  # [N]
    return result.view(targets.shape)


def _body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(transformer body, output head) of an HF CausalLM or a peft PeftModel wrapping one."""
    body = None
    if hasattr(model, "get_decoder"):  # PeftModel forwards it to the wrapped CausalLM
        try:
            body = model.get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            body = None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or head is None:
        inner = getattr(getattr(model, "base_model", None), "model", None)  # PeftModel -> LoraModel -> CausalLM
        if isinstance(inner, nn.Module) and inner is not model:
            return _body_and_head(inner)
        raise TypeError(f"token_logprobs: cannot find the decoder and output head of {type(model).__name__}")
    return body, head


def _position_ids(attention_mask: Tensor) -> Tensor:
    # as generate(): real tokens count 0, 1, 2, ... from the first unpadded one. RoPE sees only
    # relative positions, so there this is about exactness; absolute ones (GPT-2) need it
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompt_length: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """log pi(response token j | all before it) at `temperature`. Returns [B, R] float32.

    input_ids, attention_mask: [B, L], the left-padded prompt (width `prompt_length`) followed
    by the right-padded response (width R = L - prompt_length). Position ids come from the
    attention mask as in generate(), so the values equal the log-probs generate() sampled with.
    The body runs once (through get_decoder(), which bypasses PeftModel.forward: fine for LoRA,
    not for prompt-learning adapters); the head (get_output_embeddings(), called as a module so
    LoRA on lm_head and tied embeddings work) sees only positions prompt_length-1 .. L-2, in
    chunks of `chunk_size` rows. Response padding (attention_mask 0) gets finite values of no
    meaning: mask them. The model's train/eval mode is left as it is.
    """
    length = input_ids.shape[1]
    if not 0 < prompt_length < length:
        raise ValueError(f"token_logprobs: need 0 < prompt_length < L; got {prompt_length} and L = {length}")
    body, head = _body_and_head(model)
    out = body(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=_position_ids(attention_mask),
        use_cache=False,
    )
    hidden = out[0]  # [B, L, H] last_hidden_state (ModelOutput and tuple alike)
    scoring = hidden[:, prompt_length - 1 : length - 1]  # [B, R, H] position j-1 predicts token j
    targets = input_ids[:, prompt_length:]  # [B, R]
    return head_logprobs(scoring, head, targets, temperature=temperature, chunk_size=chunk_size)


def naive_token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    prompt_length: int,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """Reference for token_logprobs: full [B, L, V] logits, log_softmax, gather. [B, R] float32."""
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask), use_cache=False
    ).logits  # [B, L, V]
    logits = logits[:, prompt_length - 1 : -1].float() / temperature  # [B, R, V]
    targets = input_ids[:, prompt_length:]  # [B, R]
    return F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, R]
