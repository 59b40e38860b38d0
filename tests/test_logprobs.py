"""fipo_nb.models.logprobs: the chunked path equals the naive one, in value and gradient, and equals
what generate() sampled with. Real tiny transformers models, built from configs (no hub)."""

from __future__ import annotations

import doctest
from contextlib import contextmanager

import peft
import pytest
import torch
import torch.nn.functional as F
import transformers

import fipo_nb.models.logprobs
from fipo_nb.models.logprobs import head_logprobs, naive_token_logprobs, selective_log_softmax, token_logprobs

# peft 0.21 calls a transformers 5 method that is deprecated: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

VOCAB = 1000
PROMPT = 6  # prompt width P (left-padded)
RESPONSE = 7  # response width R (right-padded)
PAD = 0


def qwen2(tied: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
    )  # fmt: skip
    return transformers.Qwen2ForCausalLM(config)


def qwen3() -> torch.nn.Module:
    torch.manual_seed(1)
    config = transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.Qwen3ForCausalLM(config)


def gpt2() -> torch.nn.Module:
    # absolute position embeddings: the one family where wrong position ids change log-probs
    # (RoPE only sees relative positions, so a left-padding shift cancels out)
    torch.manual_seed(2)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def with_lora(model: torch.nn.Module, target_modules) -> torch.nn.Module:
    torch.manual_seed(3)
    # init_lora_weights=False: B != 0, so the adapter changes the outputs and its A gets gradients
    config = peft.LoraConfig(r=4, target_modules=target_modules, init_lora_weights=False)
    return peft.get_peft_model(model, config)


MODELS = {
    "qwen2-untied": lambda: qwen2(tied=False),
    "qwen2-tied": lambda: qwen2(tied=True),
    "qwen3-tied": qwen3,
    "qwen2-lora-all-linear": lambda: with_lora(qwen2(tied=True), "all-linear"),
    "qwen2-lora-on-lm_head": lambda: with_lora(qwen2(tied=False), ["q_proj", "v_proj", "lm_head"]),
}


def batch(seed: int = 0):
    """4 sequences: prompts left-padded to different lengths, responses right-padded."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (4, PROMPT + RESPONSE), generator=gen)  # [B, L]
    mask = torch.ones_like(ids)  # [B, L]
    for row, (prompt_pad, response_len) in enumerate([(0, 7), (2, 4), (5, 1), (3, 7)]):
        mask[row, :prompt_pad] = 0
        mask[row, PROMPT + response_len :] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def response_mask(mask):
    return mask[:, PROMPT:].bool()  # [B, R]


def test_doctests_in_logprobs_pass():
    assert doctest.testmod(fipo_nb.models.logprobs).failed == 0


# ---------------------------------------------------------------- selective_log_softmax


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e30])
@pytest.mark.parametrize("chunk_size", [1, 3, 256])
def test_selective_log_softmax_equals_log_softmax_then_gather(scale, chunk_size):
    gen = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(2, 5, 50, generator=gen)  # [2, 5, V]
    targets = torch.randint(0, 50, (2, 5), generator=gen)  # [2, 5]
    expected = F.log_softmax(logits.double(), -1).gather(-1, targets[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, targets, chunk_size=chunk_size)
    assert got.dtype == torch.float32 and got.shape == (2, 5)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)


def test_selective_log_softmax_returns_float32_for_bfloat16_logits():
    logits = torch.randn(3, 4, 20).bfloat16()
    targets = torch.randint(0, 20, (3, 4))
    expected = F.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, targets, chunk_size=5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows, vocab", [(2, 7), (5, 1000), (64, 49152)])
def test_logsumexp_in_place_equals_torch_logsumexp_bit_for_bit(rows, vocab):
    gen = torch.Generator().manual_seed(rows)
    logits = 8 * torch.randn(rows, vocab, generator=gen)  # [rows, V]
    logits[:, :3] = float("-inf")  # suppressed tokens (the benchmark's stop tokens, top-k)
    logits[0] = float("-inf")  # a row with nothing left: -inf, as torch gives
    expected = torch.logsumexp(logits, dim=-1)
    work = logits.clone()
    got = fipo_nb.models.logprobs._logsumexp_(work)
    assert torch.equal(got, expected)
    assert not torch.equal(work[1:], logits[1:])  # it did run in the tensor's own memory
    targets = torch.randint(3, vocab, (rows,), generator=gen)  # [rows]
    # bit for bit, the all -inf row's nan included
    torch.testing.assert_close(selective_log_softmax(logits.clone(), targets, overwrite=True),
                               selective_log_softmax(logits, targets), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_no_grad_head_logprobs_equal_the_plain_formula_bit_for_bit(temperature):
    # the no-grad pass divides and takes logsumexp in the logits' own memory: the same float32 values
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 300, bias=False)
    hidden = torch.randn(3, 11, 32)  # [B, R, H]
    targets = torch.randint(0, 300, (3, 11))  # [B, R]
    with torch.no_grad():
        plain = selective_log_softmax(head(hidden).float() / temperature, targets)
        got = head_logprobs(hidden, head, targets, temperature=temperature)  # one chunk: the same product
    assert torch.equal(got, plain)


# ---------------------------------------------------------------- token_logprobs vs naive


@pytest.mark.parametrize("name", list(MODELS))
def test_chunked_logprobs_equal_naive_for_every_chunk_size(name):
    model = MODELS[name]()
    ids, mask = batch()
    with torch.no_grad():
        expected = naive_token_logprobs(model, ids, mask, PROMPT)  # [B, R]
        for chunk_size in [1, 5, 8, 28, 1024]:  # 5 does not divide B * R = 28
            got = token_logprobs(model, ids, mask, PROMPT, chunk_size=chunk_size)
            assert got.shape == (4, RESPONSE) and got.dtype == torch.float32
            assert torch.isfinite(got).all()  # padding included
            keep = response_mask(mask)
            torch.testing.assert_close(got[keep], expected[keep], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["qwen2-tied", "qwen2-lora-all-linear", "qwen2-lora-on-lm_head"])
def test_gradient_through_checkpointed_chunks_equals_naive_gradient(name):
    model = MODELS[name]()
    ids, mask = batch(seed=1)
    keep = response_mask(mask).float()  # [B, R]
    weights = torch.randn(keep.shape, generator=torch.Generator().manual_seed(5))  # [B, R] like advantages
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(fn, **kwargs):
        model.zero_grad(set_to_none=True)
        logprobs = fn(model, ids, mask, PROMPT, **kwargs)  # [B, R]
        (logprobs * weights * keep).sum().backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    expected = grads(naive_token_logprobs)
    got = grads(token_logprobs, chunk_size=5)
    assert any(g.abs().sum() > 0 for g in expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)  # float32 sums in another order
    if name == "qwen2-tied":  # the tied embedding gets gradient through the head and the input alike
        embedding = model.get_input_embeddings().weight
        assert embedding.grad is not None and embedding.grad.abs().sum() > 0


def test_temperature_divides_logits_as_in_naive_path():
    model = MODELS["qwen2-untied"]()
    ids, mask = batch(seed=2)
    keep = response_mask(mask)
    with torch.no_grad():
        cold = token_logprobs(model, ids, mask, PROMPT, temperature=0.6, chunk_size=3)
        expected = naive_token_logprobs(model, ids, mask, PROMPT, temperature=0.6)
        plain = token_logprobs(model, ids, mask, PROMPT, chunk_size=3)
    torch.testing.assert_close(cold[keep], expected[keep], rtol=0, atol=1e-5)
    assert (cold[keep] - plain[keep]).abs().max() > 1e-3  # the temperature is really applied


def test_token_logprobs_leaves_train_and_eval_mode_as_it_found_them():
    model = MODELS["qwen2-lora-all-linear"]()
    ids, mask = batch()
    model.train()
    token_logprobs(model, ids, mask, PROMPT)
    assert all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        token_logprobs(model, ids, mask, PROMPT)
    assert not any(m.training for m in model.modules())


def test_peft_model_scores_with_its_adapter():
    model = MODELS["qwen2-lora-all-linear"]()
    ids, mask = batch()
    keep = response_mask(mask)
    with torch.no_grad():
        adapted = token_logprobs(model, ids, mask, PROMPT)
        with model.disable_adapter():
            base = token_logprobs(model, ids, mask, PROMPT)
    assert (adapted[keep] - base[keep]).abs().max() > 1e-3  # get_decoder() kept the LoRA layers


@contextmanager
def saved_tensor_bytes():
    """Counts the bytes autograd saves for backward inside the block: yields {"bytes": n}."""
    saved = {"bytes": 0}

    def pack(t):
        saved["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


def test_checkpointed_chunks_keep_no_logits_for_backward():
    # bytes autograd saves for backward: naive keeps [N, V] log-probs, chunked only its inputs
    gen = torch.Generator().manual_seed(0)
    rows, hidden_size, vocab = 512, 16, 4000
    hidden = torch.randn(rows, hidden_size, generator=gen, requires_grad=True)  # [N, H]
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    targets = torch.randint(0, vocab, (rows,), generator=gen)  # [N]

    def saved_bytes(fn):
        with saved_tensor_bytes() as saved:
            fn().sum().backward()
        return saved["bytes"]

    logits_bytes = rows * vocab * 4
    naive = saved_bytes(lambda: F.log_softmax(head(hidden), -1).gather(-1, targets[:, None]))
    chunked = saved_bytes(lambda: head_logprobs(hidden, head, targets, chunk_size=64))
    assert naive >= logits_bytes
    assert chunked < logits_bytes / 50


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_a_frozen_head_gives_the_gradient_in_its_forward_pass_and_keeps_no_logits(temperature, bias):
    gen = torch.Generator().manual_seed(1)
    rows, hidden_size, vocab = 300, 16, 4000
    hidden = torch.randn(rows, hidden_size, generator=gen, dtype=torch.float64, requires_grad=True)  # [N, H]
    head = torch.nn.Linear(hidden_size, vocab, bias=bias, dtype=torch.float64).requires_grad_(False)  # as under LoRA
    targets = torch.randint(0, vocab, (rows,), generator=gen)  # [N]
    weights = torch.randn(rows, generator=gen, dtype=torch.float64)  # d loss / d log p, one per token
    naive = F.log_softmax(head(hidden) / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)
    (expected,) = torch.autograd.grad((naive * weights).sum(), hidden)
    with saved_tensor_bytes() as saved:
        fused = head_logprobs(hidden, head, targets, temperature=temperature, chunk_size=128)  # float32 out
    (got,) = torch.autograd.grad((fused * weights.float()).sum(), hidden)
    torch.testing.assert_close(fused, naive.float(), rtol=0, atol=1e-5)
    # float64 through the head: the gradient is autograd's to float64 rounding (after the float32 log-probs)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
    assert saved["bytes"] < rows * vocab * 4 / 50  # no chunk's logits are kept for backward


# ---------------------------------------------------------------- generate() agreement


@pytest.mark.parametrize(
    "name, temperature",
    [("qwen2-tied", 1.0), ("qwen3-tied", 0.7), ("qwen2-lora-all-linear", 0.7), ("gpt2", 1.0), ("gpt2", 0.7)],
)
def test_logprobs_equal_those_generate_sampled_with_left_padded_prompts(name, temperature):
    model = gpt2() if name == "gpt2" else MODELS[name]()
    gen = torch.Generator().manual_seed(4)
    prompts = torch.randint(3, VOCAB, (3, PROMPT), generator=gen)  # [B, P]
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[0, :4] = 0  # prompts of 2, 5 and 6 tokens
    prompt_mask[1, :1] = 0
    prompts = prompts.masked_fill(prompt_mask == 0, PAD)
    new_tokens = 5
    torch.manual_seed(6)
    out = model.generate(
        input_ids=prompts, attention_mask=prompt_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=temperature != 1.0, temperature=temperature, top_k=0, top_p=1.0,
        output_logits=True, return_dict_in_generate=True, pad_token_id=PAD,
    )  # fmt: skip
    sequences = out.sequences  # [B, P + N]
    raw = torch.stack(out.logits, dim=1).float()  # [B, N, V] unprocessed logits
    expected = F.log_softmax(raw / temperature, -1).gather(-1, sequences[:, PROMPT:, None]).squeeze(-1)
    full_mask = torch.cat([prompt_mask, torch.ones(3, new_tokens, dtype=prompt_mask.dtype)], dim=1)
    with torch.no_grad():
        got = token_logprobs(model, sequences, full_mask, PROMPT, temperature=temperature, chunk_size=4)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
        if name == "gpt2":  # with absolute positions, ids 0..L-1 would not match: the test has teeth
            logits = model(input_ids=sequences, attention_mask=full_mask).logits[:, PROMPT - 1 : -1]
            shifted = F.log_softmax(logits.float() / temperature, -1).gather(-1, sequences[:, PROMPT:, None])
            assert (shifted.squeeze(-1) - expected).abs().max() > 1e-2
