"""fipo_nb.rewards.dapo: the official DAPO scorer (verl's math_dapo.py), checked against cases
worked out by hand from reading that code."""

from __future__ import annotations

import doctest

import pytest

import fipo_nb.rewards.dapo
from fipo_nb.rewards.dapo import DapoScore, dapo_answer, dapo_score, normalize_final_answer


def test_doctests_pass():
    assert doctest.testmod(fipo_nb.rewards.dapo).failed == 0


@pytest.mark.parametrize(
    "answer, normalised",
    [
        ("12", "12"),
        (" 12 ", "12"),  # strip() last
        ("x = 12", "12"),  # only the text after the last "="
        ("a = b = 7", "7"),
        ("$12$", "12"),  # the first $...$ is kept, then every $ dropped
        ("the value $12$ here", "12"),  # "thevalue$12$here" -> "$12$" (the text around the first $...$ goes)
        ("\\$12", "12"),  # the substitution "\$" -> ""
        ("$12.$", "12"),  # ".$" -> "$" then "$12$": the only trailing period that goes
        ("12.", "12."),  # a bare trailing period stays
        ("1,000", "1000"),  # digits and commas only: commas dropped
        ("1, 000", "1000"),  # spaces go first (" " -> ""), then the same
        ("1,000.5", "1,000.5"),  # not all digits once commas are gone: left alone
        ("12 cm", "12"),  # "12cm" -> "cm" removed
        ("12 \\text{ cm}", "12"),  # "12\text{cm}" -> "12\text{}" -> "\text{}" removed
        ("5 \\text{m}", "5"),  # "\text{m}" -> "\text{}" -> removed
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("\\text{(B)}", "(B)"),
        ("\\textbf{7}", "7"),
        ("\\overline{3}", "3"),
        ("\\boxed{12}", "12"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # \boxed{...} runs to the LAST "}"
        ("\\frac12", "\\frac{1}{2}"),  # \fracab -> \frac{a}{b}
        ("\\frac123", "\\frac{1}{2}3"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\dfrac{1}{2}", "\\dfrac{1}{2}"),  # no \dfrac -> \frac: it differs from \frac{1}{2}
        ("10\\%", "10\\%"),
        ("a 12", "12"),  # the substitution "a " -> ""
        ("issue 5", "is5"),  # "issue5", then the removed expression "sue"
        ("5 (or 12)", "5(or12)"),
        ("0, 1, 2, ..., 12", "0,1,2,...,12"),
        ("0, 1, 2, \\ldots, 12", "01212"),  # "0,1,2,\ldots,12" -> "0,1,2,,12": all digits once commas go
        ("3 \\text{ and } 4", "34"),  # "3\text{and}4" -> "3,4" -> all digits: "34"
        ('"yes"', "yes"),
        ("[INVALID]", "[INVALID]"),
    ],
)
def test_normalize_final_answer_by_hand(answer, normalised):
    assert normalize_final_answer(answer) == normalised


TAIL = "x" * 400  # more than the 300-character window


@pytest.mark.parametrize(
    "response, gold, score, pred",
    [
        ("so the total is 12.\nAnswer: 12", "12", 1.0, "12"),
        ("Answer: 12 cm", "12", 1.0, "12"),
        ("answer :   $12$", "12", 1.0, "12"),  # (?i), \s* around the colon
        ("Final Answer:\n12", "12", 1.0, "12"),  # \s* runs onto the next line
        ("Answer: x = 12", "12", 1.0, "12"),
        ("Answer: 12", "$12$", 1.0, "12"),  # the ground truth is normalised too
        ("Answer: 12.", "12", -1.0, "12."),  # a bare trailing period makes it wrong
        ("Answer: 1/2", "0.5", -1.0, "1/2"),  # strings, no maths
        ("Answer: \\frac{1}{2}", "\\frac12", 1.0, "\\frac{1}{2}"),
        ("Answer: 5 (or 12)", "12", -1.0, "5(or12)"),  # hedges are wrong
        ("Answer: 100 (not sure; 12)", "12", -1.0, "100(notsure;12)"),
        ("Answer: 0, 1, 2, ..., 12", "12", -1.0, "0,1,2,...,12"),  # lists are wrong
        ("Answer: 12\nwait, no.\nAnswer: 13", "12", -1.0, "13"),  # the last match wins
        ("Answer: Answer: 12", "12", -1.0, "Answer:12"),  # matches do not overlap: one match, "Answer: 12"
        ("no answer line, just 12", "12", -1.0, "[INVALID]"),
        ("\\boxed{12}", "12", -1.0, "[INVALID]"),  # no Answer: line, no box fallback (as verl 0.5)
        ("Answer: 12\n" + TAIL, "12", -1.0, "[INVALID]"),  # an early answer line is not seen
        ("Answer: 12\n" + "x" * 289, "12", 1.0, "12"),  # 300 characters exactly: seen
        ("Answer: 12\n" + "x" * 290, "12", -1.0, "[INVALID]"),  # the window starts inside "Answer"
        (TAIL + "\nAnswer: 12", "12", 1.0, "12"),  # a long response with its answer at the end
    ],
)
def test_dapo_score_by_hand(response, gold, score, pred):
    assert dapo_score(response, gold) == DapoScore(score, score > 0, pred)


@pytest.mark.parametrize(
    "response, gold, score, pred",
    [
        ("so \\boxed{12}", "12", 1.0, "12"),
        ("so \\boxed{ 12}", "12", -1.0, " 12"),  # no normalisation on this path
        ("so $\\boxed{12}$ cm", "12", 1.0, "12"),
        ("\\boxed{12}" + "x" * 100, "12", -1.0, None),  # only the last 100 characters
        ("\\boxed{5} then \\boxed{12}", "12", 1.0, "12"),  # the last box
        ("\\boxed{1\\}2}", "1\\", 1.0, "1\\"),  # braces counted naively: "\}" closes the box
        ("Answer: 12", "12", -1.0, None),
        ("cut off \\boxed{12", "12", -1.0, None),
    ],
)
def test_strict_box_verify_by_hand(response, gold, score, pred):
    assert dapo_score(response, gold, strict_box_verify=True) == DapoScore(score, score > 0, pred)


def test_dapo_answer_is_the_raw_last_match_in_the_window():
    assert dapo_answer("Answer: 3\nthen\nANSWER: $\\frac{1}{2}$ cm") == "$\\frac{1}{2}$ cm"
    assert dapo_answer("Answer: 12\n" + TAIL) is None
    assert dapo_answer("") is None


PIECES = ["Answer:", "answer :", "ANSWER:\n", " ", "\n", "12", "1,000", "(or 12)", "$", "\\$", "\\boxed{", "}", "{",
          "\\text{", "\\textbf{", "\\overline{", "cm", "dollars", "^\\circ", "^{\\circ}", "\\frac", "\\sqrt", "ab", "x = ",
          "=", ".", ",", "{,}", '"', "\\dots", "\\ldots", "a ", "an ", "mbox", "\\text{and}", "\\text{m}", "\\text{s}",
          "\\mathrm{th}", "\\;", "\\ ", "issue", "²", "-", "\\dfrac{1}{2}", "x" * 150]


def test_matches_the_real_verl_scorer_where_verl_is_installed():
    official = pytest.importorskip("verl.utils.reward_score.math_dapo")  # verl's own environment only
    import random

    rng = random.Random(0)
    checked = 0
    for _ in range(5000):
        response = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 16)))
        gold = rng.choice(["12", "1000", "\\frac{1}{2}", "(B)", "".join(rng.choice(PIECES) for _ in range(2))])
        assert normalize_final_answer(response) == official.normalize_final_answer(response)
        if dapo_answer(response) is None:
            continue  # verl >= 0.9 falls back to \boxed{} here; the FIPO fork (verl 0.5) does not
        reference = official.compute_score(response, gold)
        assert dapo_score(response, gold) == DapoScore(reference["score"], reference["acc"], reference["pred"])
        checked += 1
    assert checked > 1000
