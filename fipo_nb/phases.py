"""Reasoning phases of a response, from its text: the paper's four phases, measured by rules.

The FIPO paper describes, from case studies, how responses change shape over training but
gives no automatic measure. These rules turn its four phases into something countable:

    1 superficial planning     little actual working (fewer than MIN_WORKING written-out
                               operations, "6 * 9 = 54", before the first answer, or in all of
                               a response without one): an outline and, maybe, a made-up answer.
    2 linear execution         real working, then it stops: no verification move after the
                               first answer (a response with working but no answer is here too).
    3 self-reflection          after the first answer, at least one verification move
                               (re-checking, substituting back, "wait", another method), but
                               fewer than MULTI_PASS re-computations.
    4 multi-pass verification  after the first answer, MULTI_PASS or more verification segments
                               that each redo the working (MIN_PASS_WORKING operations).

`classify` returns the phase with the features behind it, so a reader can see why;
`summarize` aggregates a step's responses into shares per phase. The rules read English
math prose (what Qwen and DAPO-style prompts produce); they are heuristics, tested on
hand-written examples of each phase and of the hard cases between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIN_WORKING = 2  # operations before the answer below which a response is "superficial"
MIN_PASS_WORKING = 2  # operations a verification segment needs to count as a re-computation
MULTI_PASS = 2  # re-computing verification segments that make a response phase 4

PHASE_NAMES = {
    1: "superficial planning",
    2: "linear execution",
    3: "self-reflection",
    4: "multi-pass verification",
}

ANSWER = re.compile(
    r"\\boxed\s*\{"
    r"|^[ \t*#>]*(?:final\s+)?answer\s*[:：]"
    r"|\bthe\s+(?:final\s+)?answer\s+is\b"
    r"|\bso\s+the\s+(?:final\s+)?(?:result|answer)\s+is\b",
    re.IGNORECASE | re.MULTILINE,
)
VERIFY = re.compile(
    r"\b(?:double[- ]?check\w*|re-?check\w*|verif(?:y|ying|ied|ication)|sanity[- ]check|cross[- ]check\w*)\b"
    r"|\blet(?:'s| me| us)\s+(?:check|confirm|make sure|re-?compute|re-?calculate|re-?derive|redo)\b"
    r"|\b(?:substitut\w*|plug\w*)\b[^.\n]{0,40}\b(?:back|into|in)\b"
    r"|\b(?:another|a different|an alternative)\s+(?:way|method|approach)\b|\balternatively\b"
    r"|\bwait\b\s*[,.!:]"
    r"|\bsolv\w*\s+(?:it\s+)?again\b|\bfrom scratch\b",
    re.IGNORECASE,
)
# a line of working: numbers joined by an operator or an equals sign (LaTeX operators too)
NUMBER = r"(?:\d+(?:\.\d+)?|\\frac\{[^{}]*\}\{[^{}]*\}|[a-z]\b)"
WORKING = re.compile(
    rf"{NUMBER}\s*(?:[-+*/×÷^=]|\\times|\\cdot|\\div|\\le|\\ge|<|>)\s*\(?-?{NUMBER}", re.IGNORECASE
)
PLANNING = re.compile(
    r"\b(?:first|then|next|finally),?\s+(?:we|I)\s+(?:will|need to|should|can)\b|\bstep\s+\d+\s*[:.]"
    r"|\bwe need to\b|\bthe plan\b|\bapproach\b",
    re.IGNORECASE,
)


@dataclass
class PhaseResult:
    phase: int  # 1..4
    features: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return PHASE_NAMES[self.phase]


def _working(text: str) -> int:
    """Operations written out: "6 * 9 = 54" is one, "54 - 6 = 48, 48 / 2 = 24" two."""
    return len(WORKING.findall(text))


def classify(response_text: str) -> PhaseResult:
    """The reasoning phase of one response (1..4) and the features that decided it.

    >>> classify("Step 1: we need to add them. Answer: 12").phase
    1
    >>> classify("3 + 4 = 7\\n7 * 2 = 14\\nAnswer: 14").phase
    2
    """
    text = response_text or ""
    answers = list(ANSWER.finditer(text))
    first = answers[0].start() if answers else len(text)
    before, after = text[:first], text[first:]
    # verification segments: the text after the first answer, cut at every verification cue
    cues = list(VERIFY.finditer(after))
    cut = [m.start() for m in cues] + [len(after)]
    segments = [after[cut[i]:cut[i + 1]] for i in range(len(cues))]
    passes = sum(_working(s) >= MIN_PASS_WORKING for s in segments)
    features = {
        "has_answer": bool(answers),
        "answer_count": len(answers),
        "first_answer_at": round(first / len(text), 3) if text else 0.0,
        "working_before_answer": _working(before),
        "working_total": _working(text),
        "verification_moves": len(cues),
        "verification_passes": passes,
        "planning_phrases": len(PLANNING.findall(before)),
        "chars": len(text),
    }
    if features["working_before_answer"] < MIN_WORKING:
        phase = 1
    elif not cues:
        phase = 2
    elif passes >= MULTI_PASS:
        phase = 4
    else:
        phase = 3
    return PhaseResult(phase, features)


def summarize(texts) -> dict[str, float]:
    """Share of each phase among a step's responses, and the mean verification moves and phase."""
    results = [classify(t) for t in texts]
    if not results:
        return {}
    n = len(results)
    summary = {f"phase/{p}_frac": sum(r.phase == p for r in results) / n for p in PHASE_NAMES}
    summary["phase/mean"] = sum(r.phase for r in results) / n
    summary["phase/verification_moves_mean"] = sum(r.features["verification_moves"] for r in results) / n
    return summary
