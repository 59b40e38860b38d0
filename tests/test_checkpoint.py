"""Checkpoints and exact resume: complete-or-absent folders, corruption named, metrics equal to the digit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fipo_nb.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, verify_checkpoint
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer

TIMING = ("time/", "tokens_per_s")


def rows(run_dir):
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        out.append({k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)})
    return out


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "fipo_nb.cli", *args], capture_output=True, text=True)
    return done


def smoke(tmp_path, *overrides):
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", *overrides])


def test_four_steps_equal_two_plus_resume_two(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--preset", "cpu-smoke", "--set", "trace_samples=2", "--set", "eval_data=single-digit?size=4&seed=3",
              "--set", "eval_every=2"]
    assert cli("train", *common, "--steps", "4", "--out", str(straight)).returncode == 0
    first = cli("train", *common, "--steps", "2", "--out", str(split))
    assert first.returncode == 0, first.stderr
    second = cli("train", *common, "--steps", "4", "--out", str(split), "--resume")
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stdout and "after step 2" in second.stdout
    assert [r["step"] for r in rows(split)] == [1, 2, 3, 4]  # one row per step
    assert rows(split) == rows(straight)  # to the last digit, timings apart
    evals = lambda d: [{k: v for k, v in json.loads(x).items() if not k.startswith(TIMING)}  # noqa: E731
                       for x in (d / "eval.jsonl").read_text().splitlines()]
    assert evals(split) == evals(straight)
    assert sorted(p.name for p in (split / "traces").iterdir()) == [f"step-00000{i}.parquet" for i in range(1, 5)]


def test_checkpoint_holds_everything_to_continue(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path))
    trainer.train(1, progress=False)
    folder = tmp_path / "checkpoints" / "step-1"
    names = {p.name for p in folder.iterdir()}
    assert {"trainable.safetensors", "adapter", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json",
            "config.json", "manifest.json"} <= names
    manifest = verify_checkpoint(folder)
    assert "adapter/adapter_model.safetensors" in manifest["files"]
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["sampler"]["position"] == 4


def test_a_crash_after_the_checkpoint_is_rolled_back_on_resume(tmp_path):
    config = smoke(tmp_path, "save_every=2")
    trainer = FIPOTrainer(config)
    trainer.train(3, progress=False)  # checkpoints at 2 (save_every) and 3 (end of train)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 2]
    shutil.rmtree(tmp_path / "checkpoints" / "step-3")  # as if the run died after logging step 3
    resumed = FIPOTrainer.resume(tmp_path)
    assert resumed.step_count == 2 and [m["step"] for m in resumed.history] == [1, 2]
    resumed.train(until=4, progress=False)
    straight = FIPOTrainer(smoke(tmp_path / "straight"))
    straight.train(4, progress=False)
    assert rows(tmp_path) == rows(tmp_path / "straight")


def test_corrupted_checkpoint_is_named_and_fallback_only_when_asked(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "save_every=1"))
    trainer.train(2, progress=False)
    weights = tmp_path / "checkpoints" / "step-2" / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step-2/trainable.safetensors: contents differ"):
        FIPOTrainer.resume(tmp_path)
    done = cli("train", "--preset", "cpu-smoke", "--steps", "3", "--out", str(tmp_path), "--resume")
    assert done.returncode == 2 and "trainable.safetensors" in done.stderr and "Traceback" not in done.stderr
    with pytest.warns(UserWarning, match="skipping checkpoint step 2"):
        resumed = FIPOTrainer.resume(tmp_path, fallback=True)
    assert resumed.step_count == 1


def test_partial_checkpoints_are_never_taken_for_complete_ones(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path))
    trainer.train(1, progress=False)
    (tmp_path / "checkpoints" / ".step-2.tmp999").mkdir()  # a save killed before its rename: ignored
    partial = tmp_path / "checkpoints" / "step-2"
    shutil.copytree(tmp_path / "checkpoints" / "step-1", partial)
    (partial / "manifest.json").unlink()  # a folder without its manifest is not a checkpoint
    with pytest.raises(CheckpointError, match="step-2/manifest.json: missing"):
        latest_checkpoint(tmp_path)
    with pytest.warns(UserWarning, match="skipping checkpoint step 2"):
        assert latest_checkpoint(tmp_path, fallback=True).name == "step-1"


def test_a_fresh_run_does_not_silently_reuse_an_old_output_dir(tmp_path):
    assert cli("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path)).returncode == 0
    again = cli("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path))
    assert again.returncode == 2 and "--resume continues it, --overwrite starts over" in again.stderr
    over = cli("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path), "--overwrite")
    assert over.returncode == 0 and [r["step"] for r in rows(tmp_path)] == [1]
