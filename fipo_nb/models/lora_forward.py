"""A leaner forward for peft's LoRA linear layers during a training step: the same numbers, fewer big tensors.

peft computes a vanilla LoRA layer as `result = base(x); result = result + lora_B(lora_A(dropout(x))) *
scaling`: the scaling multiplies the full-width [rows, tokens, out] product, and the sum is a third
tensor of that size; backward multiplies the incoming full-width gradient by the scaling once more.
When the scaling is a power of two (alpha = 2 r, fipo_nb's default, or alpha = r), multiplying by it
is exact in binary floating point (an exponent shift; nothing to round, away from overflow), so it can
be applied to the narrow [rows, tokens, r] activation instead: `lora_B(lora_A(x) * scaling)` equals
`lora_B(lora_A(x)) * scaling` bit for bit, each product and sum in the matrix multiply simply scaled,
and so do the gradients. The sum goes into the base layer's output in place where that output is a
plain nn.Linear's (its backward does not read its output). On the CPU these full-width temporaries are
fresh memory from the system for every layer of every pass (page faults), which is what the step spent
the time on (docs/benchmarks.md).

`lean_lora(model)` puts this forward on each layer that qualifies for the length of a `with` block
(an attribute on the instance, removed afterwards), and each call checks again that the layer is
still plain vanilla LoRA; anything else (adapters disabled or merged, several active adapters, DoRA
and other variants, dropout, a dtype cast, extra arguments, hooks on the adapter's own modules, a
scaling that is not a power of two >= 1) runs peft's own forward. Samples and gradients are
identical to peft's (tests/test_lora_forward.py compares them bit for bit).
"""

from __future__ import annotations

import contextlib
import math

import torch.nn.functional as F
from torch import nn

__all__ = ["exact_scaling", "lean_lora"]


def exact_scaling(scaling: float) -> bool:
    """A power of two >= 1: multiplying by it moves the exponent only (exact, in any float format)."""
    if not isinstance(scaling, (int, float)) or not math.isfinite(scaling) or scaling < 1:
        return False
    return math.frexp(scaling)[0] == 0.5


def _plain_linear(module) -> bool:
    from torch.nn.modules import module as _module

    hooked = module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or \
        module._backward_pre_hooks or _module._global_forward_hooks or _module._global_forward_pre_hooks
    return type(module) is nn.Linear and module.bias is None and not hooked


def _vanilla(layer):
    """(lora_A, lora_B, scaling) of `layer`'s one active adapter when the lean forward computes what peft does
    with it; None otherwise."""
    if layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    lora_a, lora_b, dropout, scaling = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name], \
        layer.scaling[name]
    if not (_plain_linear(lora_a) and _plain_linear(lora_b) and exact_scaling(scaling)):
        return None
    if not (isinstance(dropout, nn.Identity) or (type(dropout) is nn.Dropout and (dropout.p == 0 or not dropout.training))):
        return None
    return lora_a, lora_b, scaling


def _lean_forward(layer):
    peft_forward = type(layer).forward.__get__(layer)
    in_place = type(layer.base_layer) is nn.Linear  # addmm's backward never reads its output

    def forward(x, *args, **kwargs):
        adapter = None if args or kwargs else _vanilla(layer)
        if adapter is None or x.dtype != adapter[0].weight.dtype:
            return peft_forward(x, *args, **kwargs)
        lora_a, lora_b, scaling = adapter
        result = layer.base_layer(x)
        narrow = F.linear(x, lora_a.weight)  # [..., r]
        update = F.linear(narrow * scaling if scaling != 1 else narrow, lora_b.weight)  # [..., out]
        if result.dtype != update.dtype:
            return peft_forward(x)  # peft adds in the base's dtype and casts back: its own order
        return result.add_(update) if in_place else result + update

    return forward


@contextlib.contextmanager
def lean_lora(model):
    """Within the block, every peft LoRA nn.Linear layer of `model` whose adapter can be computed exactly
    this way runs the lean forward (module docstring); afterwards each has peft's forward back."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no peft: no LoRA layers
        yield
        return
    swapped = []
    try:
        for module in model.modules():
            if type(module) is LoraLinear and "forward" not in module.__dict__ and _vanilla(module) is not None:
                module.forward = _lean_forward(module)
                swapped.append(module)
        yield
    finally:
        for module in swapped:
            del module.forward
