"""A problem as every stage sees it: chat messages, the ground-truth answer, a stable id.

Sources (files, built-in tasks) build `Problem`s with `chat_prompt`, which wraps the problem text
in an instruction ("{problem}" replaced, not str.format: LaTeX braces are common).
"""

from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DAPO_INSTRUCTION", "DataError", "Problem", "chat_prompt", "jsonable", "required_text"]

DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)


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


def jsonable(value: Any) -> Any:
    """`value` with tuples as lists and whatever json cannot write dropped (None at top level)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # json's NaN is not JSON
    if hasattr(value, "tolist"):  # numpy arrays and scalars, as read by pandas
        return jsonable(value.tolist())
    if isinstance(value, dict):  # drop the entries that could not be converted
        return {str(k): c for k, v in value.items() if (c := jsonable(v)) is not None or v is None}
    return [jsonable(v) for v in value] if isinstance(value, (list, tuple)) else None


def chat_prompt(text: str, instruction: str | None) -> list[dict[str, str]]:
    """One user message: `instruction` with {problem} replaced (not str.format: LaTeX braces are common)."""
    if instruction is not None and "{problem}" not in instruction:
        raise ValueError(f"instruction has no {{problem}} placeholder: {instruction[:80]!r}")
    return [{"role": "user", "content": text if instruction is None else instruction.replace("{problem}", text)}]


def required_text(value: Any, where: str, name: str) -> str:
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


