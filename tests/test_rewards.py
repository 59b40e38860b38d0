"""fipo_nb.rewards: answer extraction, real math-verify checks, reward functions, threads."""

from __future__ import annotations

import doctest
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fipo_nb.rewards.math
import fipo_nb.rewards.scoring
from fipo_nb.config import ANSWER_MODES
from fipo_nb.data import DAPO_INSTRUCTION, Problem, from_records
from fipo_nb.rewards import (
    MODES,
    MathReward,
    RewardError,
    RewardResult,
    answers_match,
    extract_answer,
    is_dapo_source,
    score_responses,
)


def problem(answer: str, id: str = "test:0", source: str = "") -> Problem:
    return Problem([{"role": "user", "content": "q"}], answer, id, source)


def test_doctests_pass():
    for module in (fipo_nb.rewards.math, fipo_nb.rewards.scoring):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("first \\boxed{1}\nthen \\boxed{{2}+{3}}", "{2}+{3}"),  # the last box wins
        ("\\boxed{5} or \\boxed{12}", "5, 12"),  # boxes on one line are alternatives: all of them
        ("\\boxed{\\boxed{12}}", "12"),
        ("the set \\boxed{\\{1, 2\\}} here", "\\{1, 2\\}"),  # escaped braces are not grouping
        ("\\fbox{7}", "7"),
        ("\\boxed {8}", "8"),
        ("cut off \\boxed{\\frac{1}{2", None),  # a truncated response has no answer
        ("no box at all 42", None),
    ],
)
def test_boxed_matches_nested_braces(text, expected):
    assert extract_answer(text, "boxed") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("work\nAnswer: 42", "42"),
        ("Answer: 1\nwait, no.\nAnswer: $\\frac{3}{4}$.", "\\frac{3}{4}"),  # last line, $ and period gone
        ("Answer: $\\boxed{12}$", "12"),  # a box around the whole answer is unwrapped
        ("**Answer:** 5", "5"),
        ("final answer:   x + 1  ", "x + 1"),  # any case, as DAPO's (?i) pattern
        ("Answer:\n17", "17"),  # DAPO's \s* runs onto the next line
        ("Answer: \\boxed{1} + \\boxed{2}", "\\boxed{1} + \\boxed{2}"),  # not one box: left alone
        ("Answer:", None),
        ("the answer is 3", None),
    ],
)
def test_answer_line_takes_the_last_answer_line_cleaned(text, expected):
    assert extract_answer(text, "answer_line") == expected


def test_auto_prefers_the_answer_line_then_falls_back_to_boxed():
    assert extract_answer("\\boxed{1}\nAnswer: 2") == "2"
    assert extract_answer("we get \\boxed{1}.") == "1"
    assert extract_answer("Answer: \nno box") == "no box"  # the next line counts, as in DAPO
    assert extract_answer("nothing here") is None
    assert extract_answer("") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5-3 = 2, so 1,000 or 3/4.", "3/4"),
        ("it is -2.5 degrees", "-2.5"),
        ("total 1,234,567!", "1234567"),
        ("5-3", "3"),  # a minus after a digit is subtraction, not a sign
        ("no digits", None),
    ],
)
def test_last_number_finds_the_last_integer_decimal_or_fraction(text, expected):
    assert extract_answer(text, "last_number") == expected


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="auto, dapo, answer_line, boxed, last_number"):
        extract_answer("x", "first_line")
    with pytest.raises(ValueError, match="unknown mode"):
        MathReward(mode="nope")


@pytest.mark.parametrize(
    "predicted, gold",
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "0.5"),
        ("2\\sqrt2", "\\sqrt8"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("50\\%", "0.5"),
        ("\\{3, 1, 2\\}", "\\{1, 2, 3\\}"),
        ("3, 1, 2", "1,2,3"),
        ("\\boxed{34}", "34"),
        ("34.", "34"),
        ("1,000", "1000"),
        ("x = 3", "3"),
        ("\\dfrac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
        ("2^(n-1)", "2^{n-1}"),
        ("Yes", "yes"),  # the string fast path, case-folded
        ("\\text{No}", "No"),
    ],
)
def test_equivalent_answers_match(predicted, gold):
    assert answers_match(predicted, gold)


@pytest.mark.parametrize(
    "predicted, gold",
    [("3", "4"), ("0.51", "0.5"), ("\\sqrt{7}", "2\\sqrt2"), ("\\{1, 2\\}", "\\{1, 2, 3\\}"), ("-34", "34")],
)
def test_different_answers_do_not_match(predicted, gold):
    assert not answers_match(predicted, gold)


@pytest.mark.parametrize(
    "predicted", [None, "", "   ", "{{{", "}}\\frac{", "\\boxed{", "$$$", "\x00\x01", "a" * 3000, "\\left( \\right"]
)
def test_garbage_never_raises_and_does_not_match(predicted):
    assert answers_match(predicted, "3") is False


@pytest.mark.parametrize(
    "costly",
    [
        "10^{10^{10}}", "9^{9^{9^{9}}}", "(10^{10})!", "\\binom{10^{100}}{10^{50}}", "{10^{10}}^{10^{10}}",
        "\\frac{" * 24 + "1}{2}" * 24,  # nested fractions: verify's time doubles per level
        "1+\\frac{1}{" * 20 + "2" + "}" * 20,
    ],
)
@pytest.mark.timeout(300)  # a hang guard, not a speed claim: refused inputs take milliseconds
def test_costly_answers_are_refused_instead_of_hanging(costly, monkeypatch):
    # unguarded, math-verify runs for minutes to hours on these (it has no timeout here): they are
    # refused by their size or depth before verify ever sees them
    compared = []
    monkeypatch.setattr(fipo_nb.rewards.math, "verify", lambda *args, **kwargs: compared.append(args) or False)
    assert not answers_match(costly, "3")
    assert compared == []


def test_big_but_reasonable_answers_are_still_checked():
    assert answers_match("2^{10000}", "2^{10000}") and answers_match("10^{1000}", "10^{1000}")
    assert answers_match("2^{10000}", "2^{5000} \\cdot 2^{5000}")
    assert answers_match("1+\\frac{1}{1+\\frac{1}{2}}", "\\frac{5}{3}")  # a continued fraction, depth 7


def test_math_reward_uses_dapo_one_minus_one_or_one_zero():
    dapo, binary = MathReward(), MathReward(correct=1.0, incorrect=0.0)
    right, wrong = "so\nAnswer: \\frac{1}{2}", "Answer: 3"
    assert (dapo("p", right, problem("0.5")), dapo("p", wrong, problem("0.5"))) == (1.0, -1.0)
    assert (binary("p", right, problem("0.5")), binary("p", wrong, problem("0.5"))) == (1.0, 0.0)
    assert dapo.score("p", right, problem("0.5")) == RewardResult(1.0, True, "\\frac{1}{2}")
    assert MathReward(mode="last_number")("p", "I think 7", problem("7")) == 1.0


def test_empty_and_answerless_responses_score_incorrect():
    results = score_responses(MathReward(), ["p"] * 3, ["", "no answer", "Answer: 4"], [problem("4")] * 3)
    assert [(r.reward, r.correct, r.extracted) for r in results] == [
        (-1.0, False, None), (-1.0, False, None), (1.0, True, "4")
    ]


def test_any_callable_is_a_reward_and_correct_means_positive():
    def length_reward(prompt, response, sample):
        return len(response) - 2

    results = score_responses(length_reward, ["p"] * 3, ["a", "ab", "abc"], [problem("1")] * 3)
    assert [(r.reward, r.correct) for r in results] == [(-1.0, False), (0.0, False), (1.0, True)]
    numpy_scalar = score_responses(lambda p, r, s: np.float32(0.5), ["p"], ["r"], [problem("1")])
    assert numpy_scalar == [RewardResult(0.5, True)]


def test_callable_that_raises_names_the_sample_and_chains_the_cause():
    def flaky(prompt, response, sample):
        if sample.id == "set:1":
            raise KeyError("missing")
        return 1.0

    samples = [problem("1", "set:0"), problem("1", "set:1")]
    with pytest.raises(RewardError, match=r"sample 1 \(id 'set:1'\): KeyError") as info:
        score_responses(flaky, ["p", "p"], ["r", "r"], samples)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0", None, [1.0]])
def test_non_finite_or_non_numeric_reward_names_the_sample(bad):
    with pytest.raises(RewardError, match=r"sample 0 \(id 'bad:7'\)"):
        score_responses(lambda p, r, s: bad, ["p"], ["r"], [problem("1", "bad:7")])


def test_reward_errors_scored_incorrect_only_when_asked():
    def nan_for_one(prompt, response, sample):
        return math.nan if sample.id == "s:1" else 1.0

    samples = [problem("1", "s:0"), problem("1", "s:1")]
    results = score_responses(nan_for_one, ["p"] * 2, ["r"] * 2, samples, on_error="incorrect", error_reward=-0.5)
    assert results[0] == RewardResult(1.0, True)
    assert (results[1].reward, results[1].correct, results[1].extracted) == (-0.5, False, None)
    assert results[1].error == "reward function failed on sample 1 (id 's:1'): ValueError: reward is nan"
    with pytest.raises(ValueError, match="on_error must be one of raise, incorrect"):
        score_responses(nan_for_one, ["p"], ["r"], samples[:1], on_error="skip")


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 prompts, 1 responses, 1 samples"):
        score_responses(MathReward(), ["p", "p"], ["r"], [problem("1")])


def test_math_verify_works_from_worker_threads():
    # math-verify's own timeouts use signal.alarm, which raises off the main thread
    cases = [("\\frac{1}{2}", "0.5", True), ("2\\sqrt2", "\\sqrt8", True), ("50\\%", "0.5", True), ("3", "4", False)]
    reward = MathReward()
    with ThreadPoolExecutor(max_workers=4) as pool:
        matches = list(pool.map(lambda case: answers_match(case[0], case[1]), cases * 3))
        rewards = list(pool.map(lambda case: reward("p", f"Answer: {case[0]}", problem(case[1])), cases))
    assert matches == [expected for _, _, expected in cases] * 3
    assert rewards == [1.0, 1.0, 1.0, -1.0]


# ---------------------------------------------------------------- the answer as a whole (issue 8)

HEDGES = [  # gold 12: each names 12 somewhere, none answers 12
    "Answer: 5 (or 12)",
    "Answer: 100 (not sure; 12)",
    "Answer: 0, 1, 2, ..., 12",
    "Answer: $0, 1, 2, \\ldots, 12$",
    "Answer: 12 or 13",
    "Answer: 5 \\text{ or } 12",
    "Answer: either 5 or 12",
    "Answer: 12 (I think), maybe 13",
    "Answer: \\boxed{5} or \\boxed{12}",
    "Answer: 12, 13",
    "so the answer is \\boxed{5 \\text{ or } 12}",
    "so the answer is \\boxed{0, 1, \\ldots, 12}",
    "so the answer is \\boxed{5 (or 12)}",
    "so the answer is \\boxed{12 \\text{ or } 13}.",
    "Answer: 12 \\text{ (or 5)}",  # a second answer inside a \text{} beside the first
    "Answer: $12 \\text{ (not sure)}$",
    "so the answer is \\boxed{12 \\mbox{(maybe 5)}}",
    "Answer: x = 5 or x = 12",  # the official scorer keeps what follows the last "=": 12
    "Answer: n=5, n=12",
    "Answer: 5 or x=12",
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("response", HEDGES)
def test_hedges_lists_and_alternatives_are_wrong_in_every_mode(response, mode):
    assert MathReward(mode=mode).score("p", response, problem("12")).reward == -1.0


def test_text_beside_the_box_is_read_only_by_modes_that_read_the_answer_line():
    rewards = {mode: MathReward(mode=mode)("p", "Answer: 5 or \\boxed{12}", problem("12")) for mode in MODES}
    assert rewards == {"auto": -1.0, "dapo": -1.0, "answer_line": -1.0, "boxed": 1.0, "last_number": -1.0}


CLEAN = [  # (response, the modes that credit it for gold 12)
    ("Answer: 12", {"auto", "dapo", "answer_line", "last_number"}),
    ("work...\nAnswer: $12$", {"auto", "dapo", "answer_line", "last_number"}),
    ("Answer: $\\boxed{12}$", {"auto", "dapo", "answer_line", "boxed", "last_number"}),
    ("Answer: x = 12", {"auto", "dapo", "answer_line", "last_number"}),
    ("Answer: 12 cm", {"auto", "dapo", "answer_line", "last_number"}),
    ("Answer: 12 \\text{ cm}", {"auto", "dapo", "answer_line", "last_number"}),  # a unit in \text{} is no hedge
    ("so \\boxed{12\\text{ apples}}", {"auto", "boxed", "last_number"}),
    ("**Answer:** 12.", {"auto", "answer_line", "last_number"}),  # DAPO: "12." != "12"
    ("so \\boxed{12}.", {"auto", "boxed", "last_number"}),
    ("3 + 9 = 12", {"last_number"}),
    ("Answer: 12\nwait, no.\nAnswer: 13", set()),  # the last answer line counts
]


@pytest.mark.parametrize("response, credited", CLEAN)
def test_clean_answers_are_credited_where_the_mode_reads_them(response, credited):
    rewards = {mode: MathReward(mode=mode).score("p", response, problem("12")).reward for mode in MODES}
    assert rewards == {mode: 1.0 if mode in credited else -1.0 for mode in MODES}


@pytest.mark.parametrize(
    "answer, gold",
    [("1/2", "0.5"), ("0.5", "\\frac{1}{2}"), ("$12$", "12"), ("12", "$12$"), ("\\frac12", "0.5"), ("12.0", "12"),
     ("1,000", "1000"), ("1000", "1,000"), ("\\{3, 1, 2\\}", "\\{1, 2, 3\\}"), ("2 \\cdot 6", "12"), ("12^\\circ", "12")],
)
def test_equivalent_forms_are_credited_in_auto(answer, gold):
    assert MathReward().score("p", f"Answer: {answer}", problem(gold)).correct


def test_dapo_mode_compares_strings_where_auto_compares_values():
    assert MathReward(mode="dapo")("p", "Answer: 1/2", problem("0.5")) == -1.0
    assert MathReward(mode="auto")("p", "Answer: 1/2", problem("0.5")) == 1.0
    assert MathReward(mode="dapo").score("p", "Answer: 12 cm", problem("12")) == RewardResult(1.0, True, "12")
    assert MathReward(mode="dapo").score("p", "no answer", problem("12")) == RewardResult(-1.0, False, None)


LONG = "Let me check this again step by step. " * 11  # 418 characters after the answer line


@pytest.mark.parametrize(
    "response, dapo, auto",
    [
        ("Answer: 12\n" + LONG, -1.0, 1.0),  # dapo sees only the last 300 characters
        (LONG + "\nAnswer: 12", 1.0, 1.0),
        ("Answer: 12\n" + LONG + "\nAnswer: 13", -1.0, -1.0),
        ("Answer: 13\n" + LONG + "\\boxed{12}", -1.0, -1.0),  # the answer line beats a later box
    ],
)
def test_long_responses_dapo_reads_the_last_300_characters_only(response, dapo, auto):
    assert MathReward(mode="dapo")("p", response, problem("12")) == dapo
    assert MathReward(mode="auto")("p", response, problem("12")) == auto
    assert MathReward(mode="answer_line")("p", response, problem("12")) == auto


def test_auto_uses_the_dapo_scorer_for_dapo_math_rows_as_verl_dispatches():
    [row] = from_records([{"data_source": "math_dapo", "prompt": [{"role": "user", "content": "q"}],
                           "reward_model": {"ground_truth": "12"}}])
    assert is_dapo_source(row) and is_dapo_source({"data_source": "aime-2024", "answer": "12"})
    assert MathReward()("p", "Answer: 12.", row) == -1.0  # the official string comparison
    assert MathReward()("p", "Answer: 12\n" + LONG, row) == -1.0  # and its window
    plain = problem("12", "aime.jsonl:0", "aime.jsonl")  # a file name is not a data_source
    [aime_file] = from_records([{"problem": "q", "answer": 12}], origin="aime.jsonl")
    assert not is_dapo_source(plain) and not is_dapo_source(aime_file) and not is_dapo_source(problem("12"))
    assert MathReward()("p", "Answer: 12.", plain) == 1.0 and MathReward()("p", "Answer: 12.", aime_file) == 1.0


def test_last_number_mode_reads_a_stated_answer_whole_else_the_last_number():
    reward = MathReward(mode="last_number")
    assert extract_answer("I think 5, no 7", "last_number") == "7"
    assert extract_answer("Answer: 5 (or 12)", "last_number") == "5 (or 12)"
    assert reward("p", "Answer: 5 (or 12)", problem("12")) == -1.0
    assert reward("p", "so 3 + 4 = 7", problem("7")) == 1.0


def test_config_lists_the_same_answer_modes():
    assert ANSWER_MODES == MODES
    assert DAPO_INSTRUCTION.count("Answer:") == 2  # the format every answer-line mode reads


CUT_OFF = "First, 4 + 6 = 10. To check, you should write the expression 10 +"  # the demo's truncated "+1"


@pytest.mark.parametrize("mode", ["auto", "answer_line", "boxed", "last_number"])
def test_a_response_that_ran_out_of_tokens_is_never_correct_where_the_answer_is_read_from_free_text(mode):
    for response in (CUT_OFF, "Answer: 10", "so \\boxed{10}"):
        result = MathReward(mode=mode).score("p", response, problem("10"), truncated=True)
        assert (result.reward, result.correct, result.extracted) == (-1.0, False, None)
    assert MathReward(mode="last_number").score("p", CUT_OFF, problem("10")).correct  # finished: read as before


def test_the_dapo_scorer_keeps_the_official_behaviour_for_a_truncated_response():
    dapo_row = problem("10", source="math_dapo")
    for mode, sample in (("dapo", problem("10")), ("auto", dapo_row)):  # what verl's math_dapo would say
        assert MathReward(mode=mode).score("p", "Working... Answer: 10", sample, truncated=True).correct


def test_score_responses_passes_truncation_to_rewards_that_read_it_only():
    cut = [True, False]
    results = score_responses(MathReward(mode="last_number"), ["p"] * 2, [CUT_OFF] * 2, [problem("10")] * 2,
                              truncated=cut)
    assert [r.correct for r in results] == [False, True]
    plain = score_responses(lambda p, r, s: 1.0, ["p"] * 2, ["r"] * 2, [problem("1")] * 2, truncated=cut)
    assert [r.reward for r in plain] == [1.0, 1.0]  # a plain callable decides for itself
    with pytest.raises(ValueError, match="1 truncation flags"):
        score_responses(MathReward(), ["p"] * 2, ["r"] * 2, [problem("1")] * 2, truncated=[True])
