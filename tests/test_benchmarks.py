"""Every script in benchmarks/ runs at its smallest setting (--quick), so none can rot."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

HELPERS = {"threads.py"}  # imported by the benchmarks, not one itself
BENCHMARKS = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py") if p.name not in HELPERS)


def test_there_are_benchmarks():
    assert {p.name for p in BENCHMARKS} >= {"future_kl.py", "logprobs.py", "train_step.py", "rollout.py", "vs_trl.py",
                                            "gpu_check.py", "ppo_cost.py", "reward_workers.py", "soak.py"}


SLOW = {"vs_trl.py", "ppo_cost.py"}  # ppo_cost.py: six processes, each loads a model
RESULT = {  # the line each script's claim rests on
    "future_kl.py": r"\n\s*\d+ \|.*\d+x \|", "logprobs.py": r"chunked / naive peak memory: \d", "gpu_check.py": r"\byes  \(step",
    "train_step.py": r"FIPO overhead: [+-]\d", "rollout.py": r"\ncompact .* yes\n", "vs_trl.py": r"speed-up over TRL: \d",
    "ppo_cost.py": r"same rollout in every process: yes[\s\S]*PPO step cost: \d",
    "soak.py": r"memory growth: [+-]\d", "reward_workers.py": r"scores agree: yes[\s\S]*parallel scoring speed-up: \d",
}  # imports TRL and builds its trainer: ~25 s on 2 cores


@pytest.mark.parametrize("script", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p
                                    for p in BENCHMARKS], ids=lambda p: p.name)
def test_benchmark_runs_quick(script, tmp_path):
    if script.name == "vs_trl.py":
        pytest.importorskip("trl", reason="benchmarks/vs_trl.py runs TRL's GRPOTrainer: pip install fipo_nb[trl]")
    proc = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, f"{script.name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert re.search(RESULT[script.name], proc.stdout), f"{script.name} --quick did not print its result:\n{proc.stdout}"
    if script.name == "vs_trl.py":
        assert_equal_work(proc.stdout)
    if script.name in ("train_step.py", "rollout.py"):  # once at torch's default, once at 1 thread
        assert len(re.findall(r"^=== (torch default|1) thread\(s\), load", proc.stdout, re.MULTILINE)) == 2, proc.stdout


def assert_equal_work(stdout: str) -> None:
    """vs_trl.py --quick (2 prompts x 2 samples, 8 new tokens): in the fixed-length mode every trainer's every
    step has 32 response tokens and the same prompt tokens, at each thread count (the script raises otherwise)."""
    rows = re.findall(r"^\s*(\d+|mem) fixed\s+(TRL dapo|fipo_nb dapo|fipo_nb fipo)\s+(?:[\d.]+\s+){3}(\d+)\s+(\d+)",
                      stdout, re.MULTILINE)
    children = len(re.findall(r"^=== .* thread\(s\): ", stdout, re.MULTILINE))  # torch's default, and 1 if that is more
    assert children >= 1 and len(rows) == children * 3 * 3, stdout  # warm-up, one timed and the memory round
    assert {name for _, name, _, _ in rows} == {"TRL dapo", "fipo_nb dapo", "fipo_nb fipo"}
    assert {tokens for _, _, tokens, _ in rows} == {"32"}, rows
    assert len({prompt for _, _, _, prompt in rows}) == 1, rows


def test_vs_trl_refuses_unequal_work(monkeypatch):
    """The check vs_trl.py runs after every round: unequal token counts in the fixed-length mode raise."""
    monkeypatch.syspath_prepend(str(BENCHMARKS[0].parent))
    vs_trl = importlib.import_module("vs_trl")  # imports no TRL: the trainers are built in measure()
    step = lambda tokens, prompt_tokens=40: vs_trl.Step(1.0, 2.0, tokens, prompt_tokens, [])  # noqa: E731
    fixed, natural = vs_trl.Round(1, "fixed", "1"), vs_trl.Round(1, "natural", "1")
    equal = {name: step(32) for name in vs_trl.TRAINERS}
    vs_trl.check_equal_work(fixed, equal, rows=4, max_new_tokens=8)
    vs_trl.check_equal_work(natural, {**equal, "TRL dapo": step(29)}, rows=4, max_new_tokens=8)  # EOS honoured
    with pytest.raises(RuntimeError, match="response tokens"):
        vs_trl.check_equal_work(fixed, {**equal, "TRL dapo": step(29)}, rows=4, max_new_tokens=8)
    with pytest.raises(RuntimeError, match="prompts differ"):
        vs_trl.check_equal_work(natural, {**equal, "fipo_nb dapo": step(32, 41)}, rows=4, max_new_tokens=8)
