"""fipo_nb.phases on hand-written responses: each phase in DAPO's format (a final `Answer:` line),
in the boxed format and in neither, the hard cases between phases, segments and their token spans."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fipo_nb.analysis.phases
from fipo_nb.phases import SEGMENT_KINDS, classify, segments, summarize, token_spans

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

# DAPO's format: the prompt asks for "Answer: $Answer" on the last line, so every re-check comes
# after an intermediate result and before the only answer marker.
DAPO = {
    1: """I need to find how many apples are left. First we will count the apples, then we will
subtract the ones given away. This gives the number that is left.
Answer: 7""",
    2: """Tom has 3 bags of 4 apples, so he has 3 * 4 = 12 apples.
He gives away 5, so 12 - 5 = 7 apples are left.
Answer: 7""",
    3: """Tom has 3 bags of 4 apples, so he has 3 * 4 = 12 apples.
He gives away 5, so 12 - 5 = 7 apples are left.
Let me double-check: 3 * 4 = 12 and 12 - 5 = 7. Yes, that is right.
Answer: 7""",
    4: """The semi-perimeter is s = (13 + 14 + 15) / 2 = 21.
By Heron's formula the area is sqrt(21 * 8 * 7 * 6) = sqrt(7056) = 84.
Let me verify with another method: the altitude to the side 14 splits it into 5 and 9, and the
altitude is sqrt(13^2 - 5^2) = 12. Then the area is 14 * 12 / 2 = 84, the same.
Wait, let me also check the other side: 9^2 + 12^2 = 81 + 144 = 225 = 15^2. Correct.
Finally, I recompute from scratch: 13 + 14 + 15 = 42, 42 / 2 = 21, 21 * 8 * 7 * 6 = 7056 = 84^2.
Answer: 84""",
}

BOXED = {
    1: r"""To find the total, we need to add the costs. First we will list the items, then we will
add them up, and finally we will state the total. The total cost is \boxed{25}.""",
    2: r"""Each box holds 6 eggs and there are 4 boxes, so there are 6 * 4 = 24 eggs.
Half are used: 24 / 2 = 12 eggs remain.
So the answer is \boxed{12}.""",
    3: r"""Each box holds 6 eggs and there are 4 boxes, so there are 6 * 4 = 24 eggs.
Half are used: 24 / 2 = 12 eggs remain.
Wait, let me re-read the problem: half are used, so 24 - 12 = 12 remain. That matches.
So the answer is \boxed{12}.""",
    4: r"""Let x be the width. The length is x + 3 and 2(x + x + 3) = 26, so 4x + 6 = 26 and x = 5.
The area is 5 * 8 = 40.
Let me check: the perimeter is 2 * 5 + 2 * 8 = 26. Correct.
Let me also verify the area another way: 8 * 5 = 40, and 40 / 5 = 8 is the length. Consistent.
The answer is \boxed{40}.""",
}


@pytest.mark.parametrize(
    "text, phase",
    [(SUPERFICIAL, 1), (LINEAR, 2), (REFLECTION, 3), (MULTI_PASS, 4)],
    ids=["superficial", "linear", "reflection", "multi-pass"],
)
def test_one_example_per_phase(text, phase):
    result = classify(text)
    assert result.phase == phase, result.features


@pytest.mark.parametrize("phase", [1, 2, 3, 4])
def test_each_phase_in_dapo_format_with_the_answer_line_last(phase):
    result = classify(DAPO[phase])
    assert result.phase == phase, result.features
    assert result.features["answer_count"] == 1 and DAPO[phase].splitlines()[-1].startswith("Answer:")
    # every verification move comes before the only answer: the old rules never looked there
    assert result.features["moves_before_last_answer"] == result.features["verification_moves"]


@pytest.mark.parametrize("phase", [1, 2, 3, 4])
def test_each_phase_in_boxed_format(phase):
    result = classify(BOXED[phase])
    assert result.phase == phase, result.features
    assert result.features["has_answer"] and "Answer:" not in BOXED[phase]


def test_reflection_and_multi_pass_without_any_answer_marker():
    reflection = "Tom has 3 * 4 = 12 apples and gives away 5, so 12 - 5 = 7 are left. Let me check: 7 + 5 = 12 = 3 * 4."
    assert classify(reflection).phase == 3
    assert not classify(reflection).features["has_answer"]
    multi = reflection + " Another way: 4 * 3 = 12 and 12 - 5 = 7 again."
    assert classify(multi).phase == 4


def test_features_explain_the_decision():
    f = classify(MULTI_PASS).features
    assert f["has_answer"] and f["answer_count"] == 2  # "Answer: 14" and "So the answer is \boxed{14}"
    assert f["working_before_answer"] >= 2 and f["verification_moves"] == 3 and f["verification_passes"] == 3
    assert f["moves_before_last_answer"] == 3 and 0 < f["first_result_at"] < f["first_answer_at"]
    assert classify(SUPERFICIAL).features["planning_phrases"] >= 3
    assert classify(LINEAR).features["verification_moves"] == 0


def test_verification_words_before_any_result_do_not_make_reflection():
    text = "Let me check the units first. 5 * 3 = 15 and 15 + 2 = 17.\nAnswer: 17"
    assert classify(text).phase == 2
    assert classify(text).features["verification_moves"] == 0


def test_checking_a_count_and_substituting_forward_are_working_not_verification():
    text = ("There are 20 apples and 3 * 4 = 12 are eaten. Let's check how many are left: 20 - 12 = 8.\n"
            "Substituting x = 8 into y = 2x + 1 gives y = 17.\nAnswer: 17")
    result = classify(text)
    assert result.phase == 2 and result.features["verification_moves"] == 0


def test_a_made_up_answer_after_one_equation_is_still_superficial():
    assert classify("We need to find the sum. The sum is 10 + 5 = 16.\nAnswer: 16").phase == 1
    assert classify("We need the sum. Let me verify: it is 10 + 5 = 16. Answer: 16").phase == 1  # checks, no working


def test_working_without_an_answer_is_linear_execution():
    assert classify("First 12 * 4 = 48. Then 48 - 9 = 39. Then 39 / 3 = 13, and so on").phase == 2


def test_a_restated_answer_without_rework_is_reflection_not_multi_pass():
    text = LINEAR + "\n\nWait, is that right? Yes. Let me check again: yes, it is 48.\nAnswer: 48"
    result = classify(text)
    assert result.phase == 3 and result.features["verification_passes"] == 0
    assert result.features["verification_moves"] == 1  # "Wait", "is that right", "let me check": one move


def test_one_recomputation_is_reflection_two_are_multi_pass():
    one = LINEAR + "\nLet me verify: 6 * 9 = 54, 54 - 6 = 48. Correct."
    two = one + "\nAlternatively, count the pieces: 3 * 4 = 12 and 12 / 2 = 6, so 54 - 6 = 48 again."
    assert classify(one).phase == 3
    assert classify(two).phase == 4


def test_new_work_after_a_check_is_not_a_second_pass():
    text = ("Tom has 3 + 4 = 7 marbles. He buys 2 more: 7 + 2 = 9. Let me check: 7 + 2 = 9.\n"
            "Next, he gives away 5: 9 - 5 = 4, and then 4 * 2 = 8. Wait, 4 * 2 = 8 is right.\nAnswer: 8")
    result = classify(text)
    assert result.features["verification_moves"] == 2 and result.features["verification_passes"] == 0
    assert result.phase == 3
    kinds = [(s.kind, text[s.start:s.end]) for s in segments(text)]
    assert ("verification", "Let me check: 7 + 2 = 9.\n") in kinds
    assert kinds[kinds.index(("verification", "Let me check: 7 + 2 = 9.\n")) + 1][0] == "working"


def test_boxed_and_the_answer_is_count_as_answers():
    assert classify("2 + 2 = 4 and 4 * 3 = 12, so the answer is 12.").features["has_answer"]
    assert classify(r"1 + 1 = 2, 2 * 5 = 10: \boxed{10}").features["has_answer"]
    assert classify("5 * 3 = 15, 15 + 2 = 17. Answer: 17").features["has_answer"]  # not on its own line


def test_empty_and_garbage_text_are_phase_one():
    assert classify("").phase == 1
    assert classify("zR^2'NTF5m 'a|1gGH]X+DM7").phase == 1


def test_summarize_gives_shares_per_phase():
    summary = summarize([SUPERFICIAL, LINEAR, LINEAR, MULTI_PASS])
    assert summary["phase/1_frac"] == 0.25 and summary["phase/2_frac"] == 0.5
    assert summary["phase/3_frac"] == 0.0 and summary["phase/4_frac"] == 0.25
    assert summary["phase/mean"] == pytest.approx((1 + 2 + 2 + 4) / 4)
    assert summarize([]) == {}


# ---------------------------------------------------------------------- segments


def pieces_of(text):
    return [(s.kind, text[s.start:s.end]) for s in segments(text)]


def test_segments_of_a_dapo_reflection_by_hand():
    assert pieces_of(DAPO[3]) == [
        ("working", "Tom has 3 bags of 4 apples, "),
        ("result", "so he has 3 * 4 = 12 apples.\n"),
        ("working", "He gives away 5, "),
        ("result", "so 12 - 5 = 7 apples are left.\n"),
        ("verification", "Let me double-check: 3 * 4 = 12 and 12 - 5 = 7. Yes, that is right.\n"),
        ("answer", "Answer: 7"),
    ]


def test_segments_of_a_boxed_multi_pass_by_hand():
    kinds = pieces_of(BOXED[4])
    assert kinds[0] == ("planning", "Let x be the width. ")
    assert [k for k, _ in kinds] == ["planning", "working", "result", "verification", "verification", "answer"]
    assert kinds[3][1].startswith("Let me check:") and kinds[4][1].startswith("Let me also verify")
    assert kinds[-1] == ("answer", r"The answer is \boxed{40}.")


def test_a_planning_lead_in_and_an_answer_after_an_answer_then_a_check():
    text = "First we will add them. 3 + 4 = 7.\nAnswer: 7\nWait, 7 - 4 = 3, so it checks out."
    assert [k for k, _ in pieces_of(text)] == ["planning", "working", "answer", "verification"]
    same_sentence = r"3 + 4 = 7 and 7 * 2 = 14, so \boxed{14}; let me verify: 14 / 2 = 7."
    kinds = pieces_of(same_sentence)
    assert [k for k, _ in kinds][-2:] == ["answer", "verification"]
    assert kinds[-1][1] == "let me verify: 14 / 2 = 7."


def test_verification_segments_know_where_their_cue_ends():
    text = DAPO[4]
    passes = [s for s in segments(text) if s.kind == "verification"]
    assert len(passes) == 3
    cues = [text[s.start:s.cue_end] for s in passes]
    assert cues == ["Let me verify with another method", "Wait, let me also check", "Finally, I recompute from scratch"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["3 + 4 = 7", ". ", "\n", "so x = 5", "Wait, ", "Let me check: ", "Answer: 7",
                                 r"\boxed{3}", "we need to ", "the area is 84", "é", " ", "Next, ", "x"]),
                max_size=30).map("".join))
def test_segments_cover_the_text_in_order(text):
    found = segments(text)
    assert "".join(text[s.start:s.end] for s in found) == text
    assert all(s.start < s.end and s.kind in SEGMENT_KINDS for s in found)
    assert all(a.end == b.start for a, b in zip(found, found[1:]))
    assert all((s.cue_end is not None) == (s.kind == "verification") for s in found)


def test_segments_of_empty_text():
    assert segments("") == [] and token_spans([]) == []


# ---------------------------------------------------------------------- token spans


def test_token_spans_give_each_token_the_segment_of_its_first_visible_character():
    pieces = ["3", " +", " 4", " =", " 7", ".", " Wait", ",", " 7", " -", " 4", " =", " 3", ".", "\n",
              "Answer", ":", " 7"]
    spans = token_spans(pieces)
    assert [(s.kind, s.start, s.end) for s in spans] == [
        ("working", 0, 6), ("verification", 6, 15), ("answer", 15, 18)]
    assert spans[1].opening == 8  # " Wait" and "," carry the cue "Wait,"
    assert all(s.opening == s.start for s in spans if s.kind != "verification")


def test_token_spans_of_real_token_pieces_match_the_character_segments():
    from fipo_nb.models import qwen_tokenizer
    from fipo_nb.models import token_pieces

    tok = qwen_tokenizer("qwen2.5")
    for text in [DAPO[4], BOXED[3], MULTI_PASS + " 🦜 done"]:
        pieces = token_pieces(tok, tok.encode(text, add_special_tokens=False))
        assert "".join(pieces) == text
        spans = token_spans(pieces)
        assert spans[0].start == 0 and spans[-1].end == len(pieces)
        assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
        found = segments(text)
        starts = fipo_nb.analysis.phases.token_starts(pieces)
        for span in spans:
            visible = next((i for i in range(span.start, span.end) if pieces[i].strip()), span.start)
            at = starts[visible] + len(pieces[visible]) - len(pieces[visible].lstrip())
            owner = next(s for s in found if s.start <= at < s.end)
            assert owner.kind == span.kind


def test_doctests_in_phases_pass():
    assert doctest.testmod(fipo_nb.analysis.phases).failed == 0
