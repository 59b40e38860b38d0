"""The trace hook inside verl's actor loss writes fipo_nb traces with real token ids, readable as any run's.

The run directory is FIPO_NB_VERL_RUN_DIR when set (tests/test_verl_integration.py then opens it in the
widgets and the report, in the main environment), else a temporary one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from verl_tiny_run import train_steps
from fipo_nb.trace import load_traces, trace_steps


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = Path(os.environ.get("FIPO_NB_VERL_RUN_DIR") or tmp_path_factory.mktemp("verl-run"))
    metrics = train_steps(out, steps=2)
    return out, metrics


@pytest.mark.slow
def test_each_step_writes_traces_with_real_token_ids(run):
    from fipo_nb.models import qwen_tokenizer

    out, _ = run
    assert trace_steps(out) == [1, 2]
    frame = load_traces(out)
    assert set(frame["step"]) == {1, 2} and (frame.groupby("step").size() == 4).all()
    tokenizer = qwen_tokenizer()
    for _, row in frame.iterrows():
        ids = [int(i) for i in row["token_ids"]]
        assert "".join(row["tokens"]) == row["response"] == tokenizer.decode(ids)  # pieces join to the response
        assert len(row["log_ratio"]) == len(row["future_kl"]) == len(row["weight"]) == len(ids) > 0
        assert row["prompt"].startswith("user\nSolve the following math problem") and row["loss"] == "fipo"
    first = frame[frame["mini_batch"] == 0]
    later = frame[frame["mini_batch"] > 0]
    assert len(first) and len(later)
    # the 1st mini-batch is scored by the policy that sampled it: log-ratio 0 and every weight exactly 1
    assert all((r == 0).all() and (w == 1).all() for r, w in zip(first["log_ratio"], first["weight"]))
    assert any((w != 1).any() for w in later["weight"])  # FIPO acts from the 2nd mini-batch on
    assert set(frame["reward"]) <= {1.0, -1.0} and frame["advantage"].abs().sum() > 0  # verl's DAPO scorer, GRPO


@pytest.mark.slow
def test_each_step_appends_a_metrics_row_and_the_loss_reports_verl_names(run):
    out, metrics = run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["verl/rank0_sequences"] == 16 and row["policy/sequences"] == 16
        assert 0 < row["length/min"] <= row["length/median"] <= row["length/max"] <= 16
        assert sum(row[f"phase/{p}_frac"] for p in (1, 2, 3, 4)) == pytest.approx(1.0)
        assert row["fipo/weight_max"] == pytest.approx(1.2) and row["fipo/weight_min"] == 1.0  # [1, 1.2], reached
    assert rows[0]["accuracy/mean"] == pytest.approx(0.25)  # one written answer in four is right
    assert json.loads((out / "config.json").read_text())["fipo"]["loss"] == "fipo"
    assert metrics and all("actor/fipo/weight_mean" in m and "actor/pg_loss" in m for m in metrics)


def test_other_ranks_write_nothing(tmp_path, monkeypatch):
    from fipo_nb.integrations.verl import loss as verl_loss
    from fipo_nb.integrations.verl import traces as verl_traces

    monkeypatch.setattr(verl_traces, "_rank", lambda: 1)
    hook = verl_traces.TraceHook()

    class Settings(verl_loss.FIPOPolicyLossConfig):
        pass

    config = type("Actor", (), {"policy_loss": Settings(loss_mode="fipo_nb", trace_dir=str(tmp_path))})()
    hook.observe(config, {"log_probs": torch.zeros(1)}, data=None)
    assert not any(tmp_path.iterdir())


def test_step_metrics_merge_micro_batches_as_the_trainer_does():
    # an empty micro-batch (every token masked) reports min = max = 0: it must not pull the step's extremes
    from fipo_nb import phases
    from fipo_nb.config import FIPOConfig
    from fipo_nb.core import policy_loss
    from fipo_nb.integrations.verl import traces as verl_traces

    generator = torch.Generator().manual_seed(0)
    old = torch.randn(4, 6, generator=generator) - 2
    new = old + 0.3 * torch.randn(4, 6, generator=generator)
    new[1, 2:4] = old[1, 2:4] + 4.0  # two negative-advantage tokens past the dual clip: the sequence is dropped
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, 6)
    full = policy_loss(new, old, advantages, torch.ones(4, 6, dtype=torch.bool), FIPOConfig())
    empty = policy_loss(new[:2], old[:2], advantages[:2], torch.zeros(2, 6, dtype=torch.bool), FIPOConfig())
    hook = verl_traces.TraceHook()
    hook.loss_metrics = [full.metrics, empty.metrics]
    row = hook.step_metrics(phases)
    assert row["fipo/weight_min"] == full.metrics["fipo/weight_min"] > 0
    assert row["fipo/weight_max"] == full.metrics["fipo/weight_max"]
    assert row["policy/sequences"] == 4 and row["policy/tokens"] == 24
    assert full.metrics["policy/dropped_seq_frac"] == 0.25
    assert row["policy/dropped_seq_frac"] == 0.25  # weighted by sequences: the empty part has none


def test_the_hook_reports_the_trainers_length_quantiles_for_the_same_lengths():
    # lengths where nearest-rank and interpolated quantiles part: for [3, 8, 20, 41] the trainer reports
    # q25 6.75 and median 14.0 where a nearest-rank quantile gives 8 and 20
    from fipo_nb import phases
    from fipo_nb.integrations.verl import traces as verl_traces
    from fipo_nb.train.metrics import length_metrics

    for lengths in ([3, 8, 20, 41], [3, 8, 20, 41, 57], [12], [5, 5, 9, 30, 2, 17, 11]):
        hook = verl_traces.TraceHook()
        hook.lengths = list(lengths)
        row = hook.step_metrics(phases)
        expected = length_metrics(torch.tensor(lengths))
        assert {k: v for k, v in row.items() if k.startswith("length/")} == expected
    assert length_metrics(torch.tensor([3, 8, 20, 41]))["length/q25"] == 6.75
