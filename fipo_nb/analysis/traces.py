"""Per-token traces: what each token of a few sampled responses went through in its update.

A record holds one response of one step: its prompt, reward, advantage, the mini-batch that
used it, its token ids, the decoded piece of every token (joined, they give the response text
exactly, the stop token included), and per-token float arrays: log_ratio (log pi_theta -
log pi_old at the moment of its update), ratio, future_kl, weight, and optionally
post_update_future_kl (Future-KL of the whole step's update, after the last mini-batch).
Rows of the first mini-batch always show weight 1: the policy had not moved yet. `in_loss` is
False for responses left out of the loss (overlong filtering, FIPO's sequence drop rule): their
weights and Future-KL were never computed and read 1 and 0.

`trace_record` puts a record together, for the trainer and for the verl trace hook alike.

Storage: one Parquet file per step, RUN_DIR/traces/step-000001.parquet, written once under a
temporary name and renamed, so appending a step never rewrites older ones; a failed write (a full
disk) removes the temporary file and raises files.WriteError naming the step's file.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..models.tokens import token_pieces
from .files import replacing

TOKEN_ARRAYS = ("log_ratio", "ratio", "future_kl", "weight", "post_update_future_kl", "token_advantage", "value")

SCHEMA = pa.schema([
    ("step", pa.int32()), ("sample", pa.int32()), ("problem_id", pa.string()), ("mini_batch", pa.int32()),
    ("loss", pa.string()), ("prompt", pa.string()), ("response", pa.string()), ("answer", pa.string()),
    ("reward", pa.float64()), ("advantage", pa.float64()), ("correct", pa.bool_()), ("finish_reason", pa.string()),
    ("in_loss", pa.bool_()),
    ("token_ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string())),
    *[(name, pa.list_(pa.float32())) for name in TOKEN_ARRAYS],
])


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


def trace_record(*, step: int, sample: int, mini_batch: int, loss: str, prompt: str, tokens: list[str],
                 token_ids: list[int], reward, advantage: float, correct, finish_reason: str, in_loss: bool,
                 log_ratio, future_kl, weight, post_update_future_kl=None, problem_id: str = "",
                 answer: str = "", token_advantage=None, value=None) -> dict:
    """One trace record (SCHEMA's fields): the one place a record is put together, for the trainer
    (`step_records`) and for the verl trace hook.

    tokens: the decoded piece of every token (joined, the response text); log_ratio, future_kl,
    weight: [L] tensors; post_update_future_kl: [L] tensor or None. ratio is exp(log_ratio).
    token_advantage: [L] the advantage each token's loss used (A * f_t: FIPO's credit; A for DAPO and
    GRPO; the GAE advantage for PPO), or None; value: [L] the critic's values (PPO), or None.
    """
    import torch

    return {
        "step": step, "sample": sample, "problem_id": problem_id, "mini_batch": mini_batch, "loss": loss,
        "prompt": prompt, "response": "".join(tokens), "answer": answer, "reward": reward, "advantage": advantage,
        "correct": correct, "finish_reason": finish_reason, "in_loss": in_loss, "token_ids": token_ids,
        "tokens": tokens, "log_ratio": log_ratio.tolist(), "ratio": torch.exp(log_ratio).tolist(),
        "future_kl": future_kl.tolist(), "weight": weight.tolist(),
        "post_update_future_kl": None if post_update_future_kl is None else post_update_future_kl.tolist(),
        "token_advantage": None if token_advantage is None else token_advantage.tolist(),
        "value": None if value is None else value.tolist(),
    }


def step_records(result, rows: list[int], tokenizer, *, loss: str, post_update_future_kl=None) -> list[dict]:
    """Trace records of `rows` of a trainer StepResult; post_update_future_kl: [len(rows), R] or None."""
    records = []
    for i, row in enumerate(rows):
        length = int(result.rollout.response_lengths[row])
        ids = result.rollout.response_ids[row, :length].tolist()
        records.append(trace_record(
            step=result.step, sample=row, problem_id=result.problems[row].id, mini_batch=int(result.mini_batch[row]),
            loss=loss, prompt=result.prompts[row], tokens=token_pieces(tokenizer, ids), token_ids=ids,
            answer=result.problems[row].answer, reward=float(result.rewards[row]),
            advantage=float(result.advantages[row]), correct=bool(result.correct[row]),
            finish_reason=result.rollout.finish_reasons[row], in_loss=bool(result.in_loss[row]),
            log_ratio=result.log_ratio[row, :length], future_kl=result.future_kl[row, :length],  # [L] each
            weight=result.weights[row, :length],
            post_update_future_kl=None if post_update_future_kl is None else post_update_future_kl[i, :length],
            token_advantage=None if result.token_advantages is None else result.token_advantages[row, :length],
            value=None if result.values is None else result.values[row, :length],
        ))
    return records


def step_path(run_dir, step: int) -> Path:
    return Path(run_dir) / "traces" / f"step-{step:06d}.parquet"


def write_step(run_dir, step: int, records: list[dict]) -> Path:
    """Write one step's records (dicts with SCHEMA's fields) to their own Parquet file."""
    path = step_path(run_dir, step)
    table = pa.Table.from_pylist([{name: r.get(name) for name in SCHEMA.names} for r in records], schema=SCHEMA)
    with replacing(path) as temporary:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, temporary)
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
