"""Math answers: extract the final answer from a response, check it as a whole (MathReward).

    >>> extract_answer("so the total is 12.\\nAnswer: $\\\\boxed{12}$.")
    '12'
    >>> MathReward()("prompt", "Answer: 1/2", Problem([], "0.5", "p:0"))
    1.0
    >>> MathReward()("prompt", "Answer: 5 (or 12)", Problem([], "12", "p:0"))
    -1.0

An answer is credited only when the extracted final answer *as a whole* is the ground truth:
it is parsed as one expression (math-verify's LaTeX parser on the whole string, never "some
number found inside"), and math-verify decides equivalence (1/2 == 0.5, $12$ == 12, sets in
any order). Hedges ("5 (or 12)"), lists ("0, 1, 2, ..., 12") and alternatives are wrong.
Mode "dapo" is the official DAPO scorer instead (dapo.py): last 300 characters, last
"Answer:" line, normalised string equality, except that alternatives before the last "=" which
its normalisation would drop ("x = 5 or x = 12") are wrong (`dapo_hedge`); "auto" uses it for problems whose data_source says
DAPO (as verl's default_compute_score does), and reads other problems as above.

math-verify's timeouts use signal.alarm, which works only on a process's main thread. They are
on (`MATH_VERIFY_TIMEOUT` per parse and per comparison; past it, that answer is wrong) on the main
thread of a reward worker process (workers.py, where the trainer scores), and off anywhere else
(`parsing_timeout=None`, `timeout_seconds=None`): scoring in-process may run in a thread. Without
them, two known inputs make it run for hours: exact arithmetic on huge numbers such as
10^(10^10), and deeply nested fractions (time doubles per level). Parsed answers past a size or
depth bound are therefore never compared (`_too_costly`), with or without timeouts; the bounds
are far beyond real final answers. Other pathological inputs may exist: in a worker, the pool's
own per-call timeout (reward_timeout) still ends them.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import sympy
from latex2sympy2_extended import NormalizationConfig, latex2sympy, normalize_latex
from math_verify import parse, verify
from math_verify.grader import should_treat_as_complex

from ..config import ANSWER_MODES
from ..data import Problem
from .dapo import ANSWER_PATTERN, INVALID, dapo_answer, dapo_score
from .scoring import RewardResult
from .workers import in_worker

__all__ = ["MODES", "MathReward", "answers_match", "dapo_hedge", "extract_answer", "is_dapo_source"]



class _TimeoutDisabledFilter(logging.Filter):
    """math-verify warns on every call that its timeouts are off; that is deliberate here (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_TimeoutDisabledFilter())

MODES = ANSWER_MODES  # defined in config.py, which must not import this module (sympy is slow to import)
ANSWER_LINE = ANSWER_PATTERN  # the official DAPO reward's pattern; the last match wins
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
NUMBER = re.compile(r"(?<![\d)])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")  # "5-3" ends in 3, not -3
TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
TEXT_GROUP = re.compile(r"\\(?:text[a-z]*|mbox|mathrm|operatorname)\s*\{([^{}]*)\}")
# inside a \text{} beside the answer: another number, brackets, or a word of doubt ("12 \text{ (or 5)}")
HEDGE_IN_TEXT = re.compile(r"[\d()\[\],;?]|\b(?:or|and|not|maybe|perhaps|possibly|probably|either|unsure|sure|guess"
                           r"|think|approx\w*|about|roughly)\b", re.IGNORECASE)
THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # "1,000": one number, not the list {1, 0}
# math-verify's own LaTeX normalisation (units, \text{}, \left, malformed \frac12 ...), except that a
# \boxed{} inside the answer is not pulled out of it: "5 or \boxed{12}" must stay a hedge
WHOLE_ANSWER = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="none",
                                   equations=False)
ALTERNATIVE = re.compile(r"[,;]|\b(?:or|and)\b", re.IGNORECASE)
MAX_DIGITS = 200_000  # verify on 10^(10^5) takes 0.2 s, on 10^(10^7) 10 s, on 10^(10^10) forever
MAX_ANSWER_CHARS = 1000  # longer "answers" are rambling, not answers: string check only (3000 chars: 3 s to parse)
MAX_DEPTH = 16  # expression-tree depth; \frac{\frac{...}{2}}{2} takes 0.3 s at depth 15, 1.2 s at 17, > 15 s at 21
MATH_VERIFY_TIMEOUT = 5  # seconds per math-verify parse / comparison (its default), in reward workers only


def _timeout() -> int | None:
    """math-verify's timeout here: on only on the main thread of a reward worker (signal.alarm)."""
    return MATH_VERIFY_TIMEOUT if in_worker() and threading.current_thread() is threading.main_thread() else None


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
    """Content of the last \\boxed{...} / \\fbox{...}; None if there is none or it is cut off.

    Other boxes on the same line are alternatives, not earlier steps: "\\boxed{5} or \\boxed{12}"
    gives "5, 12" (two answers, as math-verify reads several boxes), which equals no single value."""
    matches = list(BOXED.finditer(text))
    last = _braced(text, matches[-1].end() - 1) if matches else None
    if last is None:
        return None
    line_start = text.rfind("\n", 0, matches[-1].start()) + 1
    same_line = [_braced(text, m.end() - 1) for m in matches[:-1] if m.start() >= line_start]
    answers = list(dict.fromkeys(_clean(c) for c in [*same_line, last] if c is not None))
    return last if len(answers) == 1 else ", ".join(answers)


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
    auto: answer_line if present, else boxed; dapo: the official scorer's raw answer (the last
    "Answer:" match in the last 300 characters); last_number: an "Answer:" line or \\boxed{} if
    the response has one (it is the stated final answer, judged whole), else the last
    integer/decimal/fraction of the text.
    """
    if mode not in MODES:
        raise ValueError(f"extract_answer: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    text = text or ""
    if mode == "dapo":
        return dapo_answer(text)
    if mode in ("answer_line", "auto", "last_number"):
        lines = ANSWER_LINE.findall(text)
        answer = _clean(lines[-1]) if lines else ""
        if answer or mode == "answer_line":
            return answer or None
    if mode in ("boxed", "auto", "last_number"):
        boxed = _last_boxed(text)
        if boxed is not None or mode != "last_number":
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
    """True when math-verify could take minutes or more on `expr` (in-process it has no timeout)."""
    try:
        return _depth(expr) > MAX_DEPTH or _digits(expr) > MAX_DIGITS
    except (OverflowError, RecursionError, ValueError, TypeError):
        return True


def _parsed(answer: str) -> list:
    """math-verify's parse of `answer`, inside $...$ when bare (it then reads LaTeX: \\sqrt8, 50\\%, sets).

    It extracts *some* expression from free text, which suits a trusted ground truth ("0 is the
    only possible value" -> 0), never a prediction: see `_whole`."""
    wrapped = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    result = parse(wrapped, parsing_timeout=_timeout()) or parse(answer, parsing_timeout=_timeout())
    return [item for item in result if not _too_costly(item)]


def _whole(answer: str) -> Any:
    """`answer` parsed as ONE expression (a number, a set, an equation ...), or None when the whole
    string is not one: "5 (or 12)" and "0, 1, 2, ..., 12" do not parse, "12 or 13" is {12, 13}."""
    text = _clean(answer)
    groups = TEXT_GROUP.findall(text)
    if text.strip() not in (f"\\text{{{g}}}" for g in groups) and any(HEDGE_IN_TEXT.search(g) for g in groups):
        return None  # units may sit in a \text{} beside the answer ("12 \text{ cm}"), a second answer may not
    if THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    latex = normalize_latex(text, WHOLE_ANSWER)
    try:  # as math-verify parses a LaTeX match, without its fallback to a part of the string
        expr = latex2sympy(latex, is_real=not should_treat_as_complex(latex), convert_degrees=False,
                           normalization_config=None)
    except Exception:
        return None
    return None if _too_costly(expr) else expr


@functools.lru_cache(maxsize=4096)
def _gold_forms(gold: str) -> tuple:
    """The ground truth parsed whole and as math-verify reads it: once per distinct gold string
    (the G samples of a prompt, and every step, share it; parsing is most of a comparison's cost)."""
    whole = _whole(gold) if len(gold) <= MAX_ANSWER_CHARS else None
    return tuple(([whole] if whole is not None else []) + _parsed(gold))


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when the whole of `predicted` is mathematically the gold answer (math-verify); never raises.

    >>> answers_match("\\\\frac{1}{2}", "0.5"), answers_match("\\\\sqrt8", "2\\\\sqrt2"), answers_match("3", "4")
    (True, True, False)
    >>> answers_match("5 (or 12)", "12"), answers_match("0, 1, 2, \\\\ldots, 12", "12")
    (False, False)
    """
    try:
        if not predicted or not str(predicted).strip() or not str(gold).strip():
            return False
        predicted, gold = str(predicted), str(gold)
        if _normalize(predicted) == _normalize(gold):
            return True
        if len(predicted) > MAX_ANSWER_CHARS:
            return False
        whole = _whole(predicted)
        if whole is None:
            return False
        gold_parsed = list(_gold_forms(gold))
        return bool(gold_parsed) and bool(verify(gold_parsed, [whole], timeout_seconds=_timeout()))
    except Exception:  # garbage in, False out: a reward must not crash the training step
        return False


def _gold(sample: Any) -> str:
    return sample["answer"] if isinstance(sample, dict) else sample.answer


def dapo_hedge(answer: str) -> bool:
    """True when an answer line offers alternatives that the official normalisation would hide.

    The DAPO scorer keeps only what follows the last "=", so "x = 5 or x = 12" reads 12. fipo_nb
    scores it incorrect: an alternative (or, and, a comma, a semicolon) and a number before that "=".

    >>> dapo_hedge("x = 5 or x = 12"), dapo_hedge("n=5, n=12"), dapo_hedge("x = 12"), dapo_hedge("2 + 3 = 5")
    (True, True, False, False)
    """
    head, equals, _ = answer.rpartition("=")
    return bool(equals) and bool(re.search(r"\d", head)) and bool(ALTERNATIVE.search(head))


def is_dapo_source(sample: Any) -> bool:
    """True for problems that verl scores with the DAPO scorer: data_source "math_dapo" or "aime..."
    (DAPO-Math-17k rows carry "math_dapo"). A file name standing in for a missing data_source
    (problem/answer rows: Problem.source is then the file's name) does not count."""
    if isinstance(sample, dict):
        source = sample.get("data_source")
    else:
        source = getattr(sample, "source", None)
        origin = str(getattr(sample, "id", "")).rpartition(":")[0]
        if source and source == origin:  # data.py's fallback: where the row came from, not a data_source
            return False
    return isinstance(source, str) and (source == "math_dapo" or source.startswith("aime"))


@dataclass
class MathReward:
    """Rule-based math reward: correct -> `correct`, else `incorrect` (DAPO: 1 / -1; or 1 / 0)."""

    correct: float = 1.0
    """Reward of a response whose extracted answer matches the ground truth."""
    incorrect: float = -1.0
    """Reward of any other response (wrong, no answer, empty); DAPO uses -1."""
    mode: str = "auto"
    """How to find and judge the answer: "dapo" = the official DAPO scorer for every problem; "auto" =
    the DAPO scorer for DAPO problems (`is_dapo_source`), else the Answer: line or \\boxed{} judged whole
    with math-verify; "answer_line", "boxed", "last_number": see `extract_answer`."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"MathReward: unknown mode {self.mode!r}; use one of {', '.join(MODES)}")

    def score(self, prompt: str, response: str, sample: Problem, *, truncated: bool = False) -> RewardResult:
        """Extract the answer from `response` and check it against sample.answer (or sample["answer"]).

        truncated: the response ran out of tokens (no stop token). It has no final answer, so in the modes
        that read an answer out of free text it is never correct ("...the expression 10 +" must not earn
        the reward for 10). The DAPO scorer ("dapo", and "auto" on DAPO problems) keeps the official
        behaviour: it reads the last 300 characters of whatever was written (docs/differences.md).
        """
        if self.mode == "dapo" or (self.mode == "auto" and is_dapo_source(sample)):
            official = dapo_score(response or "", str(_gold(sample)))
            extracted = None if official.pred == INVALID else official.pred
            raw = dapo_answer(response or "") or ""
            hedged = dapo_hedge(raw)
            correct = official.acc and not hedged
            extracted = raw.strip() if hedged else extracted  # the whole line, not the part the scorer kept
            return RewardResult(self.correct if correct else self.incorrect, correct, extracted)
        if truncated:
            return RewardResult(self.incorrect, False, None)
        extracted = extract_answer(response, self.mode)
        correct = answers_match(extracted, _gold(sample))
        return RewardResult(self.correct if correct else self.incorrect, correct, extracted)

    def __call__(self, prompt: str, response: str, sample: Problem) -> float:
        return self.score(prompt, response, sample).reward
