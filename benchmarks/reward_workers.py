"""Scoring in worker processes: the same scores as in-process, and what parallel scoring gains.

1,024 responses (128 gold answers x 8 responses, as a step's groups) with final answers in the forms
models write (fractions, decimals, roots, sets, pi, percentages, \\boxed{} or "Answer:" lines,
right, wrong and hedged) are scored with MathReward (math-verify) three ways on the same inputs: in
this process, in a RewardPool of 1 worker, and in one of the default size (one worker per core).
Each way starts warm (a warm-up batch of other gold answers; the pool's workers started) with no gold
answer of the benchmark parsed yet. Prints whether the scores agree and the time ratios.

    .venv/bin/python benchmarks/reward_workers.py [--golds 128] [--group 8] [--quick]
"""

from __future__ import annotations

import argparse
import random
import time

from fipo_nb.data import Problem
from fipo_nb.rewards import MathReward, score_responses
from fipo_nb.rewards.workers import RewardPool, default_workers


def forms(rng: random.Random) -> tuple[str, list[str]]:
    """A gold answer and ways a response may state it (equivalent ones first, then wrong or hedged ones)."""
    kind = rng.randrange(6)
    if kind == 0:
        n = rng.randrange(-50, 5000)
        return str(n), [str(n), f"{n}.0", f"\\frac{{{2 * n}}}{{2}}", f"{n:,}", str(n + 1), f"{n} (or {n + 2})"]
    if kind == 1:
        p, q = rng.randrange(1, 40), rng.choice([2, 4, 5, 8, 10, 16, 20, 25])
        return f"\\frac{{{p}}}{{{q}}}", [f"\\frac{{{p}}}{{{q}}}", f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}", str(p / q),
                                          f"\\frac{{{q}}}{{{p}}}", f"{p / q + 0.5}"]
    if kind == 2:
        k, m = rng.randrange(2, 9), rng.choice([2, 3, 5, 6, 7])
        return f"{k}\\sqrt{{{m}}}", [f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt{{{m}}}", f"{k} \\cdot \\sqrt{{{m}}}",
                                     f"{k}\\sqrt{{{m + 1}}}", f"\\sqrt{{{k * m}}}"]
    if kind == 3:
        values = rng.sample(range(-9, 20), 3)
        return "\\{" + ", ".join(map(str, values)) + "\\}", [
            "\\{" + ", ".join(map(str, reversed(values))) + "\\}", "\\{" + ", ".join(map(str, values[:2])) + "\\}"]
    if kind == 4:
        k = rng.randrange(2, 12)
        return f"{k}\\pi", [f"{k}\\pi", f"\\pi \\cdot {k}", f"\\frac{{{2 * k}\\pi}}{{2}}", f"{k + 1}\\pi"]
    p = rng.randrange(1, 99)
    return f"{p / 100}", [f"{p}\\%", f"{p / 100}", f"\\frac{{{p}}}{{100}}", f"{p + 1}\\%"]


def make_batch(golds: int, group: int, seed: int, prefix: str):
    rng = random.Random(seed)
    responses, samples = [], []
    for g in range(golds):
        gold, ways = forms(rng)
        for _ in range(group):
            answer = rng.choice(ways)
            reasoning = " ".join(rng.choice(["First,", "so", "then", "we get", "x = 3", "hence", "checking,"])
                                 for _ in range(rng.randrange(5, 40)))
            ending = rng.choice([f"\nAnswer: {answer}", f"\nAnswer: ${answer}$", f" So the answer is \\boxed{{{answer}}}."])
            responses.append(reasoning + ending)
            samples.append(Problem([{"role": "user", "content": "q"}], gold, f"{prefix}:{g}"))
    return ["q"] * len(responses), responses, samples


def timed(reward, batch, warm_up, pool) -> tuple[float, list]:
    score_responses(reward, *warm_up, pool=pool)  # starts the workers; other gold answers than the benchmark's
    started = time.perf_counter()
    scored = score_responses(reward, *batch, pool=pool)
    return time.perf_counter() - started, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golds", type=int, default=128)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="64 scorings (8 gold answers x 8)")
    args = parser.parse_args()
    if args.quick:
        args.golds = 8
    batch = make_batch(args.golds, args.group, seed=0, prefix="bench")
    warm_up = make_batch(8, 2, seed=1, prefix="warm")
    cores = default_workers()
    print(f"{len(batch[1])} scorings ({args.golds} gold answers x {args.group} responses), MathReward (math-verify); "
          f"{cores} core(s)")
    ways = {"in-process": None, "pool, 1 worker": 1, f"pool, {cores} workers (default)": 0}
    runs = {}
    # the pools first: what their workers parse stays in them, so each way meets the benchmark's gold answers
    # unparsed (MathReward caches parsed gold answers per process, and a worker inherits this process's cache)
    for name in [*list(ways)[1:], "in-process"]:
        pool = None if ways[name] is None else RewardPool(ways[name])
        try:
            runs[name] = timed(MathReward(), batch, warm_up, pool)
        finally:
            if pool is not None:
                pool.close()
    base, reference = runs["in-process"]
    for name in ways:
        seconds, scored = runs[name]
        print(f"{name:<28} {seconds:7.2f} s  {1000 * seconds / len(scored):6.2f} ms per scoring  "
              f"{base / seconds:5.2f}x in-process speed")
    agree = all(scored == reference for _, scored in runs.values())
    correct = sum(r.correct for r in reference)
    print(f"scores agree: {'yes' if agree else 'NO'} ({correct} of {len(reference)} correct)")
    print(f"parallel scoring speed-up: {base / runs[list(ways)[-1]][0]:.2f}x")
    if not agree:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
