"""Scoring a batch of responses with any reward function, and DAPO's overlong shaping.

A reward function is `MathReward` (math.py) or any callable (prompt, response, sample) -> float.
`score_responses` turns what it returns into RewardResults and says which sample failed, in this
process or in worker processes under a per-call timeout (workers.py: a RewardPool);
`overlong_penalty` is DAPO's soft punishment of responses near the length limit.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from ..config import REWARD_ERRORS

__all__ = ["ON_ERROR", "RewardError", "RewardResult", "overlong_penalty", "score_responses"]

ON_ERROR = REWARD_ERRORS  # what score_responses does with a failing reward function


class RewardError(ValueError):
    """A reward function raised, or returned something that is not a finite number; names the sample."""


@dataclass
class RewardResult:
    """One response's score."""

    reward: float
    correct: bool
    extracted: str | None = None
    """The answer found in the response (None: none found)."""
    error: str | None = None
    """Why the reward function failed on this response, when it was scored as incorrect instead."""


def _reads_truncation(reward_fn: Any) -> bool:
    """Whether reward_fn.score takes `truncated=` (MathReward does: a response cut off has no final answer)."""
    try:
        return "truncated" in inspect.signature(reward_fn.score).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _score_one(reward_fn: Any, prompt: str, response: str, sample: Any, truncated: bool | None) -> RewardResult:
    if hasattr(reward_fn, "score"):
        extra = {} if truncated is None else {"truncated": truncated}
        result = reward_fn.score(prompt, response, sample, **extra)
        if not isinstance(result, RewardResult):
            raise TypeError(f".score returned {type(result).__name__}, not RewardResult")
        value = result.reward
    else:
        value = reward_fn(prompt, response, sample)
        result = None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"reward is {type(value).__name__}, not a number")
    reward = float(value)  # numpy scalars and 0-d tensors too
    if not math.isfinite(reward):
        raise ValueError(f"reward is {reward}")
    if result is None:
        return RewardResult(reward, reward > 0)
    return RewardResult(reward, result.correct, result.extracted)


def _sample_id(sample: Any):
    return getattr(sample, "id", None) or (sample.get("id") if isinstance(sample, dict) else None)


def _attempt(reward_fn: Any, prompt: str, response: str, sample: Any, truncated: bool | None):
    try:
        return _score_one(reward_fn, prompt, response, sample, truncated)
    except Exception as exc:
        return exc


def score_responses(reward_fn: Any, prompts: list[str], responses: list[str], samples: list, *,
                    on_error: str = "raise", error_reward: float = -1.0,
                    truncated: list[bool] | None = None, pool=None) -> list[RewardResult]:
    """Score each (prompt, response, sample); reward_fn has .score(...) -> RewardResult or is any
    callable (prompt, response, sample) -> float (then correct = reward > 0).

    truncated: per response, whether it ran out of tokens; passed on to a .score that takes
    `truncated=` (MathReward: such a response has no final answer). A plain callable decides for itself.
    A reward function that raises or returns a non-finite or non-numeric value: on_error="raise"
    raises RewardError naming the sample index and id, chained to the cause; on_error="incorrect"
    scores that response `error_reward`, not correct, with the reason in RewardResult.error.
    pool: a workers.RewardPool scores in its worker processes (the same results, in the same order),
    where a call past its timeout or one that kills its process fails that sample as a raise does
    (RewardTimeout, WorkerDied); None scores here, in this process.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"score_responses: on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    if not len(prompts) == len(responses) == len(samples) == len(truncated if truncated is not None else samples):
        raise ValueError(f"score_responses: {len(prompts)} prompts, {len(responses)} responses, {len(samples)} "
                         f"samples" + ("" if truncated is None else f", {len(truncated)} truncation flags"))
    flags = truncated if truncated is not None and _reads_truncation(reward_fn) else [None] * len(samples)
    items = list(zip(prompts, responses, samples, flags))
    if pool is None:  # lazily: under "raise", nothing after the failing sample is scored
        outcomes = (_attempt(reward_fn, *item) for item in items)
    else:
        outcomes = pool.score(reward_fn, items, stop_at_error=on_error == "raise")
    results = []
    for index, (sample, outcome) in enumerate(zip(samples, outcomes)):
        if isinstance(outcome, BaseException):  # a worker's failure names its kind (the exception type raised there)
            kind = getattr(outcome, "kind", None) or type(outcome).__name__
            reason = f"reward function failed on sample {index} (id {_sample_id(sample)!r}): {kind}: {outcome}"
            if on_error == "raise":
                raise RewardError(reason) from outcome
            outcome = RewardResult(float(error_reward), False, None, reason)
        results.append(outcome)
    return results


def overlong_penalty(lengths, max_length: int, buffer: int, factor: float = 1.0) -> list[float]:
    """DAPO's soft overlong punishment, added to the reward of each response.

    0 up to `max_length - buffer` tokens, then falling linearly to -factor at `max_length`:
    penalty = min(-(length - (max_length - buffer)) / buffer * factor, 0).

    >>> overlong_penalty([10, 15, 20], max_length=20, buffer=10, factor=1.0)
    [0.0, -0.5, -1.0]
    """
    if buffer <= 0 or buffer > max_length:
        raise ValueError(f"overlong_penalty: buffer must be in 1..max_length ({max_length}); got {buffer}")
    expected = max_length - buffer
    return [min(-(int(n) - expected) / buffer * factor, 0.0) for n in lengths]
