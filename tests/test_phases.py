"""fipo_nb.phases on hand-written responses: one per phase, and the hard cases between them."""

from __future__ import annotations

import doctest

import pytest

import fipo_nb.phases
from fipo_nb.phases import classify, summarize

SUPERFICIAL = """To solve this problem, first we will identify what is being asked. Then we need to
consider the relevant formula. Step 1: understand the problem. Step 2: apply the method.
Step 3: compute the result. Following this plan carefully, we obtain the final value.
Answer: 42"""

LINEAR = """The rectangle has sides 6 and 9, so its area is 6 * 9 = 54.
The triangle cut off has legs 3 and 4, so its area is 3 * 4 / 2 = 6.
The remaining area is 54 - 6 = 48.
Answer: 48"""

REFLECTION = """We have 2x + 3 = 11, so 2x = 8 and x = 4.
Then x^2 = 16.
Answer: 16

Let me verify by substituting back: 2 * 4 + 3 = 11, which matches the equation. So x^2 = 16 is right."""

MULTI_PASS = r"""Let n be the number of apples. From the first condition, 3n + 5 = 26, so 3n = 21 and n = 7.
Each bag holds 7 / 7 = 1 kilogram... total weight is 7 * 2 = 14.
Answer: 14

Wait, let me double-check the first condition. 3 * 7 = 21 and 21 + 5 = 26. Correct.
The weight: 7 * 2 = 14 kilograms, consistent.

Let me also solve it another way. Removing the 5 extra gives 26 - 5 = 21 apples in full rows,
and 21 / 3 = 7 rows. Then 7 * 2 = 14 again.

Finally, let me recompute from scratch: 26 - 5 = 21, 21 / 3 = 7, 7 * 2 = 14.
So the answer is \boxed{14}."""


@pytest.mark.parametrize(
    "text, phase",
    [(SUPERFICIAL, 1), (LINEAR, 2), (REFLECTION, 3), (MULTI_PASS, 4)],
    ids=["superficial", "linear", "reflection", "multi-pass"],
)
def test_one_example_per_phase(text, phase):
    result = classify(text)
    assert result.phase == phase, result.features


def test_features_explain_the_decision():
    f = classify(MULTI_PASS).features
    assert f["has_answer"] and f["answer_count"] >= 2
    assert f["working_before_answer"] >= 2 and f["verification_moves"] >= 3 and f["verification_passes"] >= 2
    assert classify(SUPERFICIAL).features["planning_phrases"] >= 3
    assert classify(LINEAR).features["verification_moves"] == 0


def test_verification_words_before_the_answer_do_not_make_reflection():
    text = "Let me check the units first. 5 * 3 = 15 and 15 + 2 = 17.\nAnswer: 17"
    assert classify(text).phase == 2


def test_a_made_up_answer_after_one_equation_is_still_superficial():
    assert classify("We need to find the sum. The sum is 10 + 5 = 16.\nAnswer: 16").phase == 1


def test_working_without_an_answer_is_linear_execution():
    assert classify("First 12 * 4 = 48. Then 48 - 9 = 39. Then 39 / 3 = 13, and so on").phase == 2


def test_a_restated_answer_without_rework_is_reflection_not_multi_pass():
    text = LINEAR + "\n\nWait, is that right? Yes. Let me check again: yes, it is 48.\nAnswer: 48"
    result = classify(text)
    assert result.phase == 3 and result.features["verification_passes"] < 2


def test_one_recomputation_is_reflection_two_are_multi_pass():
    one = LINEAR + "\nLet me verify: 6 * 9 = 54, 54 - 6 = 48. Correct."
    two = one + "\nAlternatively, count the pieces: 3 * 4 = 12 and 12 / 2 = 6, so 54 - 6 = 48 again."
    assert classify(one).phase == 3
    assert classify(two).phase == 4


def test_boxed_and_the_answer_is_count_as_answers():
    assert classify("2 + 2 = 4 and 4 * 3 = 12, so the answer is 12.").features["has_answer"]
    assert classify(r"1 + 1 = 2, 2 * 5 = 10: \boxed{10}").features["has_answer"]


def test_empty_and_garbage_text_are_phase_one():
    assert classify("").phase == 1
    assert classify("zR^2'NTF5m 'a|1gGH]X+DM7").phase == 1


def test_summarize_gives_shares_per_phase():
    summary = summarize([SUPERFICIAL, LINEAR, LINEAR, MULTI_PASS])
    assert summary["phase/1_frac"] == 0.25 and summary["phase/2_frac"] == 0.5
    assert summary["phase/3_frac"] == 0.0 and summary["phase/4_frac"] == 0.25
    assert summary["phase/mean"] == pytest.approx((1 + 2 + 2 + 4) / 4)
    assert summarize([]) == {}


def test_doctests_in_phases_pass():
    assert doctest.testmod(fipo_nb.phases).failed == 0
