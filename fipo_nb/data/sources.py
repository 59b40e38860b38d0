"""Where a run's problems come from: a file, a list of rows, or a built-in source by name.

    >>> problems = load_problems([{"problem": "What is 2 + 2?", "answer": 4}], instruction=None)
    >>> problems[0].text, problems[0].answer, problems[0].id
    ('What is 2 + 2?', '4', 'records:0')

`load_problems` sources: a .parquet / .jsonl / .json / .csv file (files.py), a list of dicts, and
(no hub needed) the built-in sources of `BUILTIN` (tasks.py): "arithmetic?size=N&seed=S&terms=...",
"word-problems?steps=...", "single-digit?size=N&seed=S", "champ", and
"reasoning-gym:<task>?size=N&seed=S&key=value" with the `gym` extra. `config_problems` reads what a
TrainConfig names.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import random
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from .files import from_records, read_rows
from .problems import DAPO_INSTRUCTION, DataError, Problem
from .sampler import problem_key, unique_problems
from .tasks import arithmetic_problems, champ_problems, reasoning_gym_problems, single_digit_problems, word_problems

__all__ = ["BUILTIN", "Builtin", "config_problems", "load_problems"]


GYM_PREFIX = "reasoning-gym:"


@dataclass(frozen=True)
class Builtin:
    """A built-in source: make(size, seed, *, instruction, **options) -> problems."""

    make: Callable[..., list[Problem]]
    about: str
    options: bool = True  # takes options beyond size and seed ("?terms=3")


BUILTIN = {  # every built-in source by name, and "reasoning-gym:<task>" (the `gym` extra) beside them
    "arithmetic": Builtin(arithmetic_problems, "procedural sums and products: ?size, seed, terms, digits, operators"),
    "word-problems": Builtin(word_problems, "procedural 2-3 step stories: ?size, seed, steps"),
    "single-digit": Builtin(single_digit_problems, "'What is a + b?', answers 0-9, for smoke tests: ?size, seed",
                            options=False),
    "champ": Builtin(lambda size, seed, *, instruction: champ_problems(instruction=instruction),
                     "the 270 CHAMP competition problems (a fixed set: only a limit cuts it)", options=False),
}


def _builtin(name: str, options: dict, *, size: int, seed: int, limit: int | None, instruction) -> list[Problem]:
    """The first `limit` problems of built-in source `name` (a key of BUILTIN or reasoning-gym:<task>)."""
    source = BUILTIN.get(name) or Builtin(functools.partial(reasoning_gym_problems, name.removeprefix(GYM_PREFIX)),
                                          "a reasoning-gym task")
    if options and not source.options:
        raise ValueError(f"load_problems: {name!r} takes only size and seed; unknown option(s) {sorted(options)}")
    try:
        return source.make(size, seed, instruction=instruction, **options)[:limit]
    except TypeError as exc:  # an unknown option
        raise ValueError(f"load_problems: {name!r}: bad option(s) {sorted(options)}: {exc}") from exc


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """"a=1&ops=["+"]" -> [("a", "1"), ("ops", '["+"]')]: like parse_qsl, but a "+" stays a plus sign."""
    pairs = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def _query_value(text: str) -> Any:
    """"3" -> 3, "0.5" -> 0.5, "true" -> True, "[1, 4]" -> [1, 4], anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_problems(
    source: Any, *, limit: int | None = None, instruction: str | None = DAPO_INSTRUCTION, seed: int = 0,
    size: int | None = None,
) -> list[Problem]:
    """Problems from a file, a list of dicts, or a named offline source (see the module doc).

    `limit` keeps the first rows; `size` (else `limit`, else 64) and `seed` are the defaults of a
    procedural source ("?size=N&seed=S" override them).
    """
    if isinstance(source, (list, tuple)):
        return from_records(islice(source, limit), instruction=instruction)
    name, _, query = source.partition("?") if isinstance(source, str) else ("", "", "")
    if name in BUILTIN or name.startswith(GYM_PREFIX):
        options = {k: _query_value(v) for k, v in _query_pairs(query)}
        size = options.pop("size", next((n for n in (size, limit) if n is not None), 64))
        seed = options.pop("seed", seed)
        problems = _builtin(name, options, size=size, seed=seed, limit=limit, instruction=instruction)
        if not problems:
            raise DataError(f"the data source {source!r} made no problems (size={size}, limit={limit}); "
                            "nothing to train or evaluate on")
        return problems
    path = Path(os.fspath(source))
    if not path.is_file():
        named = difflib.get_close_matches(str(source).partition("?")[0], list(BUILTIN), n=1)
        hint = f" (did you mean the built-in source {named[0]!r}?)" if named else ""
        raise FileNotFoundError(f"load_problems: no such file: {path}{hint}")
    problems = from_records(islice(read_rows(path), limit), origin=path.name, instruction=instruction)
    if not problems:
        raise DataError(f"{path}: the file holds no rows; nothing to train or evaluate on")
    return problems


def config_problems(config, which: str) -> list[Problem]:
    """The problems a run trains (`which="train"`) or evaluates (`"eval"`) on, as its TrainConfig names them.

    train: the first `data_limit` rows of `config.data`, less those held out (`eval_holdout`). eval: the
    rows of `config.eval_data` that hold its first `eval_limit` distinct problems, repeats kept (evaluation
    samples each problem once and counts the repeats as eval/duplicates); a procedural eval source makes
    `eval_limit` problems; with `eval_holdout`, the held-out problems of `config.data` instead.
    """
    instruction = {"dapo": DAPO_INSTRUCTION, "none": None}.get(config.instruction, config.instruction)
    if which not in ("train", "eval"):
        raise ValueError(f"config_problems: which must be 'train' or 'eval', not {which!r}")
    holdout = which == "train" or config.eval_data is None  # both read data when problems are held out of it
    field = "data" if which == "train" or config.eval_holdout else "eval_data"
    try:
        if which == "train" or config.eval_holdout:
            rows = load_problems(config.data, limit=config.data_limit, instruction=instruction, seed=config.seed)
        else:
            rows = load_problems(config.eval_data, instruction=instruction, seed=config.seed, size=config.eval_limit)
    except DataError as exc:
        raise DataError(f"TrainConfig.{field}: {exc}") from exc
    if config.eval_holdout and holdout:
        held = held_out(rows, config.eval_holdout, config.eval_limit, config.seed)
        return [p for p in rows if (problem_key(p) in held) == (which == "eval")]
    if which == "train":
        return rows
    keep = {problem_key(p) for p in unique_problems(rows)[: config.eval_limit]}
    return [p for p in rows if problem_key(p) in keep]


def held_out(problems: list[Problem], share: float, limit: int | None, seed: int) -> set:
    """The keys (`problem_key`) of the distinct problems held out for evaluation: `share` of them, at least 1
    and at most `limit`, drawn by `seed`; at least one problem stays to train on."""
    distinct = unique_problems(problems)
    count = min(max(1, round(share * len(distinct))), limit or len(distinct))
    if count >= len(distinct):
        raise DataError(f"TrainConfig.eval_holdout: data has {len(distinct)} distinct problem(s), too few to hold "
                        f"{count} out for evaluation and train on the rest; lower eval_holdout or set eval_data")
    chosen = random.Random(f"fipo_nb.held_out:{seed}").sample(range(len(distinct)), count)
    return {problem_key(distinct[i]) for i in chosen}
