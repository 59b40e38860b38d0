"""The `fipo-nb` command, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fipo_nb.report import write_report


def fipo_nb(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fipo_nb.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_train_cpu_smoke_writes_metrics_config_and_report(tmp_path):
    out = tmp_path / "run"
    done = fipo_nb("train", "--preset", "cpu-smoke", "--steps", "2", "--out", str(out),  # a report by default
                   "--set", "fipo.decay_rate=16", "--set", "eval_data=single-digit?size=3", "--set", "eval_every=2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert json.loads((out / "config.json").read_text())["fipo"]["decay_rate"] == 16.0
    assert "step  reward" in done.stdout and f"report:  {out / 'report.html'}" in done.stdout
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "http" not in page.split("<pre>")[0]
    assert "\n  eval: avg@4 " in done.stdout  # the evaluation under its step's row
    quiet = fipo_nb("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path / "quiet"), "--no-report")
    assert quiet.returncode == 0 and not (tmp_path / "quiet" / "report.html").exists() and "report:" not in quiet.stdout


def test_own_data_is_evaluated_on_its_held_out_problems_and_the_presets_instruction_is_named(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(20)))
    done = fipo_nb("train", "--preset", "demo", "--set", f"data={path}", "--print-config")
    config = json.loads(done.stdout)
    assert config["eval_data"] is None and config["eval_holdout"] == 0.1 and config["data"] == str(path)
    assert done.stderr.count("note: evaluation holds out 10% of your data's problems") == 1
    assert "not the preset's eval_data 'arithmetic?size=8" in done.stderr
    assert "note: problem/answer rows are wrapped in the preset's instruction" in done.stderr
    assert "--set instruction=dapo" in done.stderr
    chosen = fipo_nb("train", "--preset", "demo", "--set", f"data={path}", "--set", "eval_data=none",
                     "--set", "instruction=dapo", "--print-config")
    assert json.loads(chosen.stdout)["eval_holdout"] == 0.0 and "note:" not in chosen.stderr  # asked: as asked


def test_presets_lists_every_preset():
    done = fipo_nb("presets")
    assert done.returncode == 0
    for name in ("cpu-smoke", "demo", "qlora-qwen2.5-7b", "paper-fipo-32b", "paper-dapo-32b"):
        assert name in done.stdout


def test_bad_preset_and_set_key_give_one_clear_line():
    done = fipo_nb("train", "--preset", "nope")
    assert done.returncode == 2 and "valid presets: cpu-smoke" in done.stderr and "Traceback" not in done.stderr
    done = fipo_nb("train", "--preset", "cpu-smoke", "--set", "learning_rate=1")
    assert done.returncode == 2 and "unknown setting 'learning_rate'" in done.stderr and "fipo.decay_rate" in done.stderr


def test_paper_preset_prints_its_config_and_refuses_to_start(tmp_path):
    done = fipo_nb("train", "--preset", "paper-fipo-32b", "--print-config")
    assert done.returncode == 0 and json.loads(done.stdout)["prompts_per_step"] == 512
    done = fipo_nb("train", "--preset", "paper-fipo-32b", "--out", str(tmp_path))
    assert done.returncode == 2 and "scale-out" in done.stderr


def test_report_of_a_missing_run_is_named(tmp_path):
    done = fipo_nb("report", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "no metrics.jsonl in" in done.stderr and "nowhere" in done.stderr


def test_report_names_a_broken_metrics_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n{"step": 2,\n')
    with pytest.raises(ValueError, match="metrics.jsonl: line 2 is not JSON"):
        write_report(tmp_path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"", "empty.jsonl: the file holds no rows"),
        ("latin1.jsonl", b'{"problem": "caf\xe9?", "answer": "3"}\n',
         "latin1.jsonl line 1 (row 0, field 'problem'): not UTF-8 text"),
        ("list.jsonl", b'{"problem": ["What is", "2+2?"], "answer": "4"}\n',
         "list.jsonl row 0 (counted from 0): problem must be text or a number, got a list"),
    ],
)
def test_bad_data_file_is_one_line_naming_it_and_nothing_is_trained(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "run"
    done = fipo_nb("train", "--preset", "cpu-smoke", "--set", f"data={tmp_path / name}", "--steps", "1",
                   "--out", str(out))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fipo-nb: error: ")
    assert message in lines[0]
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_compare_trains_each_loss_into_its_own_run_and_writes_the_page(tmp_path):
    out = tmp_path / "cmp"
    done = fipo_nb("compare", "--preset", "cpu-smoke", "--steps", "1", "--out", str(out), "--losses", "fipo,grpo",
                   "--set", "max_response_length=8", "--set", "prompts_per_step=2", "--set", "mini_batch_size=1")
    assert done.returncode == 0, done.stderr
    assert f"compare: {out / 'compare.html'}" in done.stdout and "| fipo | 1 |" in done.stdout
    assert "| grpo | 1 |" in done.stdout
    for loss in ("fipo", "grpo"):
        assert json.loads((out / loss / "config.json").read_text())["fipo"]["loss"] == loss
        assert (out / loss / "report.html").exists()
    assert json.loads((out / "compare.json").read_text())["same_step1_rollouts"] is True
    again = fipo_nb("compare", "--preset", "cpu-smoke", "--steps", "1", "--out", str(out), "--losses", "fipo,grpo")
    assert again.returncode == 2 and "holds an earlier run" in again.stderr and "--overwrite" in again.stderr


def test_compare_names_a_bad_loss_in_one_line(tmp_path):
    done = fipo_nb("compare", "--preset", "cpu-smoke", "--out", str(tmp_path), "--losses", "fipo,sac")
    assert done.returncode == 2 and "got fipo, sac" in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_finishes_the_step_and_saves_it_so_resume_loses_nothing(tmp_path):
    import signal

    out = tmp_path / "run"
    # SIGINT as an interactive shell gives it: a background job (`make test &`) would pass on an ignored SIGINT
    proc = subprocess.Popen([sys.executable, "-m", "fipo_nb.cli", "train", "--preset", "cpu-smoke", "--steps", "500",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # the table's first step row: training is under way
        if line.split() and line.split()[0] == "1":
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    steps = len((out / "metrics.jsonl").read_text().splitlines())
    assert f"interrupted after step {steps}; checkpoint {out / 'checkpoints' / f'step-{steps}'}" in err
    done = fipo_nb("train", "--preset", "cpu-smoke", "--steps", str(steps + 1), "--out", str(out), "--resume")
    assert done.returncode == 0 and f"resuming {out} after step {steps}" in done.stdout, done.stderr


def test_resume_keeps_the_runs_settings_and_refuses_changes_by_name(tmp_path):
    out = tmp_path / "run"
    assert fipo_nb("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(out), "--set", "lr=0.001").returncode == 0
    changed = fipo_nb("train", "--preset", "cpu-smoke", "--steps", "2", "--out", str(out), "--resume",
                      "--set", "lr=0.5", "--set", "fipo.loss=dapo")
    assert changed.returncode == 2 and "lr 0.001 -> 0.5" in changed.stderr and "fipo.loss 'fipo' -> 'dapo'" in changed.stderr
    # without the original --set, the run's own lr (not the preset's 5e-3) goes on
    done = fipo_nb("train", "--preset", "cpu-smoke", "--steps", "2", "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["lr"] == 0.001
    saved = (out / "checkpoints" / "step-2").stat().st_mtime_ns
    again = fipo_nb("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(out), "--resume")
    assert again.returncode == 0 and "already at step 2 (steps=1): nothing to do" in again.stdout
    assert (out / "checkpoints" / "step-2").stat().st_mtime_ns == saved


def test_an_output_folder_that_is_a_file_and_a_demo_over_another_run_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    for command in (["train", "--preset", "cpu-smoke"], ["demo"], ["compare", "--preset", "cpu-smoke"]):
        done = fipo_nb(*command, "--out", str(tmp_path / "afile" / "sub"))
        assert done.returncode == 2 and "afile is a file, not a folder" in done.stderr, (command, done.stderr)
    assert fipo_nb("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path / "run")).returncode == 0
    done = fipo_nb("demo", "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "holds a run of tiny-qwen2-char, not a demo: --overwrite" in done.stderr
    assert (tmp_path / "run" / "checkpoints" / "step-1").exists()


def test_plan_defaults_to_the_presets_cluster_as_launch_does():
    done = fipo_nb("plan", "--preset", "paper-fipo-32b")
    assert done.returncode == 0 and "on 16 node(s) x 8 GPU(s)" in done.stdout, done.stderr


def test_typos_get_a_suggestion_and_a_comparison_folder_is_pointed_to(tmp_path):
    done = fipo_nb("train", "--preset", "cpu-smoke", "--set", "lrr=0.1", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "unknown setting 'lrr'; did you mean 'lr'?" in done.stderr
    done = fipo_nb("train", "--preset", "cpu-smoke", "--set", "data=word-problem", "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "did you mean the built-in source 'word-problems'?" in done.stderr
    (tmp_path / "cmp" / "fipo").mkdir(parents=True)
    (tmp_path / "cmp" / "fipo" / "metrics.jsonl").write_text("")
    (tmp_path / "cmp" / "compare.html").write_text("<html></html>")
    done = fipo_nb("report", str(tmp_path / "cmp"))
    assert done.returncode == 2 and "is a comparison: open" in done.stderr and str(tmp_path / "cmp" / "fipo") in done.stderr
