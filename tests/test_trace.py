"""fipo_nb.trace: exact token pieces, selection across mini-batches and signs, Parquet round trip."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fipo_nb.models import char_tokenizer, qwen_tokenizer, smollm2_checkpoint
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.models import token_pieces
from fipo_nb.trace import load_traces, select_rows, write_step
from fipo_nb.trainer import FIPOTrainer

TEXTS = ["Answer: 42\n", "café 😀 🦜 𓀀 龘 中文 — done.<|im_end|>", "  two  spaces\n\n\tand tabs", "x" * 50 + "é" * 7]


@pytest.mark.parametrize("make", [lambda: qwen_tokenizer("qwen2.5"), char_tokenizer])
def test_token_pieces_join_to_the_exact_text(make):
    tok = make()
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        pieces = token_pieces(tok, ids)
        assert len(pieces) == len(ids)
        assert "".join(pieces) == tok.decode(ids)


@pytest.mark.parametrize("name", ["qwen", "smollm2", "char"])
def test_one_decode_pieces_equal_the_streamed_ones(name):
    """The byte-level (Qwen, SmolLM2) and per-token (char) paths give the sliding window's pieces,
    on text and on random ids (bytes that split characters, or are no UTF-8 at all)."""
    from transformers import AutoTokenizer

    from fipo_nb.models.tokens import _byte_level_pieces, _streamed_pieces

    tok = {"qwen": lambda: qwen_tokenizer("qwen2.5"), "char": char_tokenizer,
           "smollm2": lambda: AutoTokenizer.from_pretrained(smollm2_checkpoint())}[name]()
    rng = np.random.default_rng(0)
    cases = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    cases += [rng.integers(0, len(tok), 40).tolist() for _ in range(20)]
    for ids in cases:
        assert token_pieces(tok, ids) == _streamed_pieces(tok, ids)
    for text in TEXTS:  # text takes the one-decode path: byte-level for Qwen and SmolLM2
        byte_level, pieces = _byte_level_pieces(tok, tok.encode(text, add_special_tokens=False))
        assert byte_level == (name != "char") and (pieces is not None) == byte_level


def test_token_pieces_with_a_sentencepiece_style_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert "".join(token_pieces(tok, ids)) == tok.decode(ids)


def test_multibyte_characters_split_over_tokens_go_to_the_token_completing_them():
    tok = qwen_tokenizer("qwen2.5")
    ids = tok.encode("🦜 𓀀", add_special_tokens=False)  # 🦜: 2 byte-level tokens, 𓀀: 3
    assert [tok.decode([i]) for i in ids[:2]] == ["\ufffd", "\ufffd"]  # alone, each is half a character
    assert token_pieces(tok, ids) == ["", "🦜", " ", "", "", "𓀀"]  # " " is a token of its own


def test_selection_spreads_over_mini_batches_and_signs():
    mini_batch = torch.tensor([0] * 8 + [1] * 8)
    advantages = torch.tensor([1.0, -1.0] * 4 + [0.5, -0.5] * 4)
    rows = select_rows(mini_batch, advantages, 4, seed=0)
    picked = {(int(mini_batch[r]), bool(advantages[r] > 0)) for r in rows}
    assert picked == {(0, True), (0, False), (1, True), (1, False)}
    assert select_rows(mini_batch, advantages, 4, seed=0) == rows  # seeded
    zero_last = select_rows(torch.zeros(4, dtype=torch.long), torch.tensor([0.0, 0.0, 1.0, 0.0]), 1, seed=1)
    assert zero_last == [2]
    # rows with a signal first, from every mini-batch, before any A == 0 row
    rows = select_rows(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0]), 3, seed=0)
    assert rows == [0, 1, 2]


def test_a_step_writes_traces_that_load_back(tmp_path):
    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", "trace_samples=4",
                                                       "trace_post_update=true"])
    trainer = FIPOTrainer(config, reward_fn=lambda p, r, s: float(sum(map(ord, r)) % 2))
    result = trainer.step()
    trainer.step()
    frame = load_traces(tmp_path)
    assert len(frame) == 8 and sorted(set(frame["step"])) == [1, 2]
    one = load_traces(tmp_path, steps=1)
    assert set(one["mini_batch"]) == {0, 1} and (one["advantage"] > 0).any() and (one["advantage"] < 0).any()
    tok = trainer.policy.tokenizer
    for _, rec in one.iterrows():
        n = len(rec["token_ids"])
        assert all(len(rec[k]) == n for k in ("tokens", "log_ratio", "ratio", "future_kl", "weight",
                                               "post_update_future_kl"))
        assert rec["response"] == "".join(rec["tokens"]) == tok.decode(list(rec["token_ids"]))
        row = rec["sample"]
        np.testing.assert_allclose(rec["weight"], result.weights[row, :n].numpy(), rtol=1e-6)
        np.testing.assert_allclose(rec["ratio"], np.exp(rec["log_ratio"]), rtol=1e-5)
        if rec["mini_batch"] == 0:  # the policy had not moved yet: weight 1, log-ratio 0 ...
            assert (rec["weight"] == 1).all() and (rec["log_ratio"] == 0).all()
            # ... but the whole step's update did move it: post-update Future-KL shows the influence
            assert np.abs(rec["post_update_future_kl"]).max() > 0
    with pytest.raises(FileNotFoundError, match="step 9"):
        load_traces(tmp_path, steps=9)


def test_one_16k_token_record_reads_back_whole(tmp_path):
    n = 16384
    rng = np.random.default_rng(0)
    record = {
        "step": 1, "sample": 0, "problem_id": "p:0", "mini_batch": 1, "loss": "fipo", "prompt": "q", "answer": "1",
        "reward": 1.0, "advantage": 0.5, "correct": True, "finish_reason": "length",
        "token_ids": rng.integers(0, 151000, n).tolist(), "tokens": ["tok"] * n,
        **{k: rng.normal(size=n).astype(np.float32).tolist() for k in
           ("log_ratio", "ratio", "future_kl", "weight", "post_update_future_kl")},
    }
    record["response"] = "".join(record["tokens"])
    write_step(tmp_path, 1, [record])
    start = time.perf_counter()
    frame = load_traces(tmp_path, steps=1)
    elapsed = time.perf_counter() - start
    print(f"read one {n}-token trace record in {elapsed * 1e3:.1f} ms")  # a few ms here; not asserted (no timing bounds)
    assert len(frame.iloc[0]["weight"]) == n
    assert frame.iloc[0]["weight"] == pytest.approx(record["weight"], rel=1e-6)


def test_a_trace_record_holds_exactly_the_schema_fields_with_ratio_exp_log_ratio(tmp_path):
    from fipo_nb.analysis.traces import SCHEMA, trace_record

    log_ratio = torch.tensor([0.0, 0.1, -0.2])
    record = trace_record(step=3, sample=5, mini_batch=1, loss="fipo", prompt="q", tokens=["a", " b", "\n"],
                          token_ids=[7, 8, 9], reward=1.0, advantage=-0.5, correct=True, finish_reason="stop",
                          in_loss=False, log_ratio=log_ratio, future_kl=torch.tensor([0.0, 0.2, 0.1]),
                          weight=torch.tensor([1.0, 1.2, 0.8]))
    assert list(record) == SCHEMA.names  # the one builder writes every column, in the table's order
    assert record["response"] == "a b\n" and record["problem_id"] == "" and record["post_update_future_kl"] is None
    assert record["ratio"] == torch.exp(log_ratio).tolist() and record["weight"] == pytest.approx([1.0, 1.2, 0.8])
    write_step(tmp_path, 3, [record])
    back = load_traces(tmp_path).iloc[0]
    assert back["response"] == "a b\n" and list(back["tokens"]) == ["a", " b", "\n"] and not back["in_loss"]
