"""The official DAPO math scorer, reimplemented: verl's `verl/utils/reward_score/math_dapo.py`.

This is the reward of the DAPO and FIPO papers (verl's `default_compute_score` sends every row
whose data_source is "math_dapo" or starts with "aime" here). Its behaviour, step by step:

1. only the last 300 characters of the response are looked at;
2. the answer is the last match of `(?i)Answer\\s*:\\s*([^\\n]+)` there ("[INVALID]" if none);
3. prediction and ground truth both go through `normalize_final_answer` (text after the last
   "=", fixed substitutions, units and words removed, \\text{} / \\boxed{} unwrapped, $ dropped,
   "1,000" -> "1000");
4. the two strings are compared for equality: score 1.0 if equal, else -1.0. No maths.

So "5 (or 12)", "0, 1, 2, ..., 12" and an Answer: line more than 300 characters before the end
are all wrong, while "12 cm", "$12$" and "x = 12" are right for 12; "1/2" is wrong for 0.5.

    >>> normalize_final_answer("$\\\\boxed{1,000}$ dollars.")
    '1000'
    >>> dapo_score("...so we get\\nAnswer: 12 cm", "12")
    DapoScore(score=1.0, acc=True, pred='12')
    >>> dapo_score("Answer: 5 (or 12)", "12").score
    -1.0

`strict_box_verify=True` is the official alternative path (off in the recipe): the last
`\\boxed{...}` within the last 100 of those 300 characters, compared *unnormalised* with the
ground truth. (Its `pause_tokens_index` variant, which no shipped recipe uses, is not provided.)

This is the scorer as of verl 0.5 (the base of the official FIPO fork; unchanged from the DAPO
recipe's release to verl's 2026-01 main). Later verl releases (0.9) also fall back to the last
`\\boxed{}` when there is no "Answer:" line; the FIPO and DAPO runs did not, and neither does this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DapoScore", "dapo_answer", "dapo_score", "normalize_final_answer"]

WINDOW = 300  # characters of the response the scorer reads (verl: "the longest answer in MATH-500 has 159")
STRICT_BOX_WINDOW = 100  # characters of those the strict box path reads
INVALID = "[INVALID]"  # the official prediction when no answer is found (normalised like any answer)
ANSWER_PATTERN = re.compile(r"(?i)Answer\s*:\s*([^\n]+)")

# (before, after) pairs replaced in this order, as plain substrings (not regexes)
SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
# substrings deleted in this order (units, filler words, spacing commands); "\\text{\ns}" holds a newline
REMOVED_EXPRESSIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue", "points",
    "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges", "students",
    "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
    "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)
# regex rewrites in this order: keep the first $...$ of a line, unwrap \text{} \textbf{} \overline{}
# (up to the first "}") and \boxed{} (up to the last "}"), then \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a}
REWRITES = tuple((re.compile(pattern), replacement) for pattern, replacement in (
    (r".*?\$(.*?)\$.*", r"$\1$"),
    (r"\\text\{(.*?)\}", r"\1"),
    (r"\\textbf\{(.*?)\}", r"\1"),
    (r"\\overline\{(.*?)\}", r"\1"),
    (r"\\boxed\{(.*)\}", r"\1"),
    (r"frac([^{])(.)", r"frac{\1}{\2}"),
    (r"sqrt([^{])", r"sqrt{\1}"),
))


def normalize_final_answer(answer: str) -> str:
    """The official normalisation of a final answer (prediction and ground truth alike).

    >>> normalize_final_answer("x = \\\\frac12"), normalize_final_answer("\\\\text{(B)}"), normalize_final_answer("90^\\\\circ")
    ('\\\\frac{1}{2}', '(B)', '90')
    """
    answer = answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in REMOVED_EXPRESSIONS:
        answer = answer.replace(expression, "")
    for pattern, replacement in REWRITES:
        answer = pattern.sub(replacement, answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():  # str.isdigit, as the official code: "1,000" -> "1000"
        answer = answer.replace(",", "")
    return answer.strip()


def dapo_answer(response: str) -> str | None:
    """The official scorer's raw answer: the last `Answer:` match in the last 300 characters, or None."""
    matches = ANSWER_PATTERN.findall(response[-WINDOW:])
    return matches[-1] if matches else None


def _last_boxed_content(text: str) -> str | None:
    """Content of the last "\\boxed{" group, braces counted naively (no escapes), as the official code."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for index in range(start, len(text)):
        depth += text[index] == "{"
        depth -= text[index] == "}"
        if text[index] == "}" and depth == 0:
            return text[start + len("\\boxed{"): index]
    return None  # never closed: cut off


@dataclass(frozen=True)
class DapoScore:
    """The official scorer's result: the same three entries as its dict."""

    score: float
    """1.0 if correct, else -1.0."""
    acc: bool
    """Correct or not."""
    pred: str | None
    """The normalised prediction ("[INVALID]" when no Answer: line was found; None when the strict
    box path found no box)."""


def dapo_score(response: str, ground_truth: str, *, strict_box_verify: bool = False) -> DapoScore:
    """Score `response` against `ground_truth` exactly as verl's math_dapo.compute_score."""
    window = response[-WINDOW:]
    if strict_box_verify:
        pred = _last_boxed_content(window[-STRICT_BOX_WINDOW:])
        correct = pred == ground_truth  # no normalisation on this path
    else:
        answer = dapo_answer(response)
        pred = normalize_final_answer(INVALID if answer is None else answer)
        correct = pred == normalize_final_answer(ground_truth)
    return DapoScore(1.0 if correct else -1.0, correct, pred)
