"""fipo_nb.data: real files written with pyarrow/json/csv, real reasoning-gym and champ-dataset."""

from __future__ import annotations

import csv
import doctest
import importlib.util
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fipo_nb.data.files
import fipo_nb.data.problems
import fipo_nb.data.sampler
import fipo_nb.data.sources
from fipo_nb.data import (
    DAPO_INSTRUCTION,
    DataError,
    Problem,
    PromptSampler,
    champ_problems,
    config_problems,
    from_records,
    load_problems,
    reasoning_gym_problems,
    single_digit_problems,
)


def dapo_row(problem: str, answer: str, index: str) -> dict:
    """One row in the DAPO-Math-17k schema (BytedTsinghua-SIA/DAPO-Math-17k)."""
    return {
        "data_source": "math_dapo",
        "prompt": [{"content": DAPO_INSTRUCTION.format(problem=problem), "role": "user"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": answer, "style": "rule-lm"},
        "extra_info": {"index": index},
    }


DAPO_ROWS = [
    dapo_row("In triangle $ABC$, $AB = 5$ and $BC = 12$ with a right angle at $B$. Find $AC$.", "13", "a-0"),
    dapo_row("Find the sum of all positive divisors of $12$.", "28", "a-1"),
    dapo_row("Compute $\\frac{1}{2} + \\frac{1}{3}$ as $\\frac{m}{n}$; give $m + n$.", "11", "a-2"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_doctests_pass():
    for module in (fipo_nb.data.sources, fipo_nb.data.sampler, fipo_nb.data.problems, fipo_nb.data.files):
        assert doctest.testmod(module).failed == 0


def test_dapo_parquet_round_trip_keeps_prompt_answer_and_ids(tmp_path):
    path = tmp_path / "dapo.parquet"
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), path)
    problems = load_problems(path)
    assert [p.answer for p in problems] == ["13", "28", "11"]
    assert [p.id for p in problems] == ["dapo.parquet:0", "dapo.parquet:1", "dapo.parquet:2"]
    assert problems[1].prompt == [{"role": "user", "content": DAPO_ROWS[1]["prompt"][0]["content"]}]
    assert problems[1].source == "math_dapo"
    assert problems[1].meta == {"extra_info": {"index": "a-1"}}
    assert problems[0].text.startswith("Solve the following math problem")  # no second instruction added
    assert problems[0].text.count("Remember to put your answer") == 1


def test_dapo_jsonl_gives_the_same_problems_as_parquet_apart_from_ids(tmp_path):
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), tmp_path / "dapo.parquet")
    from_parquet = load_problems(tmp_path / "dapo.parquet")
    from_jsonl = load_problems(write_jsonl(tmp_path / "dapo.jsonl", DAPO_ROWS))
    assert [p.id for p in from_jsonl] == ["dapo.jsonl:0", "dapo.jsonl:1", "dapo.jsonl:2"]
    assert [(p.prompt, p.answer, p.source, p.meta) for p in from_jsonl] == [
        (p.prompt, p.answer, p.source, p.meta) for p in from_parquet
    ]


def test_dapo_prompt_may_be_a_numpy_array_of_dicts_as_pandas_reads_it(tmp_path):
    row = dict(DAPO_ROWS[0], prompt=np.array(DAPO_ROWS[0]["prompt"], dtype=object))
    [problem] = from_records([row])
    assert problem.prompt == [{"role": "user", "content": DAPO_ROWS[0]["prompt"][0]["content"]}]
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), tmp_path / "dapo.parquet")
    records = pd.read_parquet(tmp_path / "dapo.parquet").to_dict("records")
    assert [p.answer for p in from_records(records)] == ["13", "28", "11"]


def test_parquet_limit_reads_only_the_first_rows(tmp_path):
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS * 10), tmp_path / "dapo.parquet")
    problems = load_problems(tmp_path / "dapo.parquet", limit=4)
    assert [p.answer for p in problems] == ["13", "28", "11", "13"]


def test_aime_jsonl_any_capitalisation_and_int_answers(tmp_path):
    rows = [{"ID": "2024-I-1", "Problem": "Find $x$ if $x + 1 = 35$.", "Answer": 34}]
    [problem] = load_problems(write_jsonl(tmp_path / "aime.jsonl", rows))
    assert problem.answer == "34"
    assert problem.prompt == [{"role": "user", "content": DAPO_INSTRUCTION.format(problem=rows[0]["Problem"])}]
    assert problem.text == DAPO_INSTRUCTION.format(problem="Find $x$ if $x + 1 = 35$.")
    assert problem.id == "aime.jsonl:0" and problem.source == "aime.jsonl"
    assert problem.meta == {"ID": "2024-I-1"}


def test_aime_csv_and_json_files(tmp_path):
    with (tmp_path / "aime.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["question", "answer"])
        writer.writeheader()
        writer.writerows([{"question": "What is 6 * 7?", "answer": "42"}, {"question": "1 + 1?", "answer": "2"}])
    problems = load_problems(tmp_path / "aime.csv", instruction=None)
    assert [(p.text, p.answer, p.id) for p in problems] == [
        ("What is 6 * 7?", "42", "aime.csv:0"), ("1 + 1?", "2", "aime.csv:1")
    ]
    (tmp_path / "rows.json").write_text(json.dumps([{"problem": "2 + 3?", "answer": 5}]))
    [problem] = load_problems(tmp_path / "rows.json", instruction="Q: {problem} Put it in \\boxed{}.")
    assert (problem.text, problem.answer) == ("Q: 2 + 3? Put it in \\boxed{}.", "5")  # LaTeX braces are fine
    with pytest.raises(ValueError, match="no {problem} placeholder"):
        load_problems(tmp_path / "rows.json", instruction="Solve it.")


def test_list_of_dicts_mixes_schemas_row_by_row():
    problems = load_problems([DAPO_ROWS[0], {"question": "3 + 4?", "answer": 7.5}], instruction=None)
    assert [p.answer for p in problems] == ["13", "7.5"]
    assert [p.id for p in problems] == ["records:0", "records:1"]
    assert problems[1].prompt == [{"role": "user", "content": "3 + 4?"}]


@pytest.mark.parametrize(
    "row, field",
    [
        ({**DAPO_ROWS[0], "reward_model": {"style": "rule"}}, "no reward_model.ground_truth"),
        ({**DAPO_ROWS[0], "reward_model": {"ground_truth": " "}}, "empty reward_model.ground_truth"),
        ({**DAPO_ROWS[0], "prompt": [{"role": "user"}]}, "prompt[0] has no string 'content'"),
        ({**DAPO_ROWS[0], "prompt": [{"role": "system", "content": "x"}]}, "no user message"),
        ({"problem": "1 + 1?"}, "no answer field"),
        ({"problem": "1 + 1?", "answer": ""}, "empty answer"),
        ({"problem": "1 + 1?", "answer": None}, "no answer"),
        ({"Question": "", "answer": "2"}, "empty Question"),
        ({"text": "1 + 1?", "answer": "2"}, "no problem/question field"),
        (["1 + 1?", "2"], "expected a dict, got list"),
        ({"problem": ["What is", "2+2?"], "answer": "4"}, "problem must be text or a number, got a list"),
        ({"problem": {"text": "2+2?"}, "answer": "4"}, "problem must be text or a number, got an object"),
        ({"problem": "2+2?", "answer": [4]}, "answer must be text or a number, got a list"),
        ({"problem": "2+2?", "answer": True}, "answer must be text or a number, got bool"),
        ({**DAPO_ROWS[0], "reward_model": {"ground_truth": ["13", "14"]}},
         "reward_model.ground_truth must be text or a number, got a list"),
    ],
)
def test_malformed_row_error_names_file_row_and_field(tmp_path, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [DAPO_ROWS[1], DAPO_ROWS[2], row])
    with pytest.raises(DataError, match="bad.jsonl row 2") as info:
        load_problems(path)
    assert field in str(info.value)


def test_invalid_json_line_names_file_and_line(tmp_path):
    (tmp_path / "broken.jsonl").write_text(json.dumps(DAPO_ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="broken.jsonl line 2"):
        load_problems(tmp_path / "broken.jsonl")


def test_missing_file_and_unknown_suffix_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        load_problems(tmp_path / "nowhere.parquet")
    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ValueError, match=r"rows.txt.*\.parquet, \.jsonl, \.json, \.csv"):
        load_problems(str(tmp_path / "rows.txt"))


HAS_GYM = importlib.util.find_spec("reasoning_gym") is not None
gym = pytest.mark.skipif(not HAS_GYM, reason="reasoning-gym is the optional extra fipo_nb[gym] (pycosat compiles)")


@pytest.mark.skipif(HAS_GYM, reason="reasoning-gym is installed here")
def test_reasoning_gym_without_the_extra_says_how_to_get_it():
    with pytest.raises(ImportError, match=r"pip install 'fipo_nb\[gym\]'"):
        load_problems("reasoning-gym:basic_arithmetic?size=2")


@gym
@pytest.mark.parametrize("task", ["basic_arithmetic", "gsm_symbolic", "fraction_simplification"])
def test_reasoning_gym_tasks_have_answers_and_json_metadata(task):
    problems = reasoning_gym_problems(task, size=6, seed=3)
    assert len(problems) == 6 and all(p.answer for p in problems)
    assert [p.id for p in problems] == [f"reasoning-gym/{task}:{i}" for i in range(6)]
    assert all(p.text.startswith("Solve the following") for p in problems)
    json.dumps([p.meta for p in problems])  # the trainer writes meta into JSON traces
    again = reasoning_gym_problems(task, size=6, seed=3)
    assert [(p.text, p.answer) for p in again] == [(p.text, p.answer) for p in problems]


@gym
def test_reasoning_gym_source_string_passes_size_seed_and_config():
    problems = load_problems("reasoning-gym:basic_arithmetic?size=5&seed=7&min_terms=2&max_terms=2", instruction=None)
    direct = reasoning_gym_problems("basic_arithmetic", 5, 7, instruction=None, min_terms=2, max_terms=2)
    assert [(p.text, p.answer) for p in problems] == [(p.text, p.answer) for p in direct]
    assert all(p.meta["num_terms"] == 2 for p in problems)
    assert len(load_problems("reasoning-gym:basic_arithmetic", limit=3)) == 3


@gym
def test_unknown_reasoning_gym_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'no_such_task'.*basic_arithmetic"):
        reasoning_gym_problems("no_such_task")


def test_champ_has_270_problems_with_answers():
    problems = load_problems("champ", instruction=None)
    assert len(problems) == 270
    assert all(p.answer.strip() and p.text.strip() for p in problems)
    assert len({p.id for p in problems}) == 270
    first = problems[0]
    assert first.id == "champ:P_Combinatorics_1" and first.answer == "239"
    assert first.meta["category"] == "Combinatorics"
    assert "@@" not in "".join(p.answer + p.text for p in problems)  # CHAMP's math markers are removed
    assert len(champ_problems(limit=5)) == 5


def test_single_digit_answers_are_digits_and_right():
    problems = single_digit_problems(200, seed=1, instruction=None)
    for problem in problems:
        a, op, b = problem.text.removeprefix("What is ").removesuffix("?").split()
        expected = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert problem.answer == str(expected) and 0 <= expected <= 9
    assert {p.meta["op"] for p in problems} == {"+", "-"}
    assert [p.text for p in single_digit_problems(20, seed=1)] == [p.text for p in single_digit_problems(20, seed=1)]
    assert [p.text for p in single_digit_problems(20, seed=1)] != [p.text for p in single_digit_problems(20, seed=2)]
    assert len(load_problems("single-digit?size=8&seed=1")) == 8


def test_problem_text_is_the_last_user_message():
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
              {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]
    assert Problem(prompt, "1", "x:0").text == "U2"
    assert Problem([{"role": "system", "content": "S"}], "1", "x:0").text == ""


def ids(batches):
    return [[p.id for p in batch] for batch in batches]


def test_sampler_is_deterministic_by_seed_and_each_epoch_is_a_permutation():
    problems = single_digit_problems(10)
    a, b, c = (PromptSampler(problems, 5, seed=s) for s in (0, 0, 1))
    run_a = ids(a.next_batch() for _ in range(6))
    assert run_a == ids(b.next_batch() for _ in range(6))
    assert run_a != ids(c.next_batch() for _ in range(6))
    for epoch in range(3):
        assert sorted(run_a[2 * epoch] + run_a[2 * epoch + 1]) == sorted(p.id for p in problems)
    assert run_a[0] + run_a[1] != run_a[2] + run_a[3]  # reshuffled at the epoch boundary


def test_sampler_batch_spans_epochs_and_unshuffled_keeps_order():
    problems = single_digit_problems(3)
    sampler = PromptSampler(problems, 2, shuffle=False)
    # 3 problems, batches of 2: [0 1] [2 | 0] [1 2] -> epoch 1 starts inside the second batch
    assert ids(sampler.next_batch() for _ in range(3)) == [
        ["single-digit:0", "single-digit:1"], ["single-digit:2", "single-digit:0"], ["single-digit:1", "single-digit:2"]
    ]
    assert sampler.state_dict() == {"epoch": 1, "position": 3}
    assert len(PromptSampler(problems, 7).next_batch()) == 7  # bigger than the dataset: several epochs


def test_sampler_resume_from_state_dict_equals_uninterrupted_run():
    problems = single_digit_problems(7)
    uninterrupted = PromptSampler(problems, 3, seed=5)
    expected = ids(uninterrupted.next_batch() for _ in range(10))
    first = PromptSampler(problems, 3, seed=5)
    head = ids(first.next_batch() for _ in range(4))
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = PromptSampler(problems, 3, seed=5)
    resumed.load_state_dict(state)
    assert head + ids(resumed.next_batch() for _ in range(6)) == expected


def test_sampler_rejects_empty_problems_bad_batch_size_and_bad_state():
    with pytest.raises(ValueError, match="at least one problem"):
        PromptSampler([], 2)
    with pytest.raises(ValueError, match="batch_size"):
        PromptSampler(single_digit_problems(2), 0)
    with pytest.raises(ValueError, match="bad state"):
        PromptSampler(single_digit_problems(2), 1).load_state_dict({"epoch": 0, "position": 3})


def test_unknown_options_of_named_sources_are_reported():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sise'\]"):
        load_problems("single-digit?sise=10")


@pytest.mark.parametrize(
    "name, content",
    [("empty.jsonl", b""), ("blank.jsonl", b"\n\n"), ("header.csv", b"problem,answer\n"), ("none.json", b"[]")],
)
def test_a_file_without_rows_is_named(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=f"{name}: the file holds no rows"):
        load_problems(tmp_path / name)


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("bad.jsonl", b'{"problem": "1+1?", "answer": "2"}\n\n{"problem": "caf\xe9?", "answer": "3"}\n',
         "bad.jsonl line 3 (row 1, field 'problem'): not UTF-8 text (byte 0xe9 at offset 52)"),  # 35 + 1 + 16 bytes before it
        ("bad.json", b'[{"problem": "1+1?", "answer": "2"},\n {"problem": "x", "answer": "\xff3"}]',
         "bad.json line 2 (row 1, field 'answer'): not UTF-8 text (byte 0xff at offset 66)"),
        ("bad.csv", b"problem,answer\n1+1?,2\ncaf\xe9?,3\n",
         "bad.csv line 3 (row 1, field 'problem'): not UTF-8 text (byte 0xe9 at offset 25)"),
        ("dapo.jsonl", b'{"prompt": [{"role": "user", "content": "\xe9"}], "reward_model": {"ground_truth": "3"}}\n',
         "dapo.jsonl line 1 (row 0, field 'prompt[0].content'): not UTF-8 text"),
    ],
)
def test_undecodable_bytes_name_file_line_row_and_field(tmp_path, name, content, where):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_problems(tmp_path / name)
    assert str(info.value).startswith(where)


def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path):
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfproblem,answer\n1 + 1?,2\n")
    (tmp_path / "rows.jsonl").write_bytes(b'\xef\xbb\xbf{"problem": "1 + 1?", "answer": 2}\n')
    for name in ("excel.csv", "rows.jsonl"):
        assert [(p.text, p.answer) for p in load_problems(tmp_path / name, instruction=None)] == [("1 + 1?", "2")]


def test_broken_json_and_parquet_files_are_named(tmp_path):
    (tmp_path / "rows.json").write_text('[{"problem": "1 + 1?",\n  "answer" 2}]')
    with pytest.raises(DataError, match="rows.json line 2: invalid JSON"):
        load_problems(tmp_path / "rows.json")
    (tmp_path / "dapo.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="dapo.parquet: not a readable parquet file"):
        load_problems(tmp_path / "dapo.parquet")


def test_config_problems_eval_limit_counts_distinct_problems_and_sizes_procedural_sources(tmp_path):
    from fipo_nb.config import TrainConfig
    from fipo_nb.data import config_problems

    many = config_problems(TrainConfig(eval_data="arithmetic", eval_limit=100, instruction="none"), "eval")
    assert len(many) == 100  # not the 64 a procedural source makes by default
    rows = [{"problem": f"{d} + 1 = ?", "answer": str(d + 1)} for d in range(5) for _ in range(3)]
    (tmp_path / "aime.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = config_problems(TrainConfig(eval_data=str(tmp_path / "aime.jsonl"), eval_limit=2), "eval")
    assert [p.answer for p in kept] == ["1"] * 3 + ["2"] * 3  # the first two problems, each with its repeats
    train = config_problems(TrainConfig(data=str(tmp_path / "aime.jsonl"), data_limit=4), "train")
    assert len(train) == 4
    with pytest.raises(ValueError, match="'val'"):
        config_problems(TrainConfig(), "val")


@pytest.mark.parametrize("field", ["data", "eval_data"])
def test_a_source_that_makes_no_problems_is_named_with_its_field(field):
    from fipo_nb.config import TrainConfig
    from fipo_nb.data import config_problems

    with pytest.raises(DataError, match=rf"TrainConfig\.{field}: the data source 'arithmetic\?size=0' made no problems"):
        config_problems(TrainConfig(**{field: "arithmetic?size=0"}), "train" if field == "data" else "eval")


def test_held_out_problems_are_evaluated_on_and_never_trained_on(tmp_path):
    from fipo_nb.config import TrainConfig
    from fipo_nb.data.sampler import problem_key

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": 2 * i}) + "\n" for i in range(40)))
    config = TrainConfig(data=str(path), eval_holdout=0.1, eval_limit=64, instruction="none").validate()
    train, held = config_problems(config, "train"), config_problems(config, "eval")
    assert len(held) == 4 and len(train) == 36  # 10% of 40, the rest to train on
    assert not {problem_key(p) for p in train} & {problem_key(p) for p in held}
    assert [p.id for p in config_problems(config, "eval")] == [p.id for p in held]  # the same ones every time
    assert len(config_problems(TrainConfig(**{**config.to_dict(), "eval_limit": 2}), "eval")) == 2  # at most eval_limit
    assert config_problems(TrainConfig(**{**config.to_dict(), "seed": 1}), "eval") != held  # drawn by seed
    with pytest.raises(ValueError, match="eval_holdout must be 0 when eval_data is set"):
        TrainConfig(data=str(path), eval_holdout=0.1, eval_data="single-digit").validate()
    tiny = tmp_path / "one.jsonl"
    tiny.write_text(json.dumps({"problem": "1 + 1?", "answer": 2}) + "\n")
    with pytest.raises(DataError, match="1 distinct problem\\(s\\), too few to hold 1 out"):
        config_problems(TrainConfig(data=str(tiny), eval_holdout=0.1), "eval")
