"""Answers and rewards: extract the final answer from a response, check it with math-verify.

    >>> extract_answer("so the total is 12.\\nAnswer: $\\\\boxed{12}$.")
    '12'
    >>> MathReward()("prompt", "Answer: 1/2", Problem([], "0.5", "p:0"))
    1.0

math-verify is called without its timeouts (`parsing_timeout=None`, `timeout_seconds=None`):
they use signal.alarm, which fails off the main thread, and the trainer may score in a worker
thread. Without them, two known inputs make it run for hours: exact arithmetic on huge
numbers such as 10^(10^10), and deeply nested fractions (time doubles per level). Parsed
answers past a size or depth bound are therefore never compared (`_too_costly`); the bounds are
far beyond real final answers. Other pathological inputs may exist.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import sympy
from math_verify import parse, verify

from .data import Problem

__all__ = ["MODES", "MathReward", "RewardResult", "answers_match", "extract_answer", "overlong_penalty",
           "score_responses"]



class _TimeoutDisabledFilter(logging.Filter):
    """math-verify warns on every call that its timeouts are off; that is deliberate here (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_TimeoutDisabledFilter())

MODES = ("auto", "answer_line", "boxed", "last_number")
ANSWER_LINE = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")  # the official DAPO reward's pattern; the last match wins
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
NUMBER = re.compile(r"(?<![\d)])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")  # "5-3" ends in 3, not -3
TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
MAX_DIGITS = 200_000  # verify on 10^(10^5) takes 0.2 s, on 10^(10^7) 10 s, on 10^(10^10) forever
MAX_ANSWER_CHARS = 1000  # longer "answers" are rambling, not answers: string check only (3000 chars: 3 s to parse)
MAX_DEPTH = 16  # expression-tree depth; \frac{\frac{...}{2}}{2} takes 0.3 s at depth 15, 1.2 s at 17, > 15 s at 21


def _braced(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at text[open_at] ("{"), or None if it never closes."""
    depth, i = 0, open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # \{ and \} are literal braces (sets), not grouping
            i += 2
            continue
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0:
            return text[open_at + 1 : i]
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}; None if there is none or it is cut off."""
    matches = list(BOXED.finditer(text))
    return _braced(text, matches[-1].end() - 1) if matches else None


def _clean(answer: str) -> str:
    """Strip whitespace, markdown bold, $...$, a trailing period and a \\boxed{} wrapper, until stable."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("*").strip().removesuffix(".").strip("$").strip()
        if answer.startswith("\\(") and answer.endswith("\\)"):
            answer = answer[2:-2]
        match = BOXED.match(answer)
        if match and _braced(answer, match.end() - 1) == answer[match.end() : -1]:
            answer = answer[match.end() : -1]  # the box spans the whole answer
    return answer


def extract_answer(text: str, mode: str = "auto") -> str | None:
    """The final answer in a response, or None when there is none.

    answer_line: text after the last "Answer:" (DAPO's format), cleaned of $, a trailing
    period and a \\boxed{}; boxed: content of the last \\boxed{...} (nested braces matched);
    auto: answer_line if present, else boxed; last_number: the last integer/decimal/fraction.
    """
    if mode not in MODES:
        raise ValueError(f"extract_answer: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    text = text or ""
    if mode in ("answer_line", "auto"):
        lines = ANSWER_LINE.findall(text)
        answer = _clean(lines[-1]) if lines else ""
        if answer or mode == "answer_line":
            return answer or None
    if mode in ("boxed", "auto"):
        boxed = _last_boxed(text)
        return (_clean(boxed) or None) if boxed is not None else None
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _normalize(answer: str) -> str:
    """For the string fast path: no spaces, $, \\text{} or trailing period; case-folded ("Yes" == "yes")."""
    answer = TEXT_WRAPPER.sub(r"\1", _clean(answer))
    return re.sub(r"\s+", "", answer).casefold()


def _digits(expr: Any) -> float:
    """Upper bound on log10 of the largest exact number sympy may build when evaluating `expr`."""
    if isinstance(expr, sympy.Integer):
        return math.log10(abs(int(expr))) if expr != 0 else 0.0
    if isinstance(expr, sympy.Rational):
        return max(_digits(sympy.Integer(expr.p)), _digits(sympy.Integer(expr.q)))
    if not isinstance(expr, sympy.Basic) or not expr.args:
        return 1.0  # symbols, floats (mpmath: cheap at any size), pi, strings
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.args
        if exponent.free_symbols:
            return _digits(base) + _digits(exponent)  # stays symbolic
        if isinstance(exponent, sympy.Rational):
            power = abs(exponent.p)  # b^(p/q) is computed as (b^p)^(1/q)
        else:
            power = 10 ** min(_digits(exponent), 300)  # a compound exponent: bound its size (capped: no overflow)
        return max(_digits(base), 1.0) * power
    sizes = [_digits(arg) for arg in expr.args]
    if isinstance(expr, (sympy.factorial, sympy.binomial)):
        n = 10 ** min(sizes[0], 300)
        return n * max(math.log10(n), 1.0)  # log10(n!) <= n log10(n); C(n, k) <= n!
    return sum(sizes) + 1.0  # products add digits; sums, sets and functions add no more


def _depth(expr: Any) -> int:
    return 1 + max(map(_depth, expr.args), default=0) if isinstance(expr, sympy.Basic) else 0


def _too_costly(expr: Any) -> bool:
    """True when math-verify could take minutes or more on `expr` (it has no timeout here)."""
    try:
        return _depth(expr) > MAX_DEPTH or _digits(expr) > MAX_DIGITS
    except (OverflowError, RecursionError, ValueError, TypeError):
        return True


def _parsed(answer: str) -> list:
    """math-verify's parse of `answer`, inside $...$ when bare (it then reads LaTeX: \\sqrt8, 50\\%, sets)."""
    wrapped = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    result = parse(wrapped, parsing_timeout=None) or parse(answer, parsing_timeout=None)
    return [item for item in result if not _too_costly(item)]


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when `predicted` is mathematically the gold answer (math-verify); never raises.

    >>> answers_match("\\\\frac{1}{2}", "0.5"), answers_match("\\\\sqrt8", "2\\\\sqrt2"), answers_match("3", "4")
    (True, True, False)
    """
    try:
        if not predicted or not str(predicted).strip() or not str(gold).strip():
            return False
        predicted, gold = str(predicted), str(gold)
        if _normalize(predicted) == _normalize(gold):
            return True
        if len(predicted) > MAX_ANSWER_CHARS:
            return False
        gold_parsed, predicted_parsed = _parsed(gold), _parsed(predicted)
        if not gold_parsed or not predicted_parsed:
            return False
        return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))
    except Exception:  # garbage in, False out: a reward must not crash the training step
        return False


@dataclass
class RewardResult:
    """One response's score."""

    reward: float
    correct: bool
    extracted: str | None = None
    """The answer found in the response (None: none found)."""


def _gold(sample: Any) -> str:
    return sample["answer"] if isinstance(sample, dict) else sample.answer


@dataclass
class MathReward:
    """Rule-based math reward: correct -> `correct`, else `incorrect` (DAPO: 1 / -1; or 1 / 0)."""

    correct: float = 1.0
    """Reward of a response whose extracted answer matches the ground truth."""
    incorrect: float = -1.0
    """Reward of any other response (wrong, no answer, empty); DAPO uses -1."""
    mode: str = "auto"
    """How to find the answer in a response: see `extract_answer`."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"MathReward: unknown mode {self.mode!r}; use one of {', '.join(MODES)}")

    def score(self, prompt: str, response: str, sample: Problem) -> RewardResult:
        """Extract the answer from `response` and check it against sample.answer (or sample["answer"])."""
        extracted = extract_answer(response, self.mode)
        correct = answers_match(extracted, _gold(sample))
        return RewardResult(self.correct if correct else self.incorrect, correct, extracted)

    def __call__(self, prompt: str, response: str, sample: Problem) -> float:
        return self.score(prompt, response, sample).reward


def _score_one(reward_fn: Any, prompt: str, response: str, sample: Any) -> RewardResult:
    if hasattr(reward_fn, "score"):
        result = reward_fn.score(prompt, response, sample)
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


def score_responses(reward_fn: Any, prompts: list[str], responses: list[str], samples: list) -> list[RewardResult]:
    """Score each (prompt, response, sample); reward_fn has .score(...) -> RewardResult or is any
    callable (prompt, response, sample) -> float (then correct = reward > 0).

    A reward function that raises or returns a non-finite or non-numeric value raises
    ValueError naming the sample index and id, chained to the cause.
    """
    if not len(prompts) == len(responses) == len(samples):
        raise ValueError(
            f"score_responses: {len(prompts)} prompts, {len(responses)} responses, {len(samples)} samples"
        )
    results = []
    for index, (prompt, response, sample) in enumerate(zip(prompts, responses, samples)):
        try:
            results.append(_score_one(reward_fn, prompt, response, sample))
        except Exception as exc:
            sample_id = getattr(sample, "id", None) or (sample.get("id") if isinstance(sample, dict) else None)
            raise ValueError(f"reward function failed on sample {index} (id {sample_id!r}): {exc}") from exc
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
