"""fipo_nb.models: the offline Qwen tokenizer, SmolLM2, tiny models, and load_policy's three modes."""

from __future__ import annotations


import pytest
import torch

from fipo_nb.models import (
    QWEN3_EXTRA_TOKENS,
    QWEN_SPECIAL_TOKENS,
    char_tokenizer,
    load_policy,
    qwen_tokenizer,
    smollm2_checkpoint,
    tiny_model,
)


@pytest.mark.parametrize("version", ["qwen2.5", "qwen3"])
@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello, world!", [9707, 11, 1879, 0]),
        ("The capital of France is", [785, 6722, 315, 9625, 374]),
        ("a   b    ", [64, 256, 293, 257]),
        ("raw completion <|endoftext|> café\n", [1041, 9755, 220, 151643, 51950, 198]),
        ("cafe\u0301", [924, 58858]),  # NFC composes the decomposed é first
    ],
)
def test_qwen_tokenizer_gives_published_token_ids(version, text, ids):
    assert qwen_tokenizer(version).encode(text, add_special_tokens=False) == ids


def test_qwen_special_token_ids():
    qwen25, qwen3 = qwen_tokenizer("qwen2.5"), qwen_tokenizer("qwen3")
    for offset, token in enumerate(QWEN_SPECIAL_TOKENS):
        assert qwen25.convert_tokens_to_ids(token) == 151643 + offset
    assert [qwen3.convert_tokens_to_ids(t) for t in QWEN3_EXTRA_TOKENS] == [151665, 151666, 151667, 151668]
    assert qwen3.convert_tokens_to_ids("</think>") == 151668
    assert (qwen25.eos_token_id, qwen25.pad_token_id) == (151645, 151643)


def test_qwen_chat_template_is_chatml():
    tok = qwen_tokenizer("qwen2.5")
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    plain = qwen_tokenizer("qwen3").apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n"


def test_qwen_tokenizer_is_cached_after_the_first_build(monkeypatch):
    import importlib

    converters = importlib.import_module("transformers.convert_slow_tokenizer")  # the module, not the function
    qwen_tokenizer("qwen2.5")
    qwen_tokenizer.cache_clear()  # a new process: only the converted files on disk remain

    def never(*args, **kwargs):
        raise AssertionError("converted the 151k tiktoken ranks again instead of reading tokenizer.json")

    monkeypatch.setattr(converters, "TikTokenConverter", never)
    assert qwen_tokenizer("qwen2.5").encode("Hello, world!", add_special_tokens=False) == [9707, 11, 1879, 0]


def test_char_tokenizer_round_trips_text_and_specials():
    tok = char_tokenizer()
    ids = tok.encode("What is 3 + 4?\n<|im_end|>", add_special_tokens=False)
    assert len(ids) == 16 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids) == "What is 3 + 4?\n<|im_end|>"


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-qwen3", "tiny-qwen2-char"])
def test_tiny_models_are_real_transformers_models_seeded(name):
    model, tok = tiny_model(name, seed=3)
    again, _ = tiny_model(name, seed=3)
    ids = torch.tensor([tok.encode("1 + 2 =", add_special_tokens=False)])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.equal(logits, again(ids).logits)
    assert model.config.model_type == ("qwen3" if name == "tiny-qwen3" else "qwen2")


def test_smollm2_loads_offline_from_the_gguf_package():
    path = smollm2_checkpoint()
    policy = load_policy(str(path), "full")
    assert type(policy.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
    tok = policy.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = policy.model.generate(**ids, max_new_tokens=24, do_sample=False)
    assert "5" in tok.decode(out[0, ids["input_ids"].shape[1]:])  # a real pretrained model: it can add


def test_load_policy_modes_train_the_right_parameters():
    full = load_policy("tiny-qwen2", "full")
    assert all(p.requires_grad for p in full.model.parameters())
    lora = load_policy("tiny-qwen2", "lora", lora_r=4)
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    qlora = load_policy("tiny-qwen2", "qlora", lora_r=4)
    kinds = {type(m).__name__ for m in qlora.model.modules()}
    assert "Linear4bit" in kinds
    assert all("lora_" in n for n, p in qlora.model.named_parameters() if p.requires_grad)
    for policy in (full, lora, qlora):
        assert policy.model.training  # never eval(): see models.py


def test_load_policy_reads_a_local_checkpoint_folder(tmp_path):
    model, tok = tiny_model("tiny-qwen3", seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy = load_policy(str(tmp_path), "lora", lora_r=2)
    ids = torch.tensor([[1, 2, 3]])
    base = policy.model.get_base_model()
    torch.testing.assert_close(base(ids).logits, model(ids).logits)  # fresh LoRA B = 0: same function


def test_load_policy_forces_dropout_to_zero():
    model, tok = tiny_model("tiny-qwen2")
    model.config.attention_dropout = 0.1
    with pytest.warns(UserWarning, match="attention_dropout") as record:
        policy = load_policy(model, "full", tokenizer=tok)
    assert policy.model.config.attention_dropout == 0.0
    assert record[0].filename == __file__  # the warning names load_policy's caller, not fipo_nb's code


def test_bad_mode_and_missing_tokenizer_are_reported():
    with pytest.raises(ValueError, match="mode must be one of"):
        load_policy("tiny-qwen2", "adapter")
    model, _ = tiny_model("tiny-qwen2")
    with pytest.raises(ValueError, match="tokenizer"):
        load_policy(model, "full")


def test_qlora_of_a_model_object_is_refused_as_it_quantises_at_load_time():
    model, tok = tiny_model("tiny-qwen2-char")
    with pytest.raises(ValueError, match=r"mode='qlora' needs a name or path \(quantisation happens at load time\)"):
        load_policy(model, "qlora", tokenizer=tok)


def test_a_model_that_is_neither_here_nor_on_the_hub_is_named():
    from fipo_nb.models import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"model '/nonexistent/fipo-nb-model' cannot be loaded: it is not a model"):
        load_policy("/nonexistent/fipo-nb-model", "lora", device="cpu")


def test_without_a_network_a_hub_model_fails_at_once_and_a_folder_needs_no_hub(tmp_path, monkeypatch):
    import subprocess
    import sys

    from fipo_nb.models import ModelLoadError, loading

    # HF_HUB_OFFLINE (as an unreachable hub) means the hub is never asked: no minute of retries
    code = ("import time; from fipo_nb.models import load_policy, loading\n"
            "start = time.monotonic()\n"
            "try:\n    load_policy('fipo-nb-test/no-such-model', 'lora', device='cpu')\n"
            "except Exception as exc:\n    print(type(exc).__name__, loading.hub_reachable(), '|', exc)\n"
            "print('attempts', len(calls))\n")
    probe = ("import socket\ncalls = []\nreal = socket.create_connection\n"
             "socket.create_connection = lambda *a, **k: calls.append(a) or real(*a, **k)\n")
    done = subprocess.run([sys.executable, "-c", probe + code], capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert "ModelLoadError False | model 'fipo-nb-test/no-such-model' cannot be loaded" in done.stdout, done.stderr
    assert "the Hugging Face hub cannot be reached from here and its cache does not hold it" in done.stdout
    assert "attempts 0" in done.stdout and "Retrying" not in done.stderr  # not one connection tried
    # with the hub unreachable, a folder still loads and a hub id fails at once
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    model, tokenizer = tiny_model("tiny-qwen2")
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert load_policy(str(folder), "lora", device="cpu").model is not None  # a folder needs no hub either
    with pytest.raises(ModelLoadError, match="cannot be reached from here"):
        load_policy("fipo-nb-test/no-such-model", "lora", device="cpu")
