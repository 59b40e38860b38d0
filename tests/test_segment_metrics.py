"""fipo_nb.analysis.segments: weight and Future-KL per reasoning segment, by hand and from a real step."""

from __future__ import annotations

import pytest
import torch

from fipo_nb.analysis.segments import GROUPS, group_codes, segment_metrics, step_segment_metrics, token_groups

# working: tokens 0-5, verification: 6-10 (its cue "Wait," is 6-7), answer: 11-13
PIECES = ["3", " +", " 4", " =", " 7", ".", " Wait", ",", " 7", ".", "\n", "Answer", ":", " 7"]
WEIGHTS = [1.0] * 6 + [1.2, 1.1, 1.0, 1.0, 1.0] + [1.0, 1.0, 1.1]
FUTURE_KL = [0.0] * 6 + [0.4, 0.2, 0.0, 0.0, 0.2] + [0.0, 0.0, 0.1]


def test_token_groups_mark_kinds_and_the_cue():
    kinds, opening = token_groups(PIECES)
    assert kinds.tolist() == [1] * 6 + [3] * 5 + [4] * 3  # working, verification, answer
    assert opening.nonzero()[0].tolist() == [6, 7]


def test_a_view_records_spans_give_the_same_token_groups_as_its_pieces():
    from fipo_nb.views.records import view_records

    record = view_records([{"tokens": PIECES, "metrics": {}}])[0]
    for ours, theirs in zip(group_codes(record["segments"], len(PIECES)), token_groups(PIECES)):
        assert ours.tolist() == theirs.tolist()


def test_means_per_segment_by_hand():
    other = ["Next", " we", " need", " to", " add", "."]  # 6 planning tokens, out of the loss
    metrics = segment_metrics([(PIECES, WEIGHTS, FUTURE_KL, True), (other, [5.0] * 6, [9.0] * 6, False)])
    total = 14 + 6
    assert metrics["segment/working/token_frac"] == pytest.approx(6 / total)
    assert metrics["segment/verification/token_frac"] == pytest.approx(5 / total)
    assert metrics["segment/planning/token_frac"] == pytest.approx(6 / total)  # counted, though not in the loss
    assert sum(metrics[f"segment/{k}/token_frac"] for k in GROUPS[:5]) == pytest.approx(1.0)
    # verification: (1.2 + 1.1 + 1 + 1 + 1) / 5 = 1.06; Future-KL (0.4 + 0.2 + 0.2) / 5 = 0.16
    assert metrics["segment/verification/weight_mean"] == pytest.approx(1.06)
    assert metrics["segment/verification/future_kl_mean"] == pytest.approx(0.16)
    # answer: (1 + 1 + 1.1) / 3; working: all 1 and 0
    assert metrics["segment/answer/weight_mean"] == pytest.approx(3.1 / 3)
    assert metrics["segment/working/weight_mean"] == 1.0 and metrics["segment/working/future_kl_mean"] == 0.0
    # the cue " Wait" ",": (1.2 + 1.1) / 2 = 1.15, (0.4 + 0.2) / 2 = 0.3; the other 12 in-loss tokens: 14.1 / 12
    assert metrics["segment/verify_open/weight_mean"] == pytest.approx(1.15)
    assert metrics["segment/verify_open/future_kl_mean"] == pytest.approx(0.3)
    assert metrics["segment/verify_open/token_frac"] == pytest.approx(2 / total)
    assert metrics["segment/rest/weight_mean"] == pytest.approx((sum(WEIGHTS) - 2.3) / 12)
    assert metrics["segment/rest/token_frac"] == pytest.approx(18 / total)
    # no planning token entered the loss, no result anywhere: no mean, rather than NaN
    assert "segment/planning/weight_mean" not in metrics and "segment/result/future_kl_mean" not in metrics
    assert metrics["segment/result/token_frac"] == 0.0


def test_no_rows_give_zero_shares_and_no_means():
    metrics = segment_metrics([])
    assert all(v == 0.0 for v in metrics.values()) and len(metrics) == len(GROUPS)


def test_a_training_step_logs_segment_metrics_that_match_its_weights(tmp_path):
    from fipo_nb.presets import apply_overrides, get_preset
    from fipo_nb.analysis.runs import read_jsonl
    from fipo_nb.trainer import FIPOTrainer

    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", "save_every=-1",
                                                       "fipo.drop_dual_clipped_sequences=false", "trace_samples=0"])
    trainer = FIPOTrainer(config, reward_fn=lambda p, r, s: float(sum(map(ord, r)) % 2))
    trainer.step()
    result = trainer.step()
    logged = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    assert {k: v for k, v in logged.items() if k.startswith("segment/")} == \
        step_segment_metrics(result, trainer.policy.tokenizer)
    kinds = [k for k in GROUPS[:5]]
    assert sum(logged[f"segment/{k}/token_frac"] for k in kinds) == pytest.approx(1.0)
    assert logged["segment/verify_open/token_frac"] + logged["segment/rest/token_frac"] == pytest.approx(1.0)
    # every row entered the loss (no drop rule, no overlong filter): the shares weight the means back to the
    # mean weight of all response tokens
    assert bool(result.in_loss.all())
    mask = result.rollout.response_mask  # [N, R]
    for name, values in (("weight", result.weights), ("future_kl", result.future_kl)):
        overall = sum(logged[f"segment/{k}/token_frac"] * logged.get(f"segment/{k}/{name}_mean", 0.0) for k in kinds)
        assert overall == pytest.approx(values[mask].double().mean().item(), rel=1e-5, abs=1e-9)
    assert torch.isfinite(result.weights).all()
