"""Built-in problem sources: procedural tasks with exact integer answers, and problems shipped in packages.

    arithmetic      "Calculate 7 + 5 * 3 - 4." (a chain of `terms` numbers of `digits` digits and the
                    given operators, usual precedence, an integer answer)
    word-problems   short stories that take `steps` operations to solve ("Mia buys 3 boxes of 12
                    pencils and gives 7 away. How many pencils does she have left?")

Both are deterministic by seed, and their answers are computed, not written: a problem's answer
is the value of the operations it was generated from. They serve the CPU demo (a 135M model
writes several lines of working for a 2-3 step word problem) and tests; reasoning-gym's 100+
tasks remain available with the `fipo_nb[gym]` extra (its own dependencies build from source).

    single-digit    "What is a + b?" with answers 0-9, for smoke tests with random tiny models
    champ           the 270 CHAMP competition problems (the champ-dataset package)
    reasoning-gym   any reasoning-gym task, with the `gym` extra

`data.sources.BUILTIN` names each of them: the one registry of built-in sources.

    >>> [p.answer for p in arithmetic_problems(3, seed=1, instruction=None)]
    ['9', '12', '7']
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .problems import DAPO_INSTRUCTION, Problem, chat_prompt, jsonable, required_text

__all__ = ["arithmetic_problems", "champ_problems", "reasoning_gym_problems", "single_digit_problems",
           "word_problems"]

NAMES = ("Mia", "Liam", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Ines", "Kai")
OPERATORS = "+-*"


def _check_range(name: str, value, lowest: int, highest: int) -> tuple[int, int]:
    """An int n (-> (n, n)) or a [lo, hi] pair inside lowest..highest; ValueError naming the option."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value or ())
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair) \
            or not lowest <= pair[0] <= pair[1] <= highest:
        raise ValueError(f"{name} must be an integer or [low, high] within {lowest}..{highest}; got {value!r}")
    return pair


def _value(numbers: list[int], ops: list[str]) -> int:
    """numbers[0] ops[0] numbers[1] ... with * before + and -.

    >>> _value([7, 5, 3, 4], ["+", "*", "-"])  # 7 + 15 - 4
    18
    """
    total, sign, term = 0, 1, numbers[0]
    for op, number in zip(ops, numbers[1:]):
        if op == "*":
            term *= number
        else:
            total, sign, term = total + sign * term, (1 if op == "+" else -1), number
    return total + sign * term


def arithmetic_problems(size: int = 64, seed: int = 0, *, terms=2, digits=1, operators: str = "+",
                        instruction: str | None = DAPO_INSTRUCTION) -> list[Problem]:
    """`size` expressions of `terms` numbers (an int or [lo, hi]) of `digits` digits joined by `operators`.

    Answers are exact integers under the usual precedence (* before + and -).
    """
    lo_terms, hi_terms = _check_range("arithmetic: terms", terms, 2, 8)
    lo_digits, hi_digits = _check_range("arithmetic: digits", digits, 1, 4)
    if not operators or set(operators) - set(OPERATORS):
        raise ValueError(f"arithmetic: operators must be a non-empty string of {OPERATORS!r}; got {operators!r}")
    rng, problems = random.Random(f"fipo_nb.tasks.arithmetic:{seed}"), []
    for index in range(size):
        count = rng.randint(lo_terms, hi_terms)
        numbers = [rng.randint(1 if d == 1 else 10 ** (d - 1), 10**d - 1)
                   for d in (rng.randint(lo_digits, hi_digits) for _ in range(count))]
        ops = [rng.choice(operators) for _ in range(count - 1)]
        text = " ".join(str(numbers[0]) if i == 0 else f"{ops[i - 1]} {numbers[i]}" for i in range(count))
        answer = _value(numbers, ops)
        prompt = chat_prompt(f"Calculate {text}.", instruction)
        problems.append(Problem(prompt, str(answer), f"arithmetic:{index}", "arithmetic",
                                {"expression": text, "terms": count}))
    return problems


@dataclass(frozen=True)
class _Template:
    """A story of `steps` operations: build(rng, name) -> (text, answer)."""

    steps: int
    build: Callable[[random.Random, str], tuple[str, int]]


def _shopping(rng, name):
    boxes, per_box, given = rng.randint(2, 6), rng.randint(6, 12), rng.randint(1, 9)
    return (f"{name} buys {boxes} boxes of {per_box} pencils and gives {given} pencils to a friend. "
            f"How many pencils does {name} have now?"), boxes * per_box - given


def _savings(rng, name):
    weekly, weeks = rng.randint(3, 9), rng.randint(3, 8)
    price = rng.randint(5, weekly * weeks)  # never more than the savings
    return (f"{name} saves {weekly} dollars every week for {weeks} weeks, then spends {price} dollars on a book. "
            f"How many dollars does {name} have left?"), weekly * weeks - price


def _garden(rng, name):
    rows, per_row, eaten, extra = rng.randint(3, 7), rng.randint(4, 9), rng.randint(2, 8), rng.randint(3, 12)
    return (f"{name} plants {rows} rows of {per_row} tulips. Rabbits eat {eaten} of them, and {name} plants "
            f"{extra} more. How many tulips are in the garden now?"), rows * per_row - eaten + extra


def _trip(rng, name):
    speed, hours, walked = rng.randint(30, 60), rng.randint(2, 5), rng.randint(2, 9)
    return (f"{name} drives at {speed} km per hour for {hours} hours and then walks {walked} km. "
            f"How many km does {name} travel in total?"), speed * hours + walked


def _bakery(rng, name):
    trays, per_tray, sold, boxes = rng.randint(3, 6), rng.randint(8, 12), rng.randint(5, 15), rng.randint(2, 4)
    left = trays * per_tray - sold
    left -= left % boxes  # a whole number of cookies per box
    sold = trays * per_tray - left
    return (f"A bakery bakes {trays} trays of {per_tray} cookies and sells {sold} of them. {name} packs the rest "
            f"equally into {boxes} boxes. How many cookies go in each box?"), left // boxes


def _ages(rng, name):
    age, gap, years = rng.randint(6, 15), rng.randint(20, 35), rng.randint(3, 10)
    return (f"{name} is {age} years old. {name}'s mother is {gap} years older. "
            f"How old will they be together in {years} years?"), (age + years) + (age + gap + years)


def _tickets(rng, name):
    adults, children, adult_price, child_price = rng.randint(1, 4), rng.randint(1, 5), rng.randint(8, 15), \
        rng.randint(3, 7)
    return (f"{name} buys {adults} adult tickets at {adult_price} dollars each and {children} child tickets at "
            f"{child_price} dollars each. How many dollars does {name} pay?"), adults * adult_price + children * child_price


def _library(rng, name):
    shelves, per_shelf, borrowed, returned = rng.randint(3, 8), rng.randint(10, 25), rng.randint(5, 20), \
        rng.randint(1, 5)
    return (f"A library has {shelves} shelves with {per_shelf} books each. {name} borrows {borrowed} books and "
            f"returns {returned} of them a week later. How many books are on the shelves now?"), \
        shelves * per_shelf - borrowed + returned


TEMPLATES = (
    _Template(2, _shopping), _Template(2, _savings), _Template(2, _trip), _Template(2, _tickets),
    _Template(3, _garden), _Template(3, _bakery), _Template(3, _ages), _Template(3, _library),
)


def word_problems(size: int = 64, seed: int = 0, *, steps=(2, 3),
                  instruction: str | None = DAPO_INSTRUCTION) -> list[Problem]:
    """`size` word problems that take `steps` (an int or [lo, hi]) operations each; integer answers."""
    lo, hi = _check_range("word-problems: steps", steps, 2, 3)
    templates = [t for t in TEMPLATES if lo <= t.steps <= hi]
    rng, problems = random.Random(f"fipo_nb.tasks.word-problems:{seed}"), []
    for index in range(size):
        template = rng.choice(templates)
        text, answer = template.build(rng, rng.choice(NAMES))
        problems.append(Problem(chat_prompt(text, instruction), str(answer), f"word-problems:{index}", "word-problems",
                                {"template": template.build.__name__.lstrip("_"), "steps": template.steps}))
    return problems


def reasoning_gym_problems(
    task: str, size: int = 64, seed: int = 0, *, instruction: str | None = DAPO_INSTRUCTION, **task_config
) -> list[Problem]:
    """`size` problems of a reasoning-gym task, deterministic by seed; task_config: e.g. min_terms=2.

    Needs the optional extra `gym` (pip install 'fipo_nb[gym]'): reasoning-gym pins pycosat, which
    PyPI has as C sources only, so it is not a dependency of fipo_nb itself."""
    if importlib.util.find_spec("reasoning_gym") is None:
        raise ImportError(f"the data source 'reasoning-gym:{task}' needs reasoning-gym: pip install 'fipo_nb[gym]' "
                          "(it builds pycosat from C sources); the built-in sources 'arithmetic' and "
                          "'word-problems' need nothing")
    import reasoning_gym  # imported here: it takes ~1 s and most runs never need it
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        names = ", ".join(sorted(DATASETS)[:8])
        raise ValueError(f"unknown reasoning-gym task {task!r}; valid ones include {names} ({len(DATASETS)} tasks)")
    try:
        dataset = reasoning_gym.create_dataset(task, size=size, seed=seed, **task_config)
    except TypeError as exc:  # an unknown config key
        raise ValueError(f"reasoning-gym task {task!r}: bad config {task_config}: {exc}") from exc
    origin = f"reasoning-gym/{task}"
    problems = []
    for index, entry in enumerate(dataset):
        answer = required_text(entry.get("answer"), f"{origin} row {index}", "answer")
        meta = jsonable(entry.get("metadata") or {})
        problems.append(Problem(chat_prompt(entry["question"], instruction), answer, f"{origin}:{index}", origin, meta))
    return problems


@functools.lru_cache(maxsize=1)
def _champ_rows() -> tuple[tuple[str, str, str, str, str], ...]:
    """(identifier, text, answer, category, raw_answer) of CHAMP's problems; the 72 MB JSON is read once."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("champ_problems needs the champ-dataset package (pip install champ-dataset)")
    path = Path(spec.submodule_search_locations[0]) / "dataset_files" / "v0.json"
    with path.open(encoding="utf-8") as f:
        problems = json.load(f)["problems"]
    # _text / _answer are _raw_text / _raw_answer with the @@math@@ markers removed
    return tuple(
        (p["identifier"], p["_text"], p["_answer"], p["category"], p["_raw_answer"]) for p in problems.values()
    )


def champ_problems(limit: int | None = None, *, instruction: str | None = DAPO_INSTRUCTION) -> list[Problem]:
    """The 270 CHAMP competition problems (answers are often phrases: "No", "0 is the only possible value")."""
    problems = []
    for identifier, text, answer, category, raw_answer in _champ_rows()[:limit]:
        meta = {"category": category, "raw_answer": raw_answer}
        problems.append(Problem(chat_prompt(text, instruction), answer, f"champ:{identifier}", "champ", meta))
    return problems


def single_digit_problems(
    size: int = 64, seed: int = 0, *, instruction: str | None = DAPO_INSTRUCTION
) -> list[Problem]:
    """"What is a + b?" / "What is a - b?" with answers 0-9, for smoke tests with random tiny models.

    A model emitting random characters still hits the right digit now and then, so rewards vary.
    """
    rng, problems = random.Random(seed), []
    for index in range(size):
        a, op = rng.randint(0, 9), rng.choice("+-")
        b = rng.randint(0, 9 - a) if op == "+" else rng.randint(0, a)  # a + b <= 9, a - b >= 0
        answer = str(a + b if op == "+" else a - b)
        prompt = chat_prompt(f"What is {a} {op} {b}?", instruction)
        problems.append(Problem(prompt, answer, f"single-digit:{index}", "single-digit", {"a": a, "b": b, "op": op}))
    return problems



