"""Per-token traces: what each token of a few sampled responses went through in its update.

A record holds one response of one step: its prompt, reward, advantage, the mini-batch that
used it, its token ids, the decoded piece of every token (joined, they give the response text
exactly, the stop token included), and per-token float arrays: log_ratio (log pi_theta -
log pi_old at the moment of its update), ratio, future_kl, weight, and optionally
post_update_future_kl (Future-KL of the whole step's update, after the last mini-batch).
Rows of the first mini-batch always show weight 1: the policy had not moved yet. `in_loss` is
False for responses left out of the loss (overlong filtering, FIPO's sequence drop rule): their
weights and Future-KL were never computed and read 1 and 0.

Storage: one Parquet file per step, RUN_DIR/traces/step-000001.parquet, written once under a
temporary name and renamed, so appending a step never rewrites older ones.
"""

from __future__ import annotations

import os
import random
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOKEN_ARRAYS = ("log_ratio", "ratio", "future_kl", "weight", "post_update_future_kl")

SCHEMA = pa.schema([
    ("step", pa.int32()), ("sample", pa.int32()), ("problem_id", pa.string()), ("mini_batch", pa.int32()),
    ("loss", pa.string()), ("prompt", pa.string()), ("response", pa.string()), ("answer", pa.string()),
    ("reward", pa.float64()), ("advantage", pa.float64()), ("correct", pa.bool_()), ("finish_reason", pa.string()),
    ("in_loss", pa.bool_()),
    ("token_ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string())),
    *[(name, pa.list_(pa.float32())) for name in TOKEN_ARRAYS],
])


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds, so that "".join(pieces) == tokenizer.decode(ids) exactly.

    A token that ends inside a multi-byte character adds "" and the token completing it adds the
    character. Special tokens keep their text ("<|im_end|>"). One decode of the whole response:
    byte-level BPE tokenizers (Qwen, SmolLM2, GPT-2) map each token to its bytes and cut the text
    at the character boundaries; others decode each token alone; where the pieces found so do not
    join to the decoded text, a sliding window decodes them as text-generation servers stream
    tokens (one small decode per token).
    """
    ids = [int(i) for i in ids]
    if not ids:
        return []
    decoded = tokenizer.decode(ids)
    byte_level, pieces = _byte_level_pieces(tokenizer, ids)
    if not byte_level:  # (bytes that are no UTF-8 go to the window, which decides as a stream would)
        pieces = tokenizer.batch_decode([[i] for i in ids])
    if pieces is not None and "".join(pieces) == decoded:
        return pieces
    return _streamed_pieces(tokenizer, ids)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as byte-level BPE vocabularies spell tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in _byte_to_unicode().items()}
_TOKEN_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {id: bytes}


def _byte_level_pieces(tokenizer, ids: list[int]) -> tuple[bool, list[str] | None]:
    """(is the tokenizer byte-level, pieces from each token's bytes or None): bytes cached per tokenizer."""
    try:
        table = _TOKEN_BYTES.get(tokenizer)
    except TypeError:  # not weak-referenceable
        return False, None
    if table is None:
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        table = {} if "ByteLevel" in repr(decoder) else {"byte_level": False}
        table["added"] = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        _TOKEN_BYTES[tokenizer] = table
    if table.get("byte_level") is False:
        return False, None
    chunks = []
    for i in ids:
        data = table.get(i)
        if data is None:
            if i in table["added"]:
                data = table["added"][i].encode("utf-8")
            else:
                token = tokenizer.convert_ids_to_tokens(i)
                try:
                    data = bytes(_UNICODE_TO_BYTE[c] for c in token)
                except (KeyError, TypeError):
                    return True, None
            table[i] = data
        chunks.append(data)
    joined = b"".join(chunks)
    try:
        text = joined.decode("utf-8")
    except UnicodeDecodeError:  # invalid bytes: the decoder's own replacement decides
        return True, None
    raw = np.frombuffer(joined, dtype=np.uint8)
    char_ends = np.append(np.flatnonzero((raw & 0xC0) != 0x80)[1:], len(joined))  # [chars] byte end of each
    token_ends = np.cumsum([len(c) for c in chunks])  # [tokens] byte end of each
    done = np.searchsorted(char_ends, token_ends, side="right")  # [tokens] characters complete after each
    # as a streamed decode: a token that ends inside a character adds nothing, not even the characters
    # before it, and the token completing that character adds them all
    done = np.maximum.accumulate(np.where(np.isin(token_ends, char_ends), done, 0)).tolist()
    return True, [text[a:b] for a, b in zip([0, *done[:-1]], done)]


def _streamed_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Decode a sliding window: a token ending inside a character adds "" until one completes it."""
    pieces, prefix, read = [], 0, 0
    before = ""  # decode(ids[prefix:read]): changes only when the window moves
    for end in range(1, len(ids) + 1):
        now = tokenizer.decode(ids[prefix:end])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            pieces.append(now[len(before):])
            prefix, read = read, end
            before = tokenizer.decode(ids[prefix:read])
        else:
            pieces.append("")
    if read < len(ids) and pieces:  # ends inside a character: the rest goes to the last token
        pieces[-1] += tokenizer.decode(ids[prefix:])[len(before):]
    return pieces


def select_rows(mini_batch, advantages, count: int, seed: int) -> list[int]:
    """`count` rows spread over mini-batches and advantage signs, round-robin, seeded.

    Buckets (mini-batch 0, A > 0), (0, A < 0), (1, A > 0), ... are visited in turn, one row
    from each; rows with A == 0 (no learning signal) come last.
    """
    rng = random.Random(seed)
    buckets: dict[tuple[int, int], list[int]] = {}
    for row, (mb, adv) in enumerate(zip(mini_batch.tolist(), advantages.tolist())):
        buckets.setdefault((mb, 0 if adv > 0 else 1 if adv < 0 else 2), []).append(row)
    chosen = []
    for zero in (False, True):  # rows with a learning signal first, A == 0 only to fill up
        queues = [rng.sample(rows, len(rows)) for (mb, sign), rows in sorted(buckets.items()) if (sign == 2) == zero]
        while len(chosen) < count and any(queues):
            for queue in queues:
                if queue and len(chosen) < count:
                    chosen.append(queue.pop())
    return sorted(chosen)


def step_records(result, rows: list[int], tokenizer, *, loss: str, post_update_future_kl=None) -> list[dict]:
    """Trace records (SCHEMA's fields) of `rows` of a trainer StepResult; post_update_future_kl:
    [len(rows), R] or None."""
    import torch

    records = []
    for i, row in enumerate(rows):
        length = int(result.rollout.response_lengths[row])
        ids = result.rollout.response_ids[row, :length].tolist()
        pieces = token_pieces(tokenizer, ids)
        log_ratio = result.log_ratio[row, :length]  # [L]
        post = post_update_future_kl[i, :length].tolist() if post_update_future_kl is not None else None
        records.append({
            "step": result.step, "sample": row, "problem_id": result.problems[row].id,
            "mini_batch": int(result.mini_batch[row]), "loss": loss, "prompt": result.prompts[row],
            "response": "".join(pieces), "answer": result.problems[row].answer,
            "reward": float(result.rewards[row]), "advantage": float(result.advantages[row]),
            "correct": bool(result.correct[row]), "finish_reason": result.rollout.finish_reasons[row],
            "in_loss": bool(result.in_loss[row]), "token_ids": ids, "tokens": pieces, "log_ratio": log_ratio.tolist(),
            "ratio": torch.exp(log_ratio).tolist(), "future_kl": result.future_kl[row, :length].tolist(),
            "weight": result.weights[row, :length].tolist(),
            "post_update_future_kl": post,
        })
    return records


def step_path(run_dir, step: int) -> Path:
    return Path(run_dir) / "traces" / f"step-{step:06d}.parquet"


def write_step(run_dir, step: int, records: list[dict]) -> Path:
    """Write one step's records (dicts with SCHEMA's fields) to their own Parquet file."""
    path = step_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{name: r.get(name) for name in SCHEMA.names} for r in records], schema=SCHEMA)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, temporary)
    temporary.replace(path)
    return path


def remove_after(run_dir, step: int) -> None:
    """Delete traces of steps after `step` (a resumed run writes them again)."""
    for path in (Path(run_dir) / "traces").glob("step-*.parquet"):
        if int(path.stem.removeprefix("step-")) > step:
            path.unlink()


def count_records(run_dir, step: int) -> int:
    """Records of one step, from the Parquet footer alone."""
    return pq.read_metadata(step_path(run_dir, step)).num_rows


def trace_steps(run_dir) -> list[int]:
    return sorted(int(p.stem.removeprefix("step-")) for p in (Path(run_dir) / "traces").glob("step-*.parquet"))


def load_traces(run_dir, steps=None):
    """A pandas DataFrame, one row per record; token arrays are numpy arrays (float32 / int32).

    steps: None for all, an int, or an iterable of ints. A missing step raises FileNotFoundError
    naming it.
    """
    import pandas as pd

    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"load_traces: no such run folder: {run_dir}")
    wanted = trace_steps(run_dir) if steps is None else [steps] if isinstance(steps, int) else list(steps)
    frames = []
    for step in wanted:
        path = step_path(run_dir, step)
        if not path.exists():
            raise FileNotFoundError(f"no trace of step {step} in {Path(run_dir) / 'traces'}")
        frames.append(pq.read_table(path).to_pandas())
    if not frames:
        return pd.DataFrame(columns=SCHEMA.names)
    return pd.concat(frames, ignore_index=True)
