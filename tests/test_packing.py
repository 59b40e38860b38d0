"""fipo_nb.models.packing: padding-free log-prob passes equal the padded layout's, on real tiny models."""

from __future__ import annotations

import pytest
import torch

from fipo_nb.models import load_policy
from fipo_nb.models.packing import (
    layout_cost, pack_rows, packed_token_logprobs, packing_supported, response_logprobs, sharing_supported,
)
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.rollout import generate, pad_token_id
from fipo_nb.trainer import FIPOTrainer

PROMPTS = [[{"role": "user", "content": "What is 1 + 2?"}], [{"role": "user", "content": "Name a prime."}],
           [{"role": "user", "content": "Tell me, at some length, about the sea."}]]


def test_rows_are_packed_first_fit_decreasing_into_bins_no_longer_than_the_longest_row():
    # real lengths (prompt + response): r0 = 2 + 3 = 5, r1 = 1 + 1 = 2, r2 = 2 + 1 = 3, r3 = 1 + 3 = 4, r4 = 1 + 1 = 2
    prompt_ids = torch.tensor([[11, 12], [0, 21], [31, 32], [0, 41], [0, 51]])
    prompt_mask = prompt_ids != 0
    response_ids = torch.tensor([[13, 14, 15], [22, 0, 0], [33, 0, 0], [42, 43, 44], [52, 0, 0]])
    response_mask = response_ids != 0
    packed = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, pad_id=0)
    # capacity 5; decreasing: r0 (5) -> bin 0 full; r3 (4) -> bin 1 (1 left); r2 (3) -> bin 2 (2 left);
    # r1 (2) -> bin 2 (0 left); r4 (2) -> bin 3 (3 left): 4 bins of width 5, bin 3 padded after r4
    assert packed.input_ids.tolist() == [[11, 12, 13, 14, 15], [41, 42, 43, 44, 0], [31, 32, 33, 21, 22],
                                         [51, 52, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # each response token is predicted by the column before it: r0's 13 by column 1 of bin 0, ...
    assert packed.targets.tolist() == [13, 14, 15, 42, 43, 44, 33, 22, 52]
    assert packed.predictor.tolist() == [1, 2, 3, 5, 6, 7, 11, 13, 15]
    assert packed.rows.tolist() == [0, 0, 0, 3, 3, 3, 2, 1, 4] and packed.columns.tolist() == [0, 1, 2, 0, 1, 2, 0, 0, 0]


@pytest.mark.parametrize("name", ["tiny-qwen2-char", "tiny-qwen3"])
def test_packed_log_probs_and_gradients_equal_the_padded_layout(name):
    policy = load_policy(name, "lora", lora_r=4, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # a LoRA B of 0 would make every adapter gradient but B's vanish
        for param in policy.trainable_parameters():
            param.normal_(0.0, 0.05)
    rollout = generate(policy.model, policy.tokenizer, PROMPTS, n=3, max_prompt_length=512, max_new_tokens=24)
    lengths = torch.minimum(rollout.response_lengths, torch.arange(24, 0, -2)[: len(rollout)])  # [N] all different
    mask = torch.arange(rollout.response_ids.shape[1])[None, :] < lengths[:, None]  # [N, R]
    values, grads = {}, {}
    for pack in (False, True):
        policy.model.zero_grad(set_to_none=True)
        out = response_logprobs(policy.model, rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids * mask,
                                mask, pad_id=pad_token_id(policy.tokenizer), pack=pack)  # [N, R]
        (out[mask] * torch.linspace(-1, 1, int(mask.sum()))).sum().backward()
        values[pack] = out.detach()
        grads[pack] = torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])
    torch.testing.assert_close(values[True][mask], values[False][mask], rtol=0, atol=2e-5)
    assert (values[True][~mask] == 0).all()
    scale = grads[False].abs().max().item()  # float32 sums in another order: ~1e-7 of the largest entry
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-5 * scale)


def test_a_model_that_ignores_packing_gets_the_padded_layout(monkeypatch):
    import transformers.masking_utils as masking

    policy = load_policy("tiny-qwen2-char", "lora", lora_r=4, device="cpu")
    torch.manual_seed(0)
    rollout = generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=512, max_new_tokens=12)
    args = (rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    with torch.no_grad():
        padded = response_logprobs(policy.model, *args, pad_id=0, pack=False)
        monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)  # plain causal mask
        assert not packing_supported(policy.model)  # sequences would see each other: detected
        assert torch.equal(response_logprobs(policy.model, *args, pad_id=0, pack=True), padded)


def steps_with_and_without(tmp_path, setting: str, micro_batch_size: int):
    """One cpu-smoke step with `setting` on and one with it off, from the same seed: (on, off)."""
    results = {}
    for on in (True, False):
        config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path / str(on)}", f"{setting}={on}",
                                                           f"micro_batch_size={micro_batch_size}"])
        results[on] = FIPOTrainer(config, reward_fn=lambda p, r, s: float(sum(map(ord, r)) % 2)).step()
    return results[True], results[False]


def assert_the_same_step(on, off) -> None:
    """The same samples, old log-probs to float rounding, a first update exactly on-policy, the same weights."""
    assert torch.equal(on.rollout.response_ids, off.rollout.response_ids)  # sampling is untouched
    mask = on.rollout.response_mask
    torch.testing.assert_close(on.old_log_probs[mask], off.old_log_probs[mask], rtol=0, atol=1e-5)
    assert (on.log_ratio[on.mini_batch == 0] == 0).all()  # the 1st update's forward gives its old log-probs
    torch.testing.assert_close(on.weights, off.weights, rtol=0, atol=1e-4)


def test_a_packed_step_equals_a_padded_step_and_its_first_update_is_on_policy(tmp_path):
    assert_the_same_step(*steps_with_and_without(tmp_path, "pack_sequences", 5))


def test_rows_with_the_same_prompt_share_it_in_one_segment():
    # rows 0, 2 answer prompt [11, 12], row 1 prompt [21]; row 2's response is [15] (one token)
    prompt_ids, prompt_mask = torch.tensor([[11, 12], [0, 21], [11, 12]]), torch.tensor([[1, 1], [0, 1], [1, 1]]) > 0
    response_ids = torch.tensor([[13, 14], [22, 23], [15, 0]])
    packed = pack_rows(prompt_ids, prompt_mask, response_ids, response_ids != 0, pad_id=0, share_prompts=True)
    # segments: [11 12 | 13 14 | 15] (5 tokens), [21 | 22 23] (3): one bin each, capacity 5
    assert packed.input_ids.tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 1]]  # each response continues the prompt
    assert packed.branch.tolist() == [[0, 0, 1, 1, 2], [0, 1, 1, 0, 0]]
    assert packed.segment.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, -1, -1]]
    assert packed.targets.tolist() == [13, 14, 15, 22, 23]
    assert packed.predictor.tolist() == [1, 2, 1, 5, 6]  # 15 is predicted by the prompt's last token, as 13
    mask = packed.attention_mask()[0, 0].int().tolist()  # bin 0: 15 (column 4) sees the prompt and itself
    assert mask[4] == [1, 1, 0, 0, 1] and mask[3] == [1, 1, 1, 1, 0] and mask[1] == [1, 1, 0, 0, 0]
    assert packed.attention_mask()[1, 0, 4].int().tolist() == [0, 0, 0, 1, 1]  # padding sees padding only
    plain = pack_rows(prompt_ids, prompt_mask, response_ids, response_ids != 0, pad_id=0)
    assert plain.segment is None and plain.attention_mask() is None  # the model's own mask from the positions


@pytest.mark.parametrize("name,attention", [("tiny-qwen2-char", "sdpa"), ("tiny-qwen3", "sdpa"),
                                            ("tiny-qwen2-char", "eager")])
def test_shared_prompt_log_probs_and_gradients_equal_the_padded_layout(name, attention):
    policy = load_policy(name, "lora", lora_r=4, device="cpu")
    policy.model.set_attn_implementation(attention)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in policy.trainable_parameters():
            param.normal_(0.0, 0.05)
    rollout = generate(policy.model, policy.tokenizer, PROMPTS, n=3, max_prompt_length=512, max_new_tokens=24)
    lengths = torch.minimum(rollout.response_lengths, torch.arange(24, 0, -2)[: len(rollout)])  # [N] all different
    mask = torch.arange(rollout.response_ids.shape[1])[None, :] < lengths[:, None]  # [N, R]
    args = (rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids * mask, mask)
    assert sharing_supported(policy.model)
    values, grads = {}, {}
    for share in (False, True):
        policy.model.zero_grad(set_to_none=True)
        if share:
            packed = pack_rows(*args, pad_id=pad_token_id(policy.tokenizer), share_prompts=True)
            assert packed.input_ids.shape[0] < len(PROMPTS) * 3  # three rows per prompt in fewer bins
            out = packed_token_logprobs(policy.model, packed, tuple(mask.shape))
        else:
            out = response_logprobs(policy.model, *args, pad_id=pad_token_id(policy.tokenizer), pack=False)
        (out[mask] * torch.linspace(-1, 1, int(mask.sum()))).sum().backward()
        values[share] = out.detach()
        grads[share] = torch.cat([p.grad.flatten() for p in policy.trainable_parameters()])
    eps = torch.finfo(torch.float32).eps
    scale = values[False][mask].abs().max().item()  # float32 sums in another order: a few eps of the scale
    torch.testing.assert_close(values[True][mask], values[False][mask], rtol=0, atol=64 * eps * scale)
    assert (values[True][~mask] == 0).all()
    scale = grads[False].abs().max().item()
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-5 * scale)


def test_a_model_that_ignores_the_shared_mask_does_not_share(monkeypatch):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    policy = load_policy("tiny-qwen2-char", "lora", lora_r=4, device="cpu")
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    # an attention that drops the mask and is causal over the whole bin: the responses would see each other
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "sdpa",
                        lambda module, q, k, v, attention_mask, **kw: sdpa(module, q, k, v, None, **kw))
    assert not sharing_supported(policy.model)


def test_the_shared_layout_is_taken_where_it_computes_less():
    from types import SimpleNamespace

    smollm2 = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536)

    def layouts(prompt: int, response: int, rows: int = 4):
        ids = torch.arange(1, prompt + 1).repeat(rows, 1)
        responses = torch.arange(1, response + 1).repeat(rows, 1)
        args = (ids, ids > 0, responses, responses > 0)
        return (layout_cost(pack_rows(*args, pad_id=0, share_prompts=True), smollm2),
                layout_cost(pack_rows(*args, pad_id=0), smollm2))

    shared, plain = layouts(61, 64)  # the demo: a prompt as long as its responses
    assert shared < 0.75 * plain
    shared, plain = layouts(200, 8000)  # long responses: the dense mask's attention outweighs the prompt saved
    assert shared > plain


def test_a_step_with_shared_prompts_equals_one_without(tmp_path):
    shared, plain = steps_with_and_without(tmp_path, "share_prompts", 8)
    assert_the_same_step(shared, plain)
    torch.testing.assert_close(shared.log_ratio, plain.log_ratio, rtol=0, atol=1e-4)


def test_doctests_in_packing_pass():
    import doctest

    import fipo_nb.models.packing

    assert doctest.testmod(fipo_nb.models.packing).failed == 0
