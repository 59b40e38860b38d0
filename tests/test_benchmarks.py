"""Every script in benchmarks/ runs at its smallest setting (--quick), so none can rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


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
