"""fipo_nb.data.tasks: built-in procedural problems with computed answers, as data sources."""

from __future__ import annotations

import doctest
import json

import pytest

import fipo_nb.data.tasks
from fipo_nb.data import load_problems
from fipo_nb.data.tasks import arithmetic_problems, word_problems


def test_doctests_in_tasks_pass():
    assert doctest.testmod(fipo_nb.data.tasks).failed == 0


def test_arithmetic_answers_follow_precedence():
    problems = arithmetic_problems(200, seed=5, terms=[2, 5], digits=[1, 2], operators="+-*", instruction=None)
    for p in problems:
        expression = p.meta["expression"]
        assert p.text == f"Calculate {expression}."
        assert set(expression) <= set("0123456789+-* ")
        assert int(p.answer) == eval(expression)  # the test's own check: Python's precedence  # noqa: S307
    assert {p.meta["terms"] for p in problems} == {2, 3, 4, 5}
    assert any("*" in p.meta["expression"] for p in problems) and any(int(p.answer) < 0 for p in problems)


def test_one_digit_sums_stay_one_digit_sums():
    problems = arithmetic_problems(50, seed=0, terms=2, digits=1, operators="+", instruction=None)
    for p in problems:
        a, plus, b = p.meta["expression"].split()
        assert plus == "+" and 1 <= int(a) <= 9 and 1 <= int(b) <= 9 and int(p.answer) == int(a) + int(b)


def test_word_problems_have_whole_answers_and_steps():
    problems = word_problems(300, seed=1, instruction=None)
    templates = {p.meta["template"] for p in problems}
    assert len(templates) == 8 and {p.meta["steps"] for p in problems} == {2, 3}
    assert all(p.answer.lstrip("-").isdigit() and int(p.answer) >= 0 for p in problems)
    bakery = next(p for p in problems if p.meta["template"] == "bakery")  # "packs the rest equally": exact
    numbers = [int(w) for w in bakery.text.replace(".", " ").split() if w.isdigit()]
    trays, per_tray, sold, boxes = numbers
    assert (trays * per_tray - sold) % boxes == 0 and int(bakery.answer) == (trays * per_tray - sold) // boxes
    assert {p.meta["steps"] for p in word_problems(20, seed=1, steps=2, instruction=None)} == {2}
    json.dumps([p.meta for p in problems])


def test_tasks_are_deterministic_by_seed_and_load_as_sources():
    direct = word_problems(6, seed=3)
    again = load_problems("word-problems?size=6&seed=3")
    assert [(p.text, p.answer, p.id) for p in again] == [(p.text, p.answer, p.id) for p in direct]
    assert [p.text for p in word_problems(6, seed=4)] != [p.text for p in direct]
    assert all(p.prompt[-1]["content"].startswith("Solve the following") for p in again)  # the DAPO instruction
    sums = load_problems("arithmetic?size=5&terms=2&digits=1&operators=+", instruction=None)
    assert [p.id for p in sums] == [f"arithmetic:{i}" for i in range(5)] and all("+" in p.text for p in sums)
    assert len(load_problems("arithmetic", limit=3)) == 3


@pytest.mark.parametrize("source, message", [
    ("arithmetic?terms=1", "terms must be"),
    ("arithmetic?digits=[3, 1]", "digits must be"),
    ("arithmetic?operators=/", "operators must be"),
    ("word-problems?steps=7", "steps must be"),
    ("word-problems?colour=red", "bad option"),
])
def test_bad_task_options_are_named(source, message):
    with pytest.raises(ValueError, match=message):
        load_problems(source)
