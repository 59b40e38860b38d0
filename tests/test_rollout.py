"""fipo_nb.rollout: G samples per prompt, masks up to the stop token, left truncation, grouping."""

from __future__ import annotations

import pytest
import torch

from fipo_nb.models import load_policy
from fipo_nb.rollout import BACKENDS, encode_prompts, generate

PROMPTS = [[{"role": "user", "content": "What is 1 + 2?"}], [{"role": "user", "content": "Name a prime."}]]


def char_policy():
    return load_policy("tiny-qwen2-char", "lora", lora_r=2, device="cpu")


def test_rollout_has_g_rows_per_prompt_with_masks_up_to_the_stop_token():
    policy = char_policy()
    torch.manual_seed(0)
    out = generate(policy.model, policy.tokenizer, PROMPTS, n=3, max_prompt_length=512, max_new_tokens=40)
    assert len(out) == 6 and out.group_size == 3
    eos = policy.tokenizer.eos_token_id
    for row in range(6):
        ids, mask = out.response_ids[row], out.response_mask[row]
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # a prefix
        if out.finish_reasons[row] == "stop":
            assert ids[length - 1] == eos and (ids[: length - 1] != eos).all()
        else:
            assert length == 40 and (ids[:length] != eos).all()
    # rows of a group share their prompt
    assert torch.equal(out.prompt_ids[0], out.prompt_ids[2]) and not torch.equal(out.prompt_ids[0], out.prompt_ids[3])
    # left padding: each prompt's tokens end at the last column
    assert out.prompt_mask[:, -1].all()


def test_a_stop_token_ends_the_response_and_is_kept():
    policy = char_policy()
    eos = policy.tokenizer.eos_token_id

    def say_eos(module, inputs, logits):  # the model now answers <|im_end|> at once
        forced = torch.full_like(logits, -1e4)
        forced[..., eos] = 0.0
        return forced

    handle = policy.model.get_output_embeddings().register_forward_hook(say_eos)
    out = generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=512, max_new_tokens=10)
    handle.remove()
    assert out.finish_reasons == ["stop"] * 4
    assert out.response_lengths.tolist() == [1] * 4  # an empty generation: only the stop token


def test_long_prompts_are_cut_on_the_left_and_counted():
    policy = char_policy()
    long_prompt = [{"role": "user", "content": "x" * 300 + " What is 1 + 2?"}]
    ids, truncated, texts = encode_prompts(policy.tokenizer, [long_prompt, PROMPTS[0]], max_prompt_length=64)
    assert texts[0].startswith("<|im_start|>user\nxxx")  # the whole prompt, before truncation
    assert truncated == 1 and len(ids[0]) == 64
    assert policy.tokenizer.decode(ids[0]).endswith("What is 1 + 2?<|im_end|>\n<|im_start|>assistant\n")
    out = generate(policy.model, policy.tokenizer, [long_prompt], n=2, max_prompt_length=64, max_new_tokens=4)
    assert out.prompts_truncated == 1 and out.prompt_length == 64


def test_select_trims_padding_and_keeps_the_tokens():
    policy = char_policy()
    torch.manual_seed(1)
    out = generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=512, max_new_tokens=30)
    part = out.select(range(2, 4))
    assert part.prompt_length == int(out.prompt_mask[2:4].sum(1).max())
    assert part.response_ids.shape[1] == int(out.response_lengths[2:4].max())
    for row in (0, 1):
        src = 2 + row
        assert torch.equal(part.response_ids[row][part.response_mask[row]], out.response_ids[src][out.response_mask[src]])
        assert torch.equal(part.prompt_ids[row][part.prompt_mask[row]], out.prompt_ids[src][out.prompt_mask[src]])


def test_greedy_sampling_is_deterministic_and_checkpointing_comes_back():
    policy = load_policy("tiny-qwen2-char", "lora", lora_r=2, device="cpu", gradient_checkpointing=True)
    a = generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=512, max_new_tokens=8, temperature=0)
    b = generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=512, max_new_tokens=8, temperature=0)
    assert torch.equal(a.response_ids, b.response_ids)
    assert policy.model.is_activation_checkpointing and policy.model.training


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_models_own_generation_defaults_never_reach_sampling(backend):
    # Qwen2.5-Instruct ships repetition_penalty=1.05 (and top_k, top_p): transformers would merge
    # such defaults into our GenerationConfig and sample from a distribution nobody scores
    from transformers import GenerationConfig

    plain, loaded = char_policy(), char_policy()
    loaded.model.get_base_model().generation_config = GenerationConfig(
        repetition_penalty=1.5, no_repeat_ngram_size=2, top_k=3, top_p=0.5, min_new_tokens=30, temperature=0.3,
        suppress_tokens=[5, 6, 7], bad_words_ids=[[8], [9]], eos_token_id=plain.tokenizer.eos_token_id,
    )
    kwargs = dict(n=4, max_prompt_length=64, max_new_tokens=40, backend=backend)
    torch.manual_seed(7)
    want = generate(plain.model, plain.tokenizer, PROMPTS, **kwargs)
    torch.manual_seed(7)
    got = generate(loaded.model, loaded.tokenizer, PROMPTS, **kwargs)
    assert torch.equal(want.response_ids, got.response_ids) and want.finish_reasons == got.finish_reasons
    assert want.finish_reasons.count("stop") > 0  # min_new_tokens=30 did not hold the stop token back
    assert loaded.model.get_base_model().generation_config.repetition_penalty == 1.5  # restored afterwards


# prompts of three lengths: the chunks' left padding, prefix sharing and early stops all differ
MIXED = PROMPTS + [[{"role": "user", "content": "Tell me, at some length, about the sea and the ships on it."}]]


@pytest.mark.parametrize("temperature, top_p, top_k, batch_size", [
    (1.0, 1.0, 0, None), (0.7, 1.0, 0, 5), (1.3, 0.8, 0, None), (1.0, 1.0, 7, 4), (0.0, 1.0, 0, 5),
])
def test_compact_backend_draws_the_same_samples_as_generate(temperature, top_p, top_k, batch_size):
    # same random numbers row for row (one multinomial over the whole chunk per step), same processors
    policy = char_policy()
    kwargs = dict(n=3, max_prompt_length=512, max_new_tokens=48, temperature=temperature, top_p=top_p, top_k=top_k,
                  batch_size=batch_size)
    torch.manual_seed(11)
    want = generate(policy.model, policy.tokenizer, MIXED, backend="generate", **kwargs)
    after_want = torch.rand(4)
    torch.manual_seed(11)
    got = generate(policy.model, policy.tokenizer, MIXED, backend="compact", **kwargs)
    assert torch.equal(torch.rand(4), after_want)  # as many random numbers used: the next step samples alike too
    assert torch.equal(want.response_ids, got.response_ids) and torch.equal(want.response_mask, got.response_mask)
    assert want.finish_reasons == got.finish_reasons and torch.equal(want.prompt_ids, got.prompt_ids)
    if temperature > 0:  # the case is worth something only if rows end at different steps
        assert 1 < len(set(want.response_lengths.tolist()))


@pytest.mark.parametrize("name, mode", [("tiny-qwen3", "lora"), ("tiny-qwen2", "qlora")])
def test_compact_backend_matches_generate_on_qwen_models_and_4bit(name, mode):
    policy = load_policy(name, mode, lora_r=4, device="cpu")
    kwargs = dict(n=3, max_prompt_length=512, max_new_tokens=12, temperature=1.0)
    torch.manual_seed(5)
    want = generate(policy.model, policy.tokenizer, MIXED, backend="generate", **kwargs)
    torch.manual_seed(5)
    got = generate(policy.model, policy.tokenizer, MIXED, backend="compact", **kwargs)
    assert torch.equal(want.response_ids, got.response_ids) and want.finish_reasons == got.finish_reasons


def test_compact_backend_prefills_each_prompt_once_and_drops_finished_rows():
    policy = char_policy()
    eos = policy.tokenizer.eos_token_id
    batch_sizes, calls = [], [0]

    def stop_row_by_row(module, inputs, logits):  # record the batch; from the 3rd step on, row 0 of it says eos
        batch_sizes.append(logits.shape[0])
        calls[0] += 1
        logits[..., eos] = -1e4  # no other row ends by chance
        if calls[0] >= 3:
            logits[0, ..., :] = -1e4
            logits[0, ..., eos] = 0.0
        return logits

    handle = policy.model.get_output_embeddings().register_forward_hook(stop_row_by_row)
    out = generate(policy.model, policy.tokenizer, PROMPTS, n=3, max_prompt_length=512, max_new_tokens=40,
                   temperature=1.0, backend="compact")
    handle.remove()
    # prefill: 2 distinct prompts -> token 1 of 6 rows; 6 rows -> token 2; 6 rows -> token 3, one row's is eos;
    # then one row fewer per step: 5, 4, 3, 2, 1 (the last row's eos ends the loop without another forward)
    assert batch_sizes == [2, 6, 6, 5, 4, 3, 2, 1]
    assert out.finish_reasons == ["stop"] * 6 and sorted(out.response_lengths.tolist()) == [3, 4, 5, 6, 7, 8]


def test_an_unknown_backend_is_refused_by_name():
    from fipo_nb.config import TrainConfig

    policy = char_policy()
    with pytest.raises(ValueError, match="backend must be one of compact, generate; got 'vllm'"):
        generate(policy.model, policy.tokenizer, PROMPTS, n=2, max_prompt_length=64, max_new_tokens=4, backend="vllm")
    with pytest.raises(ValueError, match="TrainConfig.rollout_backend must be one of compact, generate"):
        TrainConfig(rollout_backend="vllm").validate()


def test_empty_prompts_and_zero_counts_are_refused_before_anything_is_sampled():
    from fipo_nb.models import char_tokenizer

    tokenizer = char_tokenizer()  # no model is needed: every check comes first
    with pytest.raises(ValueError, match="generate: no prompts"):
        generate(None, tokenizer, [], n=2, max_prompt_length=64, max_new_tokens=4)
    with pytest.raises(ValueError, match="n and max_new_tokens must be >= 1; got 0, 4"):
        generate(None, tokenizer, ["1 + 2 ="], n=0, max_prompt_length=64, max_new_tokens=4)
    with pytest.raises(ValueError, match="generate: prompt 1 is empty"):
        generate(None, tokenizer, ["1 + 2 =", ""], n=2, max_prompt_length=64, max_new_tokens=4)


def test_concat_rollouts_repads_each_part_and_keeps_every_rows_tokens():
    from fipo_nb.rollout import Rollout, concat_rollouts

    def part(prompts, responses, reason):  # rows of token lists: prompts left-padded, responses right-padded with 0
        p, r = max(map(len, prompts)), max(map(len, responses))
        return Rollout(
            prompt_ids=torch.tensor([[0] * (p - len(x)) + x for x in prompts]),
            prompt_mask=torch.tensor([[False] * (p - len(x)) + [True] * len(x) for x in prompts]),
            response_ids=torch.tensor([x + [0] * (r - len(x)) for x in responses]),
            response_mask=torch.tensor([[True] * len(x) + [False] * (r - len(x)) for x in responses]),
            finish_reasons=[reason] * len(prompts), group_size=2, prompts_truncated=1,
            prompt_texts=[f"prompt {x}" for x in prompts],
        )

    a = part([[5, 6], [5, 6]], [[7], [8, 9, 9]], "stop")
    b = part([[1, 2, 3, 4], [1, 2, 3, 4]], [[3, 3], [4]], "length")
    joined = concat_rollouts([a, b], pad_id=0)
    assert joined.prompt_ids.shape == (4, 4) and joined.response_ids.shape == (4, 3)
    assert joined.prompt_ids[0].tolist() == [0, 0, 5, 6] and joined.prompt_mask[0].tolist() == [False, False, True, True]
    for row, src in enumerate([(a, 0), (a, 1), (b, 0), (b, 1)]):
        part_of, i = src
        assert torch.equal(joined.response_ids[row][joined.response_mask[row]],
                           part_of.response_ids[i][part_of.response_mask[i]])
        assert torch.equal(joined.prompt_ids[row][joined.prompt_mask[row]], part_of.prompt_ids[i][part_of.prompt_mask[i]])
    assert joined.finish_reasons == ["stop", "stop", "length", "length"] and joined.prompts_truncated == 2
    assert joined.prompt_texts == a.prompt_texts + b.prompt_texts and joined.group_size == 2
    assert concat_rollouts([a], pad_id=0) is a  # one part is returned as it is
