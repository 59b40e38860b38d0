"""Dealing problems out: a seeded, resumable order, epoch after epoch, and de-duplication."""

from __future__ import annotations

import json
import random
from typing import Sequence

from .problems import Problem

__all__ = ["PromptSampler", "problem_key", "unique_problems"]


def problem_key(problem: Problem) -> tuple[str, str]:
    return json.dumps(problem.prompt, sort_keys=True), str(problem.answer)


def unique_problems(problems) -> list:
    """`problems` without repeats of the same prompt and answer, in first-seen order.

    >>> from fipo_nb.data import Problem
    >>> a, b = Problem([{"role": "user", "content": "1+1?"}], "2", "f:0"), Problem([{"role": "user", "content": "2+2?"}], "4", "f:1")
    >>> [p.id for p in unique_problems([a, b, Problem(a.prompt, "2", "f:2")])]
    ['f:0', 'f:1']
    """
    seen, out = set(), []
    for problem in problems:
        key = problem_key(problem)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


class PromptSampler:
    """Yields batches of problems in a shuffled order, epoch after epoch; deterministic by seed; resumable.

    >>> from fipo_nb.data import load_problems
    >>> sampler = PromptSampler(load_problems("single-digit?size=3"), batch_size=2, seed=0)
    >>> len(sampler.next_batch()), len(sampler.next_batch()), sampler.state_dict()["epoch"]
    (2, 2, 1)
    """

    def __init__(self, problems: Sequence[Problem], batch_size: int, *, seed: int = 0, shuffle: bool = True):
        if len(problems) == 0:
            raise ValueError("PromptSampler needs at least one problem")
        if batch_size < 1:
            raise ValueError(f"PromptSampler: batch_size must be >= 1; got {batch_size}")
        self.problems, self.batch_size, self.seed, self.shuffle = list(problems), batch_size, seed, shuffle
        self.load_state_dict({"epoch": 0, "position": 0})

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        if self.shuffle:  # a string seed hashes the same in every process (unlike hash())
            random.Random(f"fipo_nb.PromptSampler:{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[Problem]:
        """The next batch_size problems; an epoch boundary inside a batch reshuffles there."""
        batch = []
        for _ in range(self.batch_size):
            if self.position == len(self.problems):
                self.epoch, self.position = self.epoch + 1, 0
                self._current = self._order(self.epoch)
            batch.append(self.problems[self._current[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def load_state_dict(self, state: dict) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self.problems):
            raise ValueError(f"PromptSampler: bad state {state} for {len(self.problems)} problems")
        self.epoch, self.position = epoch, position
        self._current = self._order(epoch)

