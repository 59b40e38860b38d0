"""Every write of a run survives a kill and a full disk: whole rows, whole files, one line naming the file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

import fipo_nb.analysis.traces
from fipo_nb.analysis.files import WriteError, append_row, write_atomic
from fipo_nb.analysis.runs import read_jsonl
from fipo_nb.cli import main
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer
from tmpfs import mount_tmpfs

TIMING = ("time/", "tokens_per_s")


def rows(path):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)}
            for line in Path(path).read_text().splitlines()]


def smoke(out, *overrides):
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={out}", *overrides])


def leftovers(folder) -> list[str]:
    """Temporary files of an atomic write still lying around."""
    return sorted(p.name for p in Path(folder).rglob(".*.tmp*"))


def no_space(name):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


@pytest.fixture
def disk_full_for(monkeypatch):
    """disk_full_for(name): every os.write to a file called `name` (or to its temporary twin) fails
    with ENOSPC after writing nothing (partial=True: after writing half); other files are written as
    usual. disk_full_for(None): space is free again."""
    real_write = os.write

    def install(name, partial: bool = False):
        if name is None:  # space is free again
            monkeypatch.setattr(os, "write", real_write)
            return

        def write(fd, data):
            target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if target == name or target.startswith(f".{name}.tmp"):
                if partial:  # half the bytes reach the disk, as when it fills up in the middle
                    return real_write(fd, bytes(data)[: len(data) // 2])
                raise no_space(target)
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)

    yield install
    monkeypatch.setattr(os, "write", real_write)


# ---------------------------------------------------------------------------- the two writers


def test_rows_are_appended_whole_and_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_row(path, {"step": 1, "x": 0.5})
    append_row(path, {"step": 2, "x": float("nan")})
    assert path.read_text().endswith("\n") and [r["step"] for r in read_jsonl(path)] == [1, 2]
    write_atomic(tmp_path / "page.html", "<p>caf\u00e9</p>")
    write_atomic(tmp_path / "page.html", "<p>new</p>")
    assert (tmp_path / "page.html").read_text() == "<p>new</p>" and leftovers(tmp_path) == []


@pytest.mark.parametrize("partial", [False, True], ids=["nothing-written", "half-written"])
def test_a_full_disk_during_a_row_leaves_the_earlier_rows_as_they_were(tmp_path, disk_full_for, partial):
    path = tmp_path / "eval.jsonl"
    append_row(path, {"step": 1, "x": 1.0})
    before = path.read_bytes()
    disk_full_for("eval.jsonl", partial=partial)
    with pytest.raises(WriteError) as info:
        append_row(path, {"step": 2, "x": 2.0})
    message = str(info.value)
    assert message.startswith(f"could not write {path}: No space left on device [errno 28] (")
    assert "bytes free there); the row was not added, the rows before it are unchanged" in message
    assert "\n" not in message and info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before  # a half-written row was cut off again


def test_a_full_disk_during_a_whole_file_keeps_the_old_one_and_no_temporary(tmp_path, disk_full_for):
    path = tmp_path / "compare.json"
    write_atomic(path, '{"old": true}\n')
    disk_full_for("compare.json", partial=True)
    with pytest.raises(WriteError, match=r"could not write .*compare.json: No space left on device \[errno 28\] "
                                         r"\(\d+ bytes free there\); the earlier file is unchanged$"):
        write_atomic(path, '{"new": true}\n' * 1000)
    assert path.read_text() == '{"old": true}\n' and leftovers(tmp_path) == []
    with pytest.raises(WriteError, match="credit.json: .*; no file was written$"):
        disk_full_for("credit.json")
        write_atomic(tmp_path / "credit.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.json"]


def test_a_torn_last_line_is_skipped_with_a_warning_and_any_other_bad_line_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: line 3 is cut short .*: skipped"):
        assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2}')  # only its newline missing: the row is whole
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')  # not the last line: never dropped
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n{"step": 2,\n')  # a broken line with its newline: not a torn write
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        read_jsonl(path)


# ---------------------------------------------------------------------------- a real full disk


def test_a_real_full_filesystem_loses_no_row_no_file_and_leaves_no_temporary(tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        metrics, report = disk / "metrics.jsonl", disk / "report.html"
        append_row(metrics, {"step": 1, "text": "a" * 5000})
        write_atomic(report, "<p>step 1</p>")
        before = metrics.read_bytes()
        with (disk / "filler").open("wb", buffering=0) as handle:  # every byte left
            with pytest.raises(OSError):
                while True:
                    handle.write(b"\0" * 4096)
        with pytest.raises(WriteError, match=r"metrics.jsonl: No space left on device \[errno 28\] \(0 bytes free"):
            append_row(metrics, {"step": 2, "text": "b" * 9000})  # more than the page the file ends in
        with pytest.raises(WriteError, match=r"report.html: No space left on device \[errno 28\] \(0 bytes free"):
            write_atomic(report, "<p>step 2</p>" * 2000)
        records = [{"step": 2, "sample": 0, "tokens": ["x"] * 4000, "token_ids": list(range(4000))}]
        with pytest.raises(WriteError, match=r"traces/step-000002.parquet: .*No space left on device"):
            fipo_nb.analysis.traces.write_step(disk, 2, records)
        assert metrics.read_bytes() == before and report.read_text() == "<p>step 1</p>"
        assert leftovers(disk) == []
        (disk / "filler").unlink()  # space is free again
        append_row(metrics, {"step": 2})
        assert [r["step"] for r in read_jsonl(metrics)] == [1, 2]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---------------------------------------------------------------------------- a run's files


def test_a_torn_last_row_is_dropped_on_resume_and_the_run_ends_as_an_uninterrupted_one(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["trace_samples=2", "eval_data=single-digit?size=4&seed=3", "eval_every=2"]
    FIPOTrainer(smoke(straight, *common)).train(4, progress=False)
    FIPOTrainer(smoke(split, *common)).train(2, progress=False)  # checkpoint step-2
    whole = {name: (split / name).read_bytes() for name in ("metrics.jsonl", "eval.jsonl")}
    for name in whole:  # killed while writing step 3's row (and an evaluation's)
        with (split / name).open("ab") as handle:
            handle.write((straight / name).read_text().splitlines()[-1][:40].encode())
    with pytest.warns(UserWarning) as caught:
        resumed = FIPOTrainer.resume(split)
    said = [str(w.message) for w in caught]
    assert f"{split / 'metrics.jsonl'}: line 3 was cut short when the run was stopped (a row half written): " \
           "dropped from the file" in said
    assert any(s.startswith(f"{split / 'eval.jsonl'}: line 2 was cut short") for s in said)
    assert {name: (split / name).read_bytes() for name in whole} == whole  # rewritten without it, nothing else lost
    resumed.train(until=4, progress=False)
    assert [r["step"] for r in rows(split / "metrics.jsonl")] == [1, 2, 3, 4]
    assert rows(split / "metrics.jsonl") == rows(straight / "metrics.jsonl")
    assert rows(split / "eval.jsonl") == rows(straight / "eval.jsonl")


def test_a_broken_row_that_is_not_the_last_stops_the_resume_naming_file_and_line(tmp_path, capsys):
    FIPOTrainer(smoke(tmp_path, "trace_samples=0")).train(2, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(lines[0][:30] + "\n" + lines[1] + "\n")
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 1 is not JSON"):
        FIPOTrainer.resume(tmp_path)
    code = main(["train", "--preset", "cpu-smoke", "--steps", "3", "--out", str(tmp_path), "--resume"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("fipo-nb: error: ") and "metrics.jsonl: line 1 is not JSON" in last
    assert (tmp_path / "metrics.jsonl").read_bytes() == before  # nothing dropped


def test_a_full_disk_at_the_metrics_row_names_it_and_the_step_finishes_once_there_is_space(tmp_path, disk_full_for):
    trainer = FIPOTrainer(smoke(tmp_path, "trace_samples=0", "save_every=-1"))
    trainer.train(1, progress=False)
    before = (tmp_path / "metrics.jsonl").read_bytes()
    disk_full_for("metrics.jsonl", partial=True)
    with pytest.raises(WriteError, match=rf"^could not write {tmp_path / 'metrics.jsonl'}: No space left on device "
                                         r"\[errno 28\] \(\d+ bytes free there\); the row was not added"):
        trainer.train(1, progress=False)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    assert trainer.step_count == 1 and len(trainer.history) == 1 and trainer.step_in_progress is not None
    disk_full_for(None)
    trainer.step()  # the step in progress ends as if nothing had happened
    straight = tmp_path / "straight"
    FIPOTrainer(smoke(straight, "trace_samples=0", "save_every=-1")).train(2, progress=False)
    assert rows(tmp_path / "metrics.jsonl") == rows(straight / "metrics.jsonl")


def test_a_full_disk_at_an_eval_row_or_a_trace_names_the_file_and_keeps_what_was_written(tmp_path, disk_full_for,
                                                                                         monkeypatch):
    trainer = FIPOTrainer(smoke(tmp_path, "trace_samples=2", "eval_data=single-digit?size=4&seed=3", "eval_every=1",
                                "save_every=-1"))
    trainer.train(1, progress=False)
    kept = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
            and p.name != "config.json" and "tensorboard" not in p.parts}
    assert {Path("metrics.jsonl"), Path("eval.jsonl"), Path("traces/step-000001.parquet")} <= set(kept)

    real_write_table = fipo_nb.analysis.traces.pq.write_table

    def fills_up(table, where, **kwargs):  # half a Parquet file, then ENOSPC as pyarrow raises it
        Path(where).write_bytes(b"PAR1" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(fipo_nb.analysis.traces.pq, "write_table", fills_up)
    with pytest.raises(WriteError, match=rf"could not write {tmp_path / 'traces' / 'step-000002.parquet'}: No space "
                                         r"left on device \[errno 28\] \(\d+ bytes free there\); no file was written"):
        trainer.train(1, progress=False)
    monkeypatch.setattr(fipo_nb.analysis.traces.pq, "write_table", real_write_table)
    disk_full_for("eval.jsonl")
    with pytest.raises(WriteError, match=rf"could not write {tmp_path / 'eval.jsonl'}: No space left on device"):
        trainer.step()  # finishes step 2: its trace is written now, then the evaluation's row fails
    now = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(now[name] == data for name, data in kept.items())  # step 1's rows and trace as they were
    assert leftovers(tmp_path) == [] and trainer.step_count == 1


# ---------------------------------------------------------------------------- report and compare pages


def fake_comparison(out: Path) -> None:
    write_atomic(out / "compare.json", json.dumps({"losses": ["fipo", "dapo"], "steps": 2, "seed": 0}))
    for loss in ("fipo", "dapo"):
        (out / loss).mkdir()
        for step in (1, 2):
            append_row(out / loss / "metrics.jsonl", {"step": step, "reward/mean": 0.1 * step, "length/mean": 9.0})


def test_a_full_disk_at_report_or_compare_html_keeps_the_old_page_and_the_cli_says_one_line(tmp_path, disk_full_for,
                                                                                              capsys):
    from fipo_nb.compare import load, write_html
    from fipo_nb.views.report import write_report

    run = tmp_path / "fipo"
    fake_comparison(tmp_path)
    old_report, old_page = write_report(run).read_bytes(), write_html(load(tmp_path)).read_bytes()
    append_row(run / "metrics.jsonl", {"step": 3, "reward/mean": 0.9, "length/mean": 9.0})
    disk_full_for("report.html")
    with pytest.raises(WriteError, match=r"fipo/report.html: No space left on device .*; the earlier file is "
                                         "unchanged"):
        write_report(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fipo-nb: error: could not write {run / 'report.html'}: No space")
    disk_full_for("compare.html")
    with pytest.raises(WriteError, match=r"compare.html: No space left on device .*; the earlier file is unchanged"):
        write_html(load(tmp_path))
    assert (run / "report.html").read_bytes() == old_report and (tmp_path / "compare.html").read_bytes() == old_page
    assert leftovers(tmp_path) == []
