"""Problems from files and rows: DAPO-Math-17k's schema or AIME-style problem/answer rows.

    .parquet  .jsonl  .json (a list of rows)  .csv

A DAPO row ({"prompt": [chat messages], "reward_model": {"ground_truth": ...}, "data_source": ...})
keeps its prompt: it already holds the instruction. An AIME-style row ({"problem" or "question",
"answer"}, any capitalisation) is wrapped in the run's instruction. A bad row or byte raises
DataError naming the file, line, row and field.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from .problems import DAPO_INSTRUCTION, DataError, Problem, chat_prompt, jsonable, required_text

__all__ = ["FILE_SUFFIXES", "PROBLEM_KEYS", "from_records", "read_rows"]

FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
PROBLEM_KEYS = ("problem", "question")  # AIME-style text columns, matched case-insensitively


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
    answer = required_text(truth, where, "reward_model.ground_truth")
    meta = jsonable({"extra_info": row["extra_info"]}) if row.get("extra_info") is not None else {}
    return Problem(_messages(row.get("prompt"), where), answer, id, str(row.get("data_source") or ""), meta)


def _plain_problem(row: dict, where: str, id: str, origin: str, instruction: str | None) -> Problem:
    keys = {k.lower(): k for k in row if isinstance(k, str)}
    text_key = next((keys[k] for k in PROBLEM_KEYS if k in keys), None)
    if text_key is None:
        raise DataError(f"{where}: no problem/question field (keys: {sorted(map(str, row))})")
    if "answer" not in keys:
        raise DataError(f"{where}: no answer field (keys: {sorted(map(str, row))}; an AIME-style row needs "
                        "'answer', a DAPO row 'reward_model.ground_truth')")
    text = required_text(row[text_key], where, text_key)
    answer = required_text(row[keys["answer"]], where, keys["answer"])
    source = row.get("data_source") or row.get("source") or origin
    rest = {k: v for k, v in row.items() if k not in (text_key, keys["answer"])}
    return Problem(chat_prompt(text, instruction), answer, id, str(source), jsonable(rest))


def from_records(
    records: Iterable[dict], *, origin: str = "records", instruction: str | None = DAPO_INSTRUCTION
) -> list[Problem]:
    """Problems from rows in the DAPO-Math-17k schema or the AIME-style one, detected per row.

    DAPO rows ({"prompt": [messages], "reward_model": {"ground_truth": ...}, ...}) keep their
    prompt as is: it already holds the instruction. AIME-style rows ({"problem" | "question",
    "answer"}, any capitalisation) are wrapped in `instruction` (None: the bare problem).
    A bad row raises DataError("<origin> row <i> (counted from 0): <what is missing>"); rows count from 0,
    as the problems' ids ("<origin>:<i>") do.
    """
    problems = []
    for index, row in enumerate(records):
        where, id = f"{origin} row {index} (counted from 0)", f"{origin}:{index}"
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


def read_rows(path: Path) -> Iterator[dict]:
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


