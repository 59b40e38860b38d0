"""Prompt datasets: DAPO-Math-17k rows, AIME-style files, procedural offline tasks.

Every source becomes a list of `Problem` (chat messages, ground-truth answer, stable id);
`PromptSampler` deals them out in batches, epoch after epoch:

    >>> problems = load_problems([{"problem": "What is 2 + 2?", "answer": 4}], instruction=None)
    >>> problems[0].text, problems[0].answer, problems[0].id
    ('What is 2 + 2?', '4', 'records:0')

`load_problems` sources: a .parquet / .jsonl / .json / .csv file, a list of dicts, and (no hub
needed) the built-in procedural tasks "arithmetic?size=N&seed=S&terms=..." and
"word-problems?steps=..." (tasks.py), "single-digit?size=N&seed=S", the CHAMP problems "champ"
(champ-dataset), and "reasoning-gym:<task>?size=N&seed=S&key=value" with the `gym` extra.
"""

from __future__ import annotations

import csv
import decimal
import difflib
import functools
import importlib.util
import io
import json
import math
import numbers
import os
import random
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import unquote

__all__ = [
    "DAPO_INSTRUCTION", "DataError", "Problem", "PromptSampler", "champ_problems", "from_records",
    "config_problems", "load_problems", "reasoning_gym_problems", "single_digit_problems", "unique_problems",
]

DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
PROBLEM_KEYS = ("problem", "question")  # AIME-style text columns, matched case-insensitively


class DataError(ValueError):
    """A row that cannot become a Problem; the message names the file, row and field."""


@dataclass
class Problem:
    """One prompt with its ground truth, as the rollout and reward stages see it."""

    prompt: list[dict[str, str]]  # chat messages, e.g. [{"role": "user", "content": "..."}]
    answer: str  # ground truth as a string: math-verify parses it at reward time
    id: str  # stable "<origin>:<row>", e.g. "dapo.parquet:17", "reasoning-gym/basic_arithmetic:3"
    source: str = ""  # data_source: where the problem comes from
    meta: dict = field(default_factory=dict)  # JSON-serialisable extras: extra_info, task metadata

    @property
    def text(self) -> str:
        """Content of the last user message: the problem statement as the model sees it."""
        for message in reversed(self.prompt):
            if message.get("role") == "user":
                return message.get("content", "")
        return ""


def _jsonable(value: Any) -> Any:
    """`value` with tuples as lists and whatever json cannot write dropped (None at top level)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # json's NaN is not JSON
    if hasattr(value, "tolist"):  # numpy arrays and scalars, as read by pandas
        return _jsonable(value.tolist())
    if isinstance(value, dict):  # drop the entries that could not be converted
        return {str(k): c for k, v in value.items() if (c := _jsonable(v)) is not None or v is None}
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else None


def _chat(text: str, instruction: str | None) -> list[dict[str, str]]:
    """One user message: `instruction` with {problem} replaced (not str.format: LaTeX braces are common)."""
    if instruction is not None and "{problem}" not in instruction:
        raise ValueError(f"instruction has no {{problem}} placeholder: {instruction[:80]!r}")
    return [{"role": "user", "content": text if instruction is None else instruction.replace("{problem}", text)}]


def _required_text(value: Any, where: str, name: str) -> str:
    """A non-empty string field; numbers are fine (AIME answers are often ints), lists and objects are not."""
    if value is None:
        raise DataError(f"{where}: no {name}")
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real, decimal.Decimal)):
        kind = {list: "a list", tuple: "a list", dict: "an object"}.get(type(value), type(value).__name__)
        if hasattr(value, "tolist") and not isinstance(value.tolist(), (int, float)):
            kind = "an array"  # numpy / pyarrow containers, as pandas reads list columns
        shown = repr(value)
        raise DataError(f"{where}: {name} must be text or a number, got {kind}: "
                        f"{shown[:60] + '...' if len(shown) > 60 else shown}")
    if not isinstance(value, str) and not math.isfinite(value):
        raise DataError(f"{where}: {name} is {value}")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: empty {name}")
    return text


def _messages(prompt: Any, where: str) -> list[dict[str, str]]:
    """DAPO's prompt column: a list (or numpy array, via pandas) of {role, content} dicts."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise DataError(f"{where}: prompt must be a non-empty list of chat messages")
    messages = []
    for i, message in enumerate(prompt):
        for key in ("role", "content"):
            if not isinstance(message, dict) or not isinstance(message.get(key), str):
                raise DataError(f"{where}: prompt[{i}] has no string '{key}'")
        messages.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{where}: prompt has no user message")
    return messages


def _dapo_problem(row: dict, where: str, id: str) -> Problem:
    reward_model = row.get("reward_model")
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    answer = _required_text(truth, where, "reward_model.ground_truth")
    meta = _jsonable({"extra_info": row["extra_info"]}) if row.get("extra_info") is not None else {}
    return Problem(_messages(row.get("prompt"), where), answer, id, str(row.get("data_source") or ""), meta)


def _plain_problem(row: dict, where: str, id: str, origin: str, instruction: str | None) -> Problem:
    keys = {k.lower(): k for k in row if isinstance(k, str)}
    text_key = next((keys[k] for k in PROBLEM_KEYS if k in keys), None)
    if text_key is None:
        raise DataError(f"{where}: no problem/question field (keys: {sorted(map(str, row))})")
    if "answer" not in keys:
        raise DataError(f"{where}: no answer field (keys: {sorted(map(str, row))}; an AIME-style row needs "
                        "'answer', a DAPO row 'reward_model.ground_truth')")
    text = _required_text(row[text_key], where, text_key)
    answer = _required_text(row[keys["answer"]], where, keys["answer"])
    source = row.get("data_source") or row.get("source") or origin
    rest = {k: v for k, v in row.items() if k not in (text_key, keys["answer"])}
    return Problem(_chat(text, instruction), answer, id, str(source), _jsonable(rest))


def from_records(
    records: Iterable[dict], *, origin: str = "records", instruction: str | None = DAPO_INSTRUCTION
) -> list[Problem]:
    """Problems from rows in the DAPO-Math-17k schema or the AIME-style one, detected per row.

    DAPO rows ({"prompt": [messages], "reward_model": {"ground_truth": ...}, ...}) keep their
    prompt as is: it already holds the instruction. AIME-style rows ({"problem" | "question",
    "answer"}, any capitalisation) are wrapped in `instruction` (None: the bare problem).
    A bad row raises DataError("<origin> row <i>: <what is missing>"); rows count from 0, as the
    problems' ids ("<origin>:<i>") do.
    """
    problems = []
    for index, row in enumerate(records):
        where, id = f"{origin} row {index}", f"{origin}:{index}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a dict, got {type(row).__name__}")
        if "reward_model" in row or ("prompt" in row and not isinstance(row["prompt"], str)):
            problems.append(_dapo_problem(row, where, id))
        else:
            problems.append(_plain_problem(row, where, id, origin, instruction))
    return problems


def _replaced_field(value: Any, path: str = "") -> str | None:
    """Where in a row (e.g. "problem", "prompt[0].content") the first U+FFFD (a byte that was not UTF-8) sits."""
    if isinstance(value, str):
        return path if "\ufffd" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\ufffd" in key:
            return f"{path}.{key}".lstrip(".")  # a bad byte in a column name
        found = _replaced_field(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."))
        if found:
            return found
    return None


def _not_utf8(path: Path, data: bytes, error: UnicodeDecodeError, rows, *, first_row: int = 0,
              line: int | None = None, offset: int = 0) -> DataError:
    """DataError naming the file, line, row and field of the first byte that is not UTF-8.

    `rows(text)` reads the rows of `data` decoded with replacement characters, to find the field."""
    line = data.count(b"\n", 0, error.start) + 1 if line is None else line
    where = f"{path.name} line {line}"
    try:
        for index, row in enumerate(rows(data.decode("utf-8-sig", "replace")), first_row):
            field = _replaced_field(row)
            if field:
                where += f" (row {index}, field {field!r})"
                break
    except (ValueError, csv.Error):  # not even readable with the bad bytes replaced: the line has to do
        pass
    return DataError(f"{where}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {offset + error.start}); "
                     "save the file as UTF-8")


def _read_rows(path: Path) -> Iterator[dict]:
    """Rows of a file, lazily where the format allows (DAPO-Math-17k's parquet has 1.8M rows)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa  # imported here: only file loading needs it
        import pyarrow.parquet as pq

        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path.name}: not a readable parquet file ({exc})") from exc
    elif suffix == ".jsonl":
        offset, row = 0, 0
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise _not_utf8(path, raw, exc, lambda text: [json.loads(text)], first_row=row, line=line_no,
                                    offset=offset) from exc
                offset += len(raw)
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path.name} line {line_no}: invalid JSON ({exc})") from exc
                    row += 1
    elif suffix == ".json":
        data = path.read_bytes()
        try:
            rows = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, data, exc, json.loads) from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(rows, list):
            raise DataError(f"{path.name}: expected a JSON list of rows, got {type(rows).__name__}")
        yield from rows
    elif suffix == ".csv":
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, data, exc, lambda text: csv.DictReader(io.StringIO(text, newline=""))) from exc
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            yield from reader
        except csv.Error as exc:
            raise DataError(f"{path.name} line {reader.line_num}: unreadable CSV ({exc})") from exc
    else:
        raise ValueError(f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


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
    from .tasks import TASKS  # tasks.py builds on this module

    if isinstance(source, (list, tuple)):
        return from_records(islice(source, limit), instruction=instruction)
    name, _, query = source.partition("?") if isinstance(source, str) else ("", "", "")
    if name in ("champ", "single-digit", *TASKS) or name.startswith("reasoning-gym:"):
        options = {k: _query_value(v) for k, v in _query_pairs(query)}
        size = options.pop("size", next((n for n in (size, limit) if n is not None), 64))
        seed = options.pop("seed", seed)
        if name in ("champ", "single-digit") and options:
            raise ValueError(f"load_problems: {name!r} takes only size and seed; unknown option(s) {sorted(options)}")
        if name == "champ":
            problems = champ_problems(limit, instruction=instruction)
        elif name == "single-digit":
            problems = single_digit_problems(size, seed, instruction=instruction)[:limit]
        elif name in TASKS:
            try:
                problems = TASKS[name](size, seed, instruction=instruction, **options)[:limit]
            except TypeError as exc:  # an unknown option
                raise ValueError(f"load_problems: {name!r}: bad option(s) {sorted(options)}: {exc}") from exc
        else:
            task = name.removeprefix("reasoning-gym:")
            problems = reasoning_gym_problems(task, size, seed, instruction=instruction, **options)[:limit]
        if not problems:
            raise DataError(f"the data source {source!r} made no problems (size={size}, limit={limit}); "
                            "nothing to train or evaluate on")
        return problems
    path = Path(os.fspath(source))
    if not path.is_file():
        named = difflib.get_close_matches(str(source).partition("?")[0], ["champ", "single-digit", *TASKS], n=1)
        hint = f" (did you mean the built-in source {named[0]!r}?)" if named else ""
        raise FileNotFoundError(f"load_problems: no such file: {path}{hint}")
    problems = from_records(islice(_read_rows(path), limit), origin=path.name, instruction=instruction)
    if not problems:
        raise DataError(f"{path}: the file holds no rows; nothing to train or evaluate on")
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
        answer = _required_text(entry.get("answer"), f"{origin} row {index}", "answer")
        meta = _jsonable(entry.get("metadata") or {})
        problems.append(Problem(_chat(entry["question"], instruction), answer, f"{origin}:{index}", origin, meta))
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
        problems.append(Problem(_chat(text, instruction), answer, f"champ:{identifier}", "champ", meta))
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
        prompt = _chat(f"What is {a} {op} {b}?", instruction)
        problems.append(Problem(prompt, answer, f"single-digit:{index}", "single-digit", {"a": a, "b": b, "op": op}))
    return problems


def config_problems(config, which: str) -> list[Problem]:
    """The problems a run trains (`which="train"`) or evaluates (`"eval"`) on, as its TrainConfig names them.

    train: the first `data_limit` rows of `config.data`. eval: the rows of `config.eval_data` that
    hold its first `eval_limit` distinct problems, repeats kept (evaluation samples each problem once
    and counts the repeats as eval/duplicates); a procedural eval source makes `eval_limit` problems.
    """
    instruction = {"dapo": DAPO_INSTRUCTION, "none": None}.get(config.instruction, config.instruction)
    if which not in ("train", "eval"):
        raise ValueError(f"config_problems: which must be 'train' or 'eval', not {which!r}")
    field = "data" if which == "train" else "eval_data"
    try:
        if which == "train":
            return load_problems(config.data, limit=config.data_limit, instruction=instruction, seed=config.seed)
        rows = load_problems(config.eval_data, instruction=instruction, seed=config.seed, size=config.eval_limit)
    except DataError as exc:
        raise DataError(f"TrainConfig.{field}: {exc}") from exc
    keep = {_problem_key(p) for p in unique_problems(rows)[: config.eval_limit]}
    return [p for p in rows if _problem_key(p) in keep]


def _problem_key(problem: Problem) -> tuple[str, str]:
    return json.dumps(problem.prompt, sort_keys=True), str(problem.answer)


def unique_problems(problems) -> list:
    """`problems` without repeats of the same prompt and answer, in first-seen order.

    >>> from fipo_nb.data import Problem
    >>> a, b = Problem([{"role": "user", "content": "1+1?"}], "2", "f:0"), Problem([{"role": "user", "content": "2+2?"}], "4", "f:1")
    >>> [p.id for p in unique_problems([a, b, Problem(a.prompt, "2", "f:2")])]
    ['f:0', 'f:1']
    """
    seen, out = set(), []
    for problem in problems:
        key = _problem_key(problem)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


class PromptSampler:
    """Yields batches of problems in a shuffled order, epoch after epoch; deterministic by seed; resumable.

    >>> sampler = PromptSampler(single_digit_problems(3), batch_size=2, seed=0)
    >>> len(sampler.next_batch()), len(sampler.next_batch()), sampler.state_dict()["epoch"]
    (2, 2, 1)
    """

    def __init__(self, problems: Sequence[Problem], batch_size: int, *, seed: int = 0, shuffle: bool = True):
        if len(problems) == 0:
            raise ValueError("PromptSampler needs at least one problem")
        if batch_size < 1:
            raise ValueError(f"PromptSampler: batch_size must be >= 1; got {batch_size}")
        self.problems, self.batch_size, self.seed, self.shuffle = list(problems), batch_size, seed, shuffle
        self.load_state_dict({"epoch": 0, "position": 0})

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        if self.shuffle:  # a string seed hashes the same in every process (unlike hash())
            random.Random(f"fipo_nb.PromptSampler:{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[Problem]:
        """The next batch_size problems; an epoch boundary inside a batch reshuffles there."""
        batch = []
        for _ in range(self.batch_size):
            if self.position == len(self.problems):
                self.epoch, self.position = self.epoch + 1, 0
                self._current = self._order(self.epoch)
            batch.append(self.problems[self._current[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def load_state_dict(self, state: dict) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self.problems):
            raise ValueError(f"PromptSampler: bad state {state} for {len(self.problems)} problems")
        self.epoch, self.position = epoch, position
        self._current = self._order(epoch)
