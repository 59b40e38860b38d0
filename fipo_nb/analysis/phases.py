"""Reasoning phases of a response and the segments it is made of, from its text.

The FIPO paper describes, from case studies, how responses change shape over training but
gives no automatic measure. These rules make its four phases countable, and cut a response into
segments so that a view can show *where* the reasoning changes phase.

Segments (`segments(text)`: character spans covering the text in order), one kind each:

    planning      what will be done, with no computation: the lead-in before any working, or a
                  "next, we need to find ..." sentence without numbers
    working       computation ("6 * 9 = 54") and the prose of a derivation
    result        a stated intermediate result, from its cue to the end of the sentence: "so x = 5",
                  "we get 42", "the area is 84", "which gives 12"
    verification  a verification move and the pass it opens: from its cue (re-checking, "let me
                  verify", substituting back, "wait,", another method, a sanity check) to the next
                  cue, the next answer, new work ("next, ...", "for the second part") or the end
    answer        a stated answer: an "Answer:" line, a \\boxed{...}, "the (final) answer is ..."

A verification cue counts only after the first *result*: a computed value ("= 54"), a stated
result or a stated answer. So a re-check before DAPO's final `Answer:` line counts as much as one
after a boxed answer, and "let me check the units" before any working does not.

Phases (`classify(text)`: the phase and the features that decided it):

    1 superficial planning     fewer than MIN_WORKING written-out operations ("6 * 9", "x = 4")
                               before the first stated answer (in all the text without one)
    2 linear execution         real working and no verification move after a result
    3 self-reflection          at least one verification move after a result, fewer than
                               MULTI_PASS passes that redo the working
    4 multi-pass verification  MULTI_PASS or more verification passes that each redo the working
                               (MIN_PASS_WORKING operations or more)

`summarize` aggregates a step's responses into shares per phase; `token_spans` maps segments onto
the tokens of a trace (whose pieces join to the exact text). The rules read English math prose;
they are heuristics, tested on hand-written responses of each phase, in DAPO's `Answer:` format
and in the boxed one, and on the hard cases between phases.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MIN_WORKING = 2  # operations before the answer below which a response is "superficial" (a one-operation
# problem, "4 + 5", solved in one line reads as phase 1 too: the rules are set for multi-step problems)
MIN_PASS_WORKING = 2  # operations a verification pass needs to count as a re-computation
MULTI_PASS = 2  # re-computing verification passes that make a response phase 4

PHASE_NAMES = {
    1: "superficial planning",
    2: "linear execution",
    3: "self-reflection",
    4: "multi-pass verification",
}

SEGMENT_KINDS = ("planning", "working", "result", "verification", "answer")
SEGMENT_DESCRIPTIONS = {
    "planning": "what will be done, before any computation",
    "working": "computation and the prose of the derivation",
    "result": "a stated intermediate result (so x = 5, we get 42, the area is 84)",
    "verification": "a verification move and the pass it opens (re-check, substitute back, wait, another method)",
    "answer": "a stated answer (Answer: line, \\boxed{}, the answer is ...)",
}
_CODE = {kind: code for code, kind in enumerate(SEGMENT_KINDS)}

ANSWER = re.compile(
    r"\\boxed\s*\{"
    r"|^[ \t*#>]*(?:final\s+)?answer\s*[:：]|(?<=[.!?] )(?:final\s+)?answer\s*[:：]"
    r"|\bthe\s+(?:final\s+)?answer\s+is\b"
    r"|\bso\s+the\s+(?:final\s+)?(?:result|answer)\s+is\b",
    re.IGNORECASE | re.MULTILINE,
)
_NUM = r"\$?\(?-?\d"
RESULT = re.compile(
    # "so x = 5", "therefore the total is 12", "thus 2x = 8"
    rf"\b(?:so|thus|therefore|hence)\b,?\s+(?:[^\s.,;:!?]+\s+){{0,6}}?"
    rf"(?:[=≈]|is|are|equals?|gives?|becomes?)\s*{_NUM}"
    rf"|\b(?:so|thus|therefore|hence)\b,?\s+[a-z]\s*=\s*{_NUM}"
    # "we get 42", "we find that x = 3"
    r"|\bwe\s+(?:get|have|find|obtain|see\s+that)\b[^.\n;]{0,40}?\d"
    # "the area is 84", "the total number of apples is 12"
    rf"|\b(?:the|its|their|our|his|her|each)\s+(?:[a-z]+\s+){{0,3}}?(?:is|are|equals|was|were|will\s+be)\s+"
    rf"(?:equal\s+to\s+|now\s+|then\s+)?{_NUM}"
    # "which gives 12", "this yields 7"
    rf"|\b(?:gives?|yields?|results?\s+in)\s+(?:us\s+)?{_NUM}",
    re.IGNORECASE,
)
COMPUTED = re.compile(r"[=≈]\s*\$?\(?-?\d")  # a computed value: "= 54" ends an intermediate result
VERIFY = re.compile(
    r"\b(?:double[- ]?check\w*|re-?check\w*|verif(?:y|ying|ied|ication)|sanity[- ]check\w*|cross[- ]check\w*)\b"
    r"|\blet(?:'s| me| us)\s+(?:also\s+|now\s+|quickly\s+)?"
    r"(?:verify|check|confirm|make\s+sure|re-?compute|re-?calculate|re-?derive|re-?do|go\s+back|look\s+again"
    r"|see\s+if|see\s+whether|test)\b(?!\s+(?:how|what|which|the\s+next)\b)"
    r"|\b(?:substitut\w*|plug\w*)\b[^.\n]{0,40}?\bback\b"
    r"|\b(?:another|a\s+different|an\s+alternative|a\s+second|one\s+more)\s+(?:way|method|approach)\b"
    r"|\balternatively\b"
    r"|\b(?:wait|hold\s+on)\b\s*[,.!:]"
    r"|\bsolv\w*\s+(?:it\s+|this\s+)?again\b|\bfrom\s+scratch\b|\bonce\s+more\b"
    r"|^[ \t*#>-]*check\s*[:：]|\bcheck(?:ing)?\s+(?:your|my|our|the|this|that)\s+(?:result|answer|work|calculation|solution)s?\b"
    r"|\bis\s+(?:this|that|it)\s+(?:right|correct)\b",
    re.IGNORECASE | re.MULTILINE,
)
# a written-out operation: numbers joined by an operator or an equals sign (LaTeX operators too)
NUMBER = r"(?:\d+(?:\.\d+)?|\\frac\{[^{}]*\}\{[^{}]*\}|[a-z]\b)"
WORKING = re.compile(
    rf"{NUMBER}\s*(?:[-+*/×÷^=]|\\times|\\cdot|\\div|\\le|\\ge|<|>)\s*\(?-?{NUMBER}", re.IGNORECASE
)
PLANNING = re.compile(
    r"\b(?:first|then|next|finally),?\s+(?:we|I)\s+(?:will|need\s+to|should|can|must)\b|\bstep\s+\d+\s*[:.]"
    r"|\bwe\s+need\s+to\b|\bthe\s+plan\b|\bapproach\b|\blet(?:'s| me| us)\s+(?:start|begin|break|think|first)\b",
    re.IGNORECASE,
)
# a sentence that turns to new work: it ends a verification pass
NEW_WORK = re.compile(
    r"\W*(?:next\b|moving\s+on\b"
    r"|now\s*,?\s*(?:we|let's|let\s+us|I)\s+(?:need|have|move|turn|find|compute|calculate|solve)\b"
    r"|for\s+the\s+(?:next|second|third|other|last|remaining)\s+(?:part|question|step)\b)",
    re.IGNORECASE,
)
_UNIT_BREAK = re.compile(r"(?:[.!?]+(?=\s)|\n)\s*")  # sentence ends and line ends, with the blanks after them
_LEAD_IN = re.compile(r"[^\d=+*/^×÷\\]*")  # words without numbers or operators: "But now, let me also solve it"


@dataclass(frozen=True)
class Segment:
    """Characters text[start:end] of one kind; cue_end: for a verification segment, where the cue
    that opened it ("Wait,", "Let me verify") ends."""

    start: int
    end: int
    kind: str
    cue_end: int | None = None


@dataclass(frozen=True)
class TokenSpan:
    """Tokens start..end-1 of one segment kind; opening: tokens start..opening-1 carry the
    verification cue (== start for other kinds)."""

    start: int
    end: int
    kind: str
    opening: int


@dataclass
class PhaseResult:
    phase: int  # 1..4
    features: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return PHASE_NAMES[self.phase]


@dataclass
class _Analysis:
    segments: list[Segment]
    answers: list[re.Match]
    first_result: int | None  # character offset where the first result ends
    result_count: int
    passes: list[tuple[int, int, int]]  # (start, cue end, end) of each verification pass


def _working(text: str) -> int:
    """Operations written out: "6 * 9 = 54" is one, "54 - 6 = 48, 48 / 2 = 24" two."""
    return len(WORKING.findall(text))


def _clause_start(text: str, unit_start: int, at: int) -> int:
    """Where a cue's clause starts: the sentence start when a few words without numbers stand
    before the cue ("But now, let me also solve it another way"), else the cue itself."""
    prefix = text[unit_start:at]
    return unit_start if _LEAD_IN.fullmatch(prefix) and len(prefix.split()) <= 8 else at


@dataclass(frozen=True)
class _Units:
    """Sentences and lines, each with the blanks after it, covering the text in order; and which
    one holds a character."""

    spans: list[tuple[int, int]]
    starts: list[int]

    @classmethod
    def of(cls, text: str) -> "_Units":
        spans, start = [], 0
        for m in _UNIT_BREAK.finditer(text):
            if m.end() > start and m.start() > start:
                spans.append((start, m.end()))
                start = m.end()
        if start < len(text):  # else a break at the very end: already in the last unit
            spans.append((start, len(text)))
        return cls(spans, [s for s, _ in spans])

    def holding(self, position: int) -> tuple[int, int]:
        return self.spans[max(bisect.bisect_right(self.starts, position) - 1, 0)]


def _stated_answers(text: str, units: _Units) -> list[re.Match]:
    """One answer per sentence: "So the answer is \\boxed{12}" states one answer."""
    answers = []
    for m in ANSWER.finditer(text):
        if not answers or units.holding(m.start()) != units.holding(answers[-1].start()):
            answers.append(m)
    return answers


def _first_result_end(results: list[re.Match], computed: list[re.Match], answers: list[re.Match]) -> int | None:
    """Where the first result ends: a stated result, a computed value, or the start of a stated answer."""
    ends = [m.end() for m in (*results, *computed)] + [m.start() for m in answers]
    return min(ends) if ends else None


def _paint(kinds: bytearray, start: int, end: int, kind: str) -> None:
    kinds[start:end] = bytes([_CODE[kind]]) * (end - start)


def _paint_planning_and_working(kinds: bytearray, text: str, units: _Units) -> None:
    """Each sentence is working when it computes or states a result, else planning when no work came
    before it or it reads as a plan, else working (the prose of a derivation)."""
    seen_work = False
    for start, end in units.spans:
        piece = text[start:end]
        work = bool(WORKING.search(piece) or COMPUTED.search(piece) or RESULT.search(piece))
        seen_work |= work
        planning = not work and (not seen_work or bool(PLANNING.search(piece)))
        _paint(kinds, start, end, "planning" if planning else "working")


def _paint_results(kinds: bytearray, text: str, units: _Units, results: list[re.Match]) -> None:
    """The last result stated in each sentence runs from its clause to the end of the sentence."""
    concluding = {units.holding(m.start()): m for m in results}
    for (unit_start, unit_end), m in concluding.items():
        _paint(kinds, _clause_start(text, unit_start, m.start()), unit_end, "result")


def _verification_passes(text: str, units: _Units, answers: list[re.Match],
                         first_result: int | None) -> list[tuple[int, int, int]]:
    """(start, cue end, end) of each verification pass: a cue after the first result opens one, which
    runs to the next cue, answer or new work; cues with nothing but words between them are one move
    ("Wait, let me check")."""
    answer_units = sorted({units.holding(m.start())[0] for m in answers})
    cues = [m for m in VERIFY.finditer(text) if first_result is not None and m.start() >= first_result]
    opened: list[list[int]] = []  # [start, cue end]
    for m in cues:
        unit_start, _ = units.holding(m.start())
        begin = _clause_start(text, unit_start, m.start())
        if opened and not re.search(r"\d", text[opened[-1][1]:begin]):
            opened[-1][1] = max(opened[-1][1], m.end())  # the same move, said twice
            continue
        opened.append([begin, m.end()])
    new_work = [start for start, _ in units.spans if NEW_WORK.match(text, start)]
    passes = []
    for i, (begin, cue_end) in enumerate(opened):
        stop = opened[i + 1][0] if i + 1 < len(opened) else len(text)
        later = bisect.bisect_right(answer_units, begin)
        if later < len(answer_units):
            stop = min(stop, answer_units[later])
        turn = bisect.bisect_right(new_work, cue_end)
        if turn < len(new_work):
            stop = min(stop, new_work[turn])
        passes.append((begin, cue_end, stop))
    return passes


def _paint_answers(kinds: bytearray, text: str, units: _Units, pass_starts: list[int]) -> None:
    """A stated answer runs to the end of its line or sentence, or to a verification pass after it."""
    for m in ANSWER.finditer(text):
        unit_start, unit_end = units.holding(m.start())
        following = bisect.bisect_right(pass_starts, m.start())
        if following < len(pass_starts):
            unit_end = min(unit_end, pass_starts[following])
        _paint(kinds, _clause_start(text, unit_start, m.start()), unit_end, "answer")


def _segments_of(kinds: bytearray, passes: list[tuple[int, int, int]]) -> list[Segment]:
    """Runs of one kind; a run of verification is cut at each pass start (passes can be adjacent), and
    each piece knows where its cue ends (at its start: the rest of a pass after an answer inside it)."""
    pass_starts = [begin for begin, _, _ in passes]
    cue_ends = {begin: cue_end for begin, cue_end, _ in passes}
    found = []
    for run in re.finditer(rb"(.)\1*", bytes(kinds), re.DOTALL):
        kind = SEGMENT_KINDS[run.group(1)[0]]
        if kind != "verification":
            found.append(Segment(run.start(), run.end(), kind))
            continue
        inner = pass_starts[bisect.bisect_right(pass_starts, run.start()):bisect.bisect_left(pass_starts, run.end())]
        bounds = [run.start(), *inner, run.end()]
        found.extend(Segment(a, b, kind, cue_ends.get(a, a)) for a, b in zip(bounds, bounds[1:]))
    return found


def _analyse(text: str) -> _Analysis:
    """Every character gets one kind, painted in order of precedence (planning or working, then
    results, verification passes, answers); the runs of one kind are the segments."""
    units = _Units.of(text)
    answers = _stated_answers(text, units)
    results = list(RESULT.finditer(text))
    computed = list(COMPUTED.finditer(text))
    first_result = _first_result_end(results, computed, answers)
    passes = _verification_passes(text, units, answers, first_result)

    kinds = bytearray(len(text))  # one kind code per character
    _paint_planning_and_working(kinds, text, units)
    _paint_results(kinds, text, units, results)
    for begin, _, stop in passes:
        _paint(kinds, begin, stop, "verification")
    _paint_answers(kinds, text, units, [begin for begin, _, _ in passes])
    return _Analysis(_segments_of(kinds, passes), answers, first_result, len(results) + len(computed), passes)


def segments(text: str) -> list[Segment]:
    """The segments of a response: (start, end, kind) character spans covering `text` in order.

    >>> text = "We need 6 * 9. So x = 54.\\nAnswer: 54"
    >>> [(s.kind, text[s.start:s.end]) for s in segments(text)]
    [('working', 'We need 6 * 9. '), ('result', 'So x = 54.\\n'), ('answer', 'Answer: 54')]
    """
    return _analyse(text or "").segments


def classify(response_text: str) -> PhaseResult:
    """The reasoning phase of one response (1..4) and the features that decided it.

    >>> classify("Step 1: we need to add them. Answer: 12").phase
    1
    >>> classify("3 + 4 = 7\\n7 * 2 = 14\\nAnswer: 14").phase
    2
    >>> classify("3 + 4 = 7, so 7 * 2 = 14. Let me verify: 14 / 2 = 7 and 7 - 4 = 3. Answer: 14").phase
    3
    """
    text = response_text or ""
    analysis = _analyse(text)
    answers = analysis.answers
    first = answers[0].start() if answers else len(text)
    last = answers[-1].start() if answers else len(text)
    recomputing = [(b, c, e) for b, c, e in analysis.passes if _working(text[b:e]) >= MIN_PASS_WORKING]
    features = {
        "has_answer": bool(answers),
        "answer_count": len(answers),
        "first_answer_at": round(first / len(text), 3) if text else 0.0,
        "results": analysis.result_count,
        "first_result_at": round(analysis.first_result / len(text), 3) if analysis.first_result is not None else None,
        "working_before_answer": _working(text[:first]),
        "working_total": _working(text),
        "verification_moves": len(analysis.passes),
        "moves_before_last_answer": sum(b < last for b, _, _ in analysis.passes),
        "verification_passes": len(recomputing),
        "planning_phrases": len(PLANNING.findall(text[:first])),
        "chars": len(text),
    }
    if features["working_before_answer"] < MIN_WORKING:
        phase = 1
    elif not analysis.passes:
        phase = 2
    elif len(recomputing) >= MULTI_PASS:
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


# ---------------------------------------------------------------------- segments on tokens


def token_starts(pieces: list[str]) -> list[int]:
    """Character offset at which each token's piece starts in "".join(pieces)."""
    starts, at = [], 0
    for piece in pieces:
        starts.append(at)
        at += len(piece)
    return starts


def token_spans(pieces: list[str], found: list[Segment] | None = None) -> list[TokenSpan]:
    """Segments of "".join(pieces) as token spans, covering every token in order.

    A token belongs to the segment of its first visible character (" Wait" opens a verification,
    though its space ends the sentence before); a token of blanks, or an empty piece (the first
    byte of a split character), to the segment of its first character or of the next one.
    A verification span's `opening` marks the tokens that overlap its cue.

    >>> [(s.kind, s.start, s.end) for s in token_spans(["3", " +", " 4", " =", " 7", ".", " Wait", ",", " 7"])]
    [('working', 0, 6), ('verification', 6, 9)]
    """
    text = "".join(pieces)
    found = segments(text) if found is None else found
    if not pieces:
        return []
    if not found:
        return [TokenSpan(0, len(pieces), "working", 0)]
    bounds = [s.start for s in found]
    anchors, at = [], 0  # the first visible character of each token (its first one if all blank)
    for piece in pieces:
        visible = len(piece) - len(piece.lstrip())
        anchors.append(min(at + visible if piece.strip() else at, len(text) - 1))
        at += len(piece)
    owner = [max(bisect.bisect_right(bounds, a) - 1, 0) for a in anchors]
    spans, first = [], 0
    for i in range(1, len(pieces) + 1):
        if i == len(pieces) or owner[i] != owner[first]:
            seg = found[owner[first]]
            opening = first
            if seg.cue_end is not None:
                while opening < i and anchors[opening] < seg.cue_end:
                    opening += 1
            spans.append(TokenSpan(first, i, seg.kind, opening))
            first = i
    return spans
