"""Problems: where prompts and their answers come from, and how a run deals them out.

    problems.py   Problem (chat messages, answer, id), the instruction that wraps a problem
    files.py      .parquet / .jsonl / .json / .csv files and rows -> Problems (DAPO-Math-17k or problem/answer)
    tasks.py      built-in sources: arithmetic, word-problems, single-digit, champ, reasoning-gym
    sources.py    BUILTIN (the one registry of built-in sources), load_problems, config_problems
    sampler.py    PromptSampler (seeded, resumable order), unique_problems
"""

from .files import FILE_SUFFIXES, PROBLEM_KEYS, from_records
from .problems import DAPO_INSTRUCTION, DataError, Problem, chat_prompt
from .sampler import PromptSampler, unique_problems
from .sources import BUILTIN, config_problems, load_problems
from .tasks import arithmetic_problems, champ_problems, reasoning_gym_problems, single_digit_problems, word_problems

__all__ = [
    "BUILTIN", "DAPO_INSTRUCTION", "DataError", "FILE_SUFFIXES", "PROBLEM_KEYS", "Problem", "PromptSampler",
    "arithmetic_problems", "champ_problems", "chat_prompt", "config_problems", "from_records", "load_problems",
    "reasoning_gym_problems", "single_digit_problems", "unique_problems", "word_problems",
]
