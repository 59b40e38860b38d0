"""Rewards: read the final answer of a response and judge it; score a batch; overlong shaping.

    math.py      MathReward: the answer line or \\boxed{} judged whole with math-verify, or the DAPO scorer
    dapo.py      the official DAPO scorer (verl's math_dapo), line for line
    scoring.py   score_responses (any reward function; failures named), overlong_penalty (DAPO's shaping)
    workers.py   RewardPool: scoring in forked worker processes, a timeout per call; a hang or a crash fails
                 only its sample
"""

from .dapo import dapo_answer, dapo_score
from .scoring import ON_ERROR, RewardError, RewardResult, overlong_penalty, score_responses
from .workers import RewardPool, RewardTimeout, WorkerDied

_MATH = ("MODES", "MathReward", "answers_match", "dapo_hedge", "extract_answer", "is_dapo_source")


def __getattr__(name):
    # math.py imports math-verify and sympy (slow, and absent from verl's environment, which runs the DAPO
    # scorer alone): loaded on first use of one of its names
    if name in _MATH:
        from . import math

        return getattr(math, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "MODES", "MathReward", "ON_ERROR", "RewardError", "RewardPool", "RewardResult", "RewardTimeout", "WorkerDied",
    "answers_match", "dapo_answer", "dapo_hedge", "dapo_score", "extract_answer", "is_dapo_source", "overlong_penalty",
    "score_responses",
]
