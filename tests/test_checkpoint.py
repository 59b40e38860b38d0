"""Checkpoints and exact resume: complete-or-absent folders, corruption named, metrics equal to the digit."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import fipo_nb.train.checkpoint
from fipo_nb.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    verify_checkpoint,
    write_checkpoint,
    writing,
)
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer
from tmpfs import mount_tmpfs

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
    assert again.returncode == 2 and "--resume continues that one, --overwrite replaces it" in again.stderr
    over = cli("train", "--preset", "cpu-smoke", "--steps", "1", "--out", str(tmp_path), "--overwrite")
    assert over.returncode == 0 and [r["step"] for r in rows(tmp_path)] == [1]


def no_space(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_failed_write_removes_the_partial_folder_and_names_checkpoint_folder_file_and_cause(tmp_path):
    write_checkpoint(tmp_path, 1, lambda folder: (folder / "a.bin").write_bytes(b"x" * 10))

    def disk_fills_up(folder):
        (folder / "a.bin").write_bytes(b"x" * 10)
        with writing(folder / "b.bin") as path:
            path.write_bytes(b"half")
            raise no_space(path)

    with pytest.raises(CheckpointError) as info:
        write_checkpoint(tmp_path, 2, disk_fills_up)
    assert str(info.value) == (
        f"could not save checkpoint step-2 in {tmp_path / 'checkpoints'}: No space left on device [errno 28] while "
        "writing b.bin; its partial folder was removed, the last complete one is step-1 (free some space, then "
        "save again or resume from it)"
    )
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]
    verify_checkpoint(tmp_path / "checkpoints" / "step-1")


def test_an_opaque_write_error_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    def torch_style_failure(folder):  # what torch.save(obj, path) raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 98048 vs 97940")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fipo_nb.train.checkpoint.shutil, "disk_usage", lambda path: usage(614400, 610304, 4096))
    with pytest.raises(CheckpointError, match=r"step-3 in .*: RuntimeError: \[enforce fail .* unexpected pos 98048 "
                                              r"vs 97940 \(4096 bytes free there: the disk is probably full\); .* "
                                              "there is no earlier checkpoint"):
        write_checkpoint(tmp_path, 3, torch_style_failure)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_full_disk_during_a_save_loses_nothing_and_resume_continues(tmp_path, monkeypatch):
    real_save = torch.save

    def fills_up_at_the_optimizer(obj, f, *args, **kwargs):  # writes half of optimizer.pt, then ENOSPC
        name = Path(getattr(f, "name", f)).name
        if name != "optimizer.pt":
            return real_save(obj, f, *args, **kwargs)
        data = io.BytesIO()
        real_save(obj, data)
        with open(f, "wb") if isinstance(f, (str, Path)) else open(os.devnull, "wb") as target:
            (target if isinstance(f, (str, Path)) else f).write(data.getvalue()[: len(data.getvalue()) // 2])
        raise no_space(name)

    trainer = FIPOTrainer(smoke(tmp_path, "save_every=1"))
    trainer.train(1, progress=False)
    monkeypatch.setattr(torch, "save", fills_up_at_the_optimizer)
    with pytest.raises(CheckpointError, match=r"step-2 .*No space left on device \[errno 28\] while writing "
                                              r"optimizer.pt; .*the last complete one is step-1"):
        trainer.train(1, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]  # no .step-2.tmp*
    assert trainer.step_count == 2 and [r["step"] for r in rows(tmp_path)] == [1, 2]
    monkeypatch.setattr(torch, "save", real_save)  # space is free again
    resumed = FIPOTrainer.resume(tmp_path)
    assert resumed.step_count == 1 and [r["step"] for r in rows(tmp_path)] == [1]
    resumed.train(until=2, progress=False)
    assert [r["step"] for r in rows(tmp_path)] == [1, 2]
    verify_checkpoint(tmp_path / "checkpoints" / "step-2")


@pytest.mark.slow
def test_a_real_full_filesystem_during_a_cli_save_is_one_line_and_resume_continues(tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "32m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = disk / "run"
        common = ["--preset", "cpu-smoke", "--set", "save_every=1", "--set", "trace_samples=0", "--out", str(out)]
        assert cli("train", *common, "--steps", "1").returncode == 0
        filler = disk / "filler"
        with filler.open("wb") as handle:  # leave 64 KiB: enough for step 2's metrics, not for its checkpoint
            handle.truncate(0)
            handle.write(b"\0" * (shutil.disk_usage(disk).free - (64 << 10)))
        full = cli("train", *common, "--steps", "2", "--resume")
        last = full.stderr.strip().splitlines()[-1]  # above it: the progress bar
        assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr
        assert last.startswith(f"fipo-nb: error: after step 2: could not save checkpoint step-2 in {out}")
        assert "No space left on device" in last and "the last complete one is step-1" in last
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
        filler.unlink()  # space is free again
        again = cli("train", *common, "--steps", "2", "--resume")
        assert again.returncode == 0 and "after step 1" in again.stdout, again.stderr
        assert [r["step"] for r in rows(out)] == [1, 2]
        verify_checkpoint(out / "checkpoints" / "step-2")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_save_refused_for_another_reason_says_so(tmp_path):
    def no_permission(folder):
        with writing(folder / "optimizer.pt") as path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    with pytest.raises(CheckpointError, match=r"Permission denied \[errno 13\] while writing optimizer.pt; .*there is "
                                              r"no earlier checkpoint \(save again or resume from it once that is"):
        write_checkpoint(tmp_path, 1, no_permission)


RELEASE_RUN = Path(__file__).parent / "fixtures" / "release-0.1-cpu-smoke"  # `fipo-nb train --preset cpu-smoke --steps 2`
# written by release 0.1.0 (commit 1011b09, before the redesign): its checkpoint, config.json, metrics and traces


def test_a_run_written_by_the_previous_release_resumes_and_its_traces_open(tmp_path):
    from fipo_nb.trace import load_traces
    from fipo_nb.widgets import TokenView

    from fipo_nb.config import TrainConfig
    from fipo_nb.rewards import MathReward

    # release 0.1.0 scored a response that ran out of tokens by its last number; this code scores it incorrect.
    # Both runs here keep the release's reward (MathReward called plainly never hears of truncation), so the
    # third step must continue the old run exactly as this code continues its own.
    def release_reward(prompt, response, sample):
        return MathReward(mode="last_number")(prompt, response, sample)

    run = tmp_path / "old"
    shutil.copytree(RELEASE_RUN, run)
    resumed = FIPOTrainer.resume(run, reward_fn=release_reward)
    assert resumed.step_count == 2
    resumed.train(1, progress=False)
    config = TrainConfig(**json.loads((RELEASE_RUN / "config.json").read_text()))  # the same run, three steps in
    config.output_dir = str(tmp_path / "straight")  # one go with this code
    straight = FIPOTrainer(config, reward_fn=release_reward)
    straight.train(3, progress=False)
    old, new = rows(run), rows(tmp_path / "straight")
    assert [r["step"] for r in old] == [1, 2, 3] and old[:2] == rows(RELEASE_RUN)  # the old rows are kept as written
    assert set(old[2]) == set(new[2])
    for key, value in new[2].items():  # the third step continues the old run as this code would: float rounding
        # of the CPU that wrote the fixture aside (another CPU kind rounds float32 sums in the last bits)
        assert old[2][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    records = load_traces(run)
    assert sorted(set(records["step"])) == [1, 2, 3] and len(records) == 12
    assert "</span>" in TokenView(records).to_html()
