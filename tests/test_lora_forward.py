"""fipo_nb.models.lora_forward: the lean LoRA forward gives peft's outputs and gradients bit for bit, is
taken only where that holds, and leaves the model as it found it. Real tiny Qwen2 models with real peft."""

from __future__ import annotations

import peft
import pytest
import torch
import transformers

from fipo_nb.models.lora_forward import exact_scaling, lean_lora

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def lora_qwen2(r: int, alpha: float, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = transformers.Qwen2ForCausalLM(config)
    torch.manual_seed(1)
    # init_lora_weights=False: B != 0, so the adapters change the outputs and both A and B get gradients
    lora = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", init_lora_weights=False,
                           lora_dropout=0.0, **extra)
    return peft.get_peft_model(model, lora)


def outputs_and_gradients(model) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits of a fixed batch and the gradients of a loss on them ([B, L, V], one per trainable weight)."""
    model.zero_grad(set_to_none=True)
    ids = torch.arange(2 * 9).remainder(500).view(2, 9)  # [B, L]
    logits = model(input_ids=ids).logits  # [B, L, V]
    (logits.float().log_softmax(-1)[..., 7].sum() + logits.pow(2).mean()).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return logits.detach(), grads


def swapped(model) -> int:
    return sum("forward" in m.__dict__ for m in model.modules())


def test_exact_scaling_is_a_power_of_two_at_least_one():
    assert all(exact_scaling(s) for s in (1, 1.0, 2.0, 4, 0.5 * 4, 2.0 ** 10))
    assert not any(exact_scaling(s) for s in (0.5, 0.25, 1.5, 3.0, 2.0 ** 0.5, float("inf"), float("nan"), 0, -2.0))


@pytest.mark.parametrize("r, alpha", [(8, 16), (4, 4), (4, 16)])  # scaling 2, 1, 4
def test_lean_forward_equals_peft_bit_for_bit(r, alpha):
    model = lora_qwen2(r, alpha)
    expected_logits, expected_grads = outputs_and_gradients(model)
    with lean_lora(model):
        assert swapped(model) == 2 * 7  # every LoRA linear of both layers runs the lean forward
        logits, grads = outputs_and_gradients(model)
        with torch.no_grad():  # and without autograd (sampling, the old-log-prob pass)
            no_grad_logits = model(input_ids=torch.arange(2 * 9).remainder(500).view(2, 9)).logits
    assert swapped(model) == 0  # peft's forward is back
    assert torch.equal(logits, expected_logits) and torch.equal(no_grad_logits, expected_logits)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads))
    again_logits, again_grads = outputs_and_gradients(model)
    assert torch.equal(again_logits, expected_logits) and all(torch.equal(a, b) for a, b in zip(again_grads,
                                                                                                 expected_grads))


def test_scaling_that_is_not_a_power_of_two_keeps_peft_forward():
    model = lora_qwen2(8, 12)  # scaling 1.5: moving it onto the narrow product would round differently
    with lean_lora(model):
        assert swapped(model) == 0


def test_a_hook_on_the_adapter_keeps_peft_forward_and_runs():
    model = lora_qwen2(8, 16)
    seen = []
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    handle = layer.lora_A["default"].register_forward_hook(lambda *_: seen.append(1))
    try:
        with lean_lora(model):
            assert swapped(model) == 2 * 7 - 1 and "forward" not in layer.__dict__
            outputs_and_gradients(model)
    finally:
        handle.remove()
    assert seen == [1]


def test_adapter_switched_off_inside_the_block_gives_the_base_model():
    model = lora_qwen2(8, 16)
    ids = torch.arange(9)[None]  # [1, L]
    with model.disable_adapter(), torch.no_grad():
        base = model(input_ids=ids).logits
    with lean_lora(model), torch.no_grad():
        with model.disable_adapter():  # checked on every call, not once at the start of the block
            off = model(input_ids=ids).logits
        on = model(input_ids=ids).logits
    assert torch.equal(off, base) and not torch.equal(on, base)


def test_merged_adapter_and_two_active_adapters_take_peft_forward():
    model = lora_qwen2(8, 16)
    ids = torch.arange(9)[None]  # [1, L]
    model.merge_adapter()
    with lean_lora(model):
        assert swapped(model) == 0
    model.unmerge_adapter()
    model.add_adapter("second", peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                init_lora_weights=False))
    model.base_model.set_adapter(["default", "second"])
    with lean_lora(model):
        assert swapped(model) == 0
    model.base_model.set_adapter("default")
    with torch.no_grad():
        expected = model(input_ids=ids).logits  # peft's (after unmerging, the base weights carry its rounding)
    with lean_lora(model), torch.no_grad():
        assert swapped(model) == 2 * 7
        assert torch.equal(model(input_ids=ids).logits, expected)
