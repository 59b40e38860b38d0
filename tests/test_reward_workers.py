"""fipo_nb.rewards.workers: scoring in worker processes, with real processes that hang, crash and exit."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

import fipo_nb.rewards.math
from fipo_nb.data import Problem
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.rewards import MathReward, RewardError, RewardResult, score_responses
from fipo_nb.rewards.workers import RewardPool, WorkerFailure
from fipo_nb.trainer import FIPOTrainer

TIMEOUT = 5.0  # seconds: the calls meant to finish here take microseconds; 5 s leaves room for a machine at load 6+


def problem(answer: str, id: str) -> Problem:
    return Problem([{"role": "user", "content": "q"}], answer, id)


# responses in the forms models write them, against gold answers; some right, some wrong, some hedged
CASES = [
    ("Answer: \\frac{1}{2}", "0.5"), ("so \\boxed{\\sqrt{8}}", "2\\sqrt{2}"), ("Answer: 5 (or 12)", "12"),
    ("The total is 12.", "12"), ("Answer: $\\{1, 2\\}$", "\\{2, 1\\}"), ("\\boxed{3}", "4"), ("Answer: 50\\%", "0.5"),
    ("x = 7, so \\boxed{x = 7}", "7"), ("I get 1,000 in all.", "1000"), ("Answer: \\dfrac{3}{4}", "0.75"),
    ("", "1"), ("Answer: 2^{10}", "1024"), ("\\boxed{\\pi}", "3.14159"), ("Answer: -3", "-3"),
]


def batch(n: int = len(CASES)):
    responses = [CASES[i % len(CASES)][0] for i in range(n)]
    samples = [problem(CASES[i % len(CASES)][1], f"p:{i}") for i in range(n)]
    return ["q"] * n, responses, samples


def hangs_on_3(prompt, response, sample):
    if sample.id == "p:3":
        threading.Event().wait()  # waits for ever, as on a lock nobody releases
    return 1.0


def exits_on_3(prompt, response, sample):
    if sample.id == "p:3":
        os._exit(1)
    return 1.0


def segfaults_on_3(prompt, response, sample):
    if sample.id == "p:3":
        faulthandler.disable()  # pytest's dump of the worker's stack would only clutter the output
        os.kill(os.getpid(), signal.SIGSEGV)
    return 1.0


@pytest.fixture
def pool():
    with RewardPool(workers=2, timeout=TIMEOUT) as pool:
        yield pool


@pytest.mark.parametrize("mode", ["answer_line", "boxed", "last_number", "auto"])
def test_math_reward_in_workers_scores_as_in_process(mode):
    prompts, responses, samples = batch(3 * len(CASES))
    truncated = [i % 7 == 6 for i in range(len(samples))]
    reward = MathReward(mode=mode)
    here = score_responses(reward, prompts, responses, samples, truncated=truncated)
    with RewardPool(workers=2) as pool:  # the default timeout: math-verify's first parse in a process is slow
        there = score_responses(reward, prompts, responses, samples, truncated=truncated, pool=pool)
    assert there == here and all(isinstance(r, RewardResult) for r in there)
    assert 0 < sum(r.correct for r in here) < len(here)  # a real mix of right and wrong


def test_math_verify_timeouts_are_on_in_a_worker_and_off_here(pool):
    def timeout(prompt, response, sample):
        return float(fipo_nb.rewards.math._timeout() or 0)

    prompts, responses, samples = batch(2)
    assert [r.reward for r in score_responses(timeout, prompts, responses, samples)] == [0.0, 0.0]
    assert [r.reward for r in score_responses(timeout, prompts, responses, samples, pool=pool)] == \
        [float(fipo_nb.rewards.math.MATH_VERIFY_TIMEOUT)] * 2


def test_lambdas_and_closures_from_here_need_no_pickling(pool):
    lock, bonus = threading.Lock(), 0.25  # a lock does not pickle: the workers inherit the function

    def closure(prompt, response, sample):
        with lock:
            return len(response) + bonus

    prompts, responses, samples = batch(6)
    assert [r.reward for r in score_responses(closure, prompts, responses, samples, pool=pool)] == \
        [len(r) + 0.25 for r in responses]
    scored = score_responses(lambda p, r, s: -1.0 if s.id == "p:2" else 2.0, prompts, responses, samples, pool=pool)
    assert [r.reward for r in scored] == [2.0, 2.0, -1.0, 2.0, 2.0, 2.0]  # a new function: new workers
    assert [r.correct for r in scored] == [True, True, False, True, True, True]
    assert pool.running == 2


def test_an_exception_in_a_worker_comes_back_with_its_type_message_and_traceback(pool):
    def flaky(prompt, response, sample):
        if sample.id == "p:1":
            raise KeyError("missing")
        return 1.0

    prompts, responses, samples = batch(4)
    with pytest.raises(RewardError, match=r"sample 1 \(id 'p:1'\): KeyError: 'missing'") as info:
        score_responses(flaky, prompts, responses, samples, pool=pool)
    cause = info.value.__cause__
    assert isinstance(cause, WorkerFailure) and cause.kind == "KeyError"
    assert 'raise KeyError("missing")' in "".join(cause.__notes__)
    scored = score_responses(flaky, prompts, responses, samples, pool=pool, on_error="incorrect", error_reward=-0.5)
    assert [r.reward for r in scored] == [1.0, -0.5, 1.0, 1.0]
    assert scored[1].error == "reward function failed on sample 1 (id 'p:1'): KeyError: 'missing'"


@pytest.mark.parametrize("reward_fn, failure", [
    (hangs_on_3, r"RewardTimeout: no result within reward_timeout=5 s; its worker process was killed"),
    (exits_on_3, r"WorkerDied: the worker process scoring it died \(exit code 1\)"),
    (segfaults_on_3, r"WorkerDied: the worker process scoring it died \(killed by SIGSEGV\)"),
], ids=["hangs", "exits", "segfaults"])
def test_a_call_that_hangs_or_kills_its_worker_fails_its_sample_and_the_pool_goes_on(pool, reward_fn, failure):
    prompts, responses, samples = batch(8)
    with pytest.raises(RewardError, match=rf"sample 3 \(id 'p:3'\): {failure}"):
        score_responses(reward_fn, prompts, responses, samples, pool=pool)
    scored = score_responses(reward_fn, prompts, responses, samples, pool=pool, on_error="incorrect",
                             error_reward=-1.0)
    assert [r.reward for r in scored] == [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert [r.error is not None for r in scored].count(True) == 1 and scored[3].error.startswith(
        "reward function failed on sample 3 (id 'p:3'): ")
    fine = [s for s in samples if s.id != "p:3"]  # the pool scores the next batch as if nothing had happened
    assert [r.reward for r in score_responses(reward_fn, prompts[:7], responses[:7], fine, pool=pool)] == [1.0] * 7
    assert pool.running == 2


def test_a_sample_that_cannot_be_sent_fails_by_name(pool):
    samples = [{"id": "plain", "answer": "1"}, {"id": "odd", "answer": "1", "check": lambda: 0}]
    with pytest.raises(RewardError, match=r"sample 1 \(id 'odd'\): \w+: cannot be sent to a worker process: .*pickle"):
        score_responses(lambda p, r, s: 1.0, ["q", "q"], ["r", "r"], samples, pool=pool)


def test_close_stops_the_workers_and_the_next_call_starts_new_ones():
    pool = RewardPool(workers=3, timeout=TIMEOUT)
    prompts, responses, samples = batch(2)
    assert pool.running == 0  # nothing starts before the first call
    score_responses(lambda p, r, s: 1.0, prompts, responses, samples, pool=pool)
    pids = [w.process.pid for w in pool._live]
    assert pool.running == 2  # no more than there are samples
    pool.close()
    pool.close()  # twice is fine
    assert pool.running == 0
    for pid in pids:  # ended and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert [r.reward for r in score_responses(lambda p, r, s: 3.0, prompts, responses, samples, pool=pool)] == [3.0] * 2
    pool.close()


def test_the_pool_settings_are_checked():
    with pytest.raises(ValueError, match="TrainConfig.reward_timeout must be a finite number > 0; got 0"):
        apply_overrides(get_preset("cpu-smoke"), ["reward_timeout=0"])
    with pytest.raises(ValueError, match="TrainConfig.reward_workers must be an integer >= 0 or None; got -1"):
        apply_overrides(get_preset("cpu-smoke"), ["reward_workers=-1"])
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        RewardPool(workers=-2)


# ---------------------------------------------------------------- in a training step


def smoke(tmp_path, *overrides):
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", f"reward_timeout={TIMEOUT}",
                                                     "reward_workers=2", *overrides])


def fails_once(marker, fail=lambda: threading.Event().wait()):
    """Calls `fail` (default: hangs) on the first call in any worker (the one that creates `marker`); every
    other call scores by parity."""
    def reward(prompt, response, sample):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return float(sum(map(ord, response)) % 2)
        fail()

    return reward


def test_a_hanging_reward_stops_the_step_before_any_update_and_the_step_runs_again(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path / "run"), reward_fn=fails_once(tmp_path / "marker"))
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    with pytest.raises(RewardError, match=r"sample \d+ \(id 'single-digit:\d+'\): RewardTimeout"):
        trainer.step()
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters()))
    assert trainer.step_in_progress is None and trainer.step_count == 0 and trainer.optimizer.state == {}
    result = trainer.step()  # the same step again: nothing hangs now
    assert trainer.step_count == 1 and result.metrics["reward/errors"] == 0
    trainer.close()
    assert trainer.reward_pool.running == 0


def test_a_hanging_reward_under_reward_errors_incorrect_is_scored_and_counted(tmp_path):
    with FIPOTrainer(smoke(tmp_path / "run", "reward_errors=incorrect"),
                     reward_fn=fails_once(tmp_path / "marker")) as trainer:
        with pytest.warns(UserWarning, match=r"RewardTimeout: no result within reward_timeout=5 s.*; 1 of 32"):
            result = trainer.step()
        assert result.metrics["reward/errors"] == 1 and trainer.step_count == 1
    assert trainer.reward_pool.running == 0


def test_no_worker_outlives_the_call_that_started_it(tmp_path):
    """A forked worker holds copies of this process's pipes: one left running between calls kept a helper
    process of the caller (playwright's driver, in this suite) waiting for an end of input that never came."""
    helper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read()"], stdin=subprocess.PIPE)
    try:
        trainer = FIPOTrainer(smoke(tmp_path / "run", "eval_data=single-digit?size=2&seed=5", "eval_k=2"),
                              reward_fn=lambda p, r, s: float(len(r) % 2))
        started = []
        trainer.train(1, progress=False, callback=lambda result: started.append(trainer.reward_pool.running))
        assert started == [2] and trainer.reward_pool.running == 0
        trainer.step()
        trainer.evaluate()
        assert trainer.reward_pool.running == 0
    finally:
        helper.stdin.close()  # its only writer now: the helper sees the end of its input and exits
    assert helper.wait(timeout=120) == 0


def test_evaluation_scores_in_the_workers_too(tmp_path):
    config = smoke(tmp_path / "run", "reward_errors=incorrect", "eval_data=single-digit?size=3&seed=5", "eval_k=2")
    with FIPOTrainer(config, reward_fn=fails_once(tmp_path / "marker", lambda: os._exit(3))) as trainer:
        with pytest.warns(UserWarning, match=r"failed on 1 response.*WorkerDied: .*died \(exit code 3\)"):
            metrics = trainer.evaluate(step=0)
    assert metrics["eval/reward_errors"] == 1 and metrics["eval/problems"] == 3


def test_reward_workers_none_scores_in_the_trainers_process(tmp_path):
    seen = []

    def record(prompt, response, sample):
        seen.append(sample.id)  # a side effect: visible here only when scoring runs here
        return float(len(response) % 2)

    trainer = FIPOTrainer(smoke(tmp_path, "reward_workers=null"), reward_fn=record)
    trainer.step()
    assert trainer.reward_pool is None and len(seen) == 32
