"""Evaluation: avg@k and pass@k on held-out problems, written to eval.jsonl, without disturbing training."""

from __future__ import annotations

import json

import pytest

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer

TIMING = ("time/", "tokens_per_s")


def without_timings(row):
    return {k: v for k, v in row.items() if not k.startswith(TIMING)}


def test_evaluation_every_nth_step_and_the_last_writes_avg_and_pass_at_k(tmp_path):
    config = apply_overrides(get_preset("cpu-smoke"), [
        f"output_dir={tmp_path}", "eval_data=single-digit?size=6&seed=99", "eval_every=2", "eval_k=3", "steps=3",
    ])
    trainer = FIPOTrainer(config)
    trainer.train(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3]  # step 3: the run's last, as verl evaluates (is_last_step)
    for row in rows:
        assert 0.0 <= row["eval/avg@3"] <= row["eval/pass@3"] <= 1.0
        assert row["eval/problems"] == 6
        assert row["eval/length/min"] <= row["eval/length/median"] <= row["eval/length/max"]
    assert "eval/avg@3" in trainer.history[-1]  # also in that step's metrics row


def test_evaluating_does_not_change_what_training_does(tmp_path):
    runs = []
    for name, extra in (("plain", []), ("eval", ["eval_data=single-digit?size=4&seed=7", "eval_every=1"])):
        config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path / name}", *extra])
        trainer = FIPOTrainer(config)
        trainer.train(2, progress=False)
        runs.append([{k: v for k, v in without_timings(m).items() if not k.startswith("eval/")}
                     for m in trainer.history])
    assert runs[0] == runs[1]


def test_repeated_problems_are_sampled_once(tmp_path):
    # DAPO's AIME file repeats each problem 32 times: k samples per *distinct* problem, not 32 k
    from fipo_nb.data import from_records
    from fipo_nb.train.evaluation import evaluate
    from fipo_nb.models import load_policy
    from fipo_nb.rewards import MathReward

    policy = load_policy("tiny-qwen2-char", "lora", lora_r=2, device="cpu")
    distinct = from_records([{"problem": f"{d} + 1?", "answer": str(d + 1)} for d in range(3)], instruction=None)
    repeated = from_records([{"problem": f"{d} + 1?", "answer": str(d + 1)} for d in range(3) for _ in range(4)],
                            instruction=None)
    kwargs = dict(k=2, max_prompt_length=64, max_new_tokens=4, seed=3)
    once = evaluate(policy, distinct, MathReward(mode="last_number"), **kwargs)
    again = evaluate(policy, repeated, MathReward(mode="last_number"), **kwargs)
    assert again["eval/problems"] == 3 and again["eval/duplicates"] == 9 and once["eval/duplicates"] == 0
    assert {k: v for k, v in again.items() if k != "eval/duplicates"} == \
        {k: v for k, v in once.items() if k != "eval/duplicates"}


def test_evaluation_follows_reward_errors(tmp_path):
    from fipo_nb.data import from_records
    from fipo_nb.train.evaluation import evaluate
    from fipo_nb.models import load_policy
    from fipo_nb.rewards import RewardError

    policy = load_policy("tiny-qwen2-char", "lora", lora_r=2, device="cpu")
    problems = from_records([{"problem": "1 + 1?", "answer": "2"}], instruction=None)

    def broken(prompt, response, sample):
        raise RuntimeError("grader down")

    kwargs = dict(k=2, max_prompt_length=64, max_new_tokens=4)
    with pytest.raises(RewardError, match="grader down"):
        evaluate(policy, problems, broken, **kwargs)
    with pytest.warns(UserWarning):
        metrics = evaluate(policy, problems, broken, reward_errors="incorrect", error_reward=-1.0, **kwargs)
    assert metrics["eval/reward_errors"] == 2 and metrics["eval/avg@2"] == 0.0 and metrics["eval/reward_mean"] == -1.0


def test_a_run_counts_the_repeats_of_its_eval_file(tmp_path):
    # eval_limit counts distinct problems; the trainer keeps their repeats so eval/duplicates reports them
    rows = [{"problem": f"{d} + 1 = ?", "answer": str(d + 1)} for d in range(3) for _ in range(4)]
    (tmp_path / "aime.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = apply_overrides(get_preset("cpu-smoke"), [
        f"output_dir={tmp_path / 'run'}", f"eval_data={tmp_path / 'aime.jsonl'}", "eval_limit=2", "eval_every=1",
        "eval_k=2",
    ])
    FIPOTrainer(config).train(1, progress=False)
    row = json.loads((tmp_path / "run" / "eval.jsonl").read_text().splitlines()[0])
    assert row["eval/problems"] == 2 and row["eval/duplicates"] == 6


def test_evaluation_samples_with_the_runs_top_k(tmp_path):
    # verl's recipe validates with val_kwargs.top_k = top_k: fipo_nb's evaluation samples with config.top_k too
    seen = {}

    def record(prompt, response, sample):
        seen.setdefault(prompt, []).append(response)
        return 0.0

    for top_k in (0, 1):
        seen.clear()
        config = apply_overrides(get_preset("cpu-smoke"), [
            f"output_dir={tmp_path / str(top_k)}", "eval_data=single-digit?size=3&seed=5", "eval_k=4", f"top_k={top_k}",
            "reward_workers=null",  # record() keeps what it saw in this process
        ])
        FIPOTrainer(config, reward_fn=record).evaluate(step=0)
        same = [len(set(responses)) == 1 for responses in seen.values()]
        assert len(same) == 3 and all(len(r) == 4 for r in seen.values())
        assert all(same) if top_k == 1 else not all(same)  # top_k=1: each problem's k samples are its argmax path


def test_a_run_on_its_own_file_evaluates_on_held_out_problems_it_never_trains_on(tmp_path):
    from fipo_nb.data.sampler import problem_key

    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i % 5} + {i // 5}?", "answer": i % 5 + i // 5}) + "\n"
                            for i in range(30)))
    config = apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path / 'run'}", f"data={path}",
                                                       "eval_holdout=0.2", "eval_every=1", "eval_k=2"])
    trainer = FIPOTrainer(config)
    assert len(trainer.eval_problems) == 6 and len(trainer.problems) == 24
    assert not {problem_key(p) for p in trainer.problems} & {problem_key(p) for p in trainer.eval_problems}
    trainer.train(1, progress=False)
    row = json.loads((tmp_path / "run" / "eval.jsonl").read_text())
    assert row["step"] == 1 and row["eval/problems"] == 6
