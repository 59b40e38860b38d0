"""Ctrl-C during train(): a safe stop between mini-batches or steps, a usable trainer, an exact continuation."""

from __future__ import annotations

import os
import signal

import pytest

from fipo_nb.train.interrupts import SafeInterrupt
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer

TIMING = ("time/", "tokens_per_s")


@pytest.fixture(autouse=True)
def interactive_sigint():
    """SIGINT as in an interactive shell, whatever this process inherited (a background job ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def trainer_at(tmp_path, *overrides):
    return FIPOTrainer(apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", "save_every=-1",
                                                                 *overrides]))


def clean(history):
    return [{k: v for k, v in m.items() if not k.startswith(TIMING)} for m in history]


def test_same_seed_same_metrics(tmp_path):
    a, b = trainer_at(tmp_path / "a"), trainer_at(tmp_path / "b")
    a.train(2, progress=False)
    b.train(2, progress=False)
    assert clean(a.history) == clean(b.history)
    c = trainer_at(tmp_path / "c", "seed=1")
    c.train(2, progress=False)
    assert clean(c.history) != clean(a.history)


def test_interrupt_inside_a_step_stops_after_the_mini_batch_and_continues_exactly(tmp_path):
    trainer = trainer_at(tmp_path / "stopped")
    updates = {"n": 0}

    def after_update(optimizer, args, kwargs):
        updates["n"] += 1
        if updates["n"] == 3:  # the first update of step 2
            os.kill(os.getpid(), signal.SIGINT)

    trainer.optimizer.register_step_post_hook(after_update)
    with pytest.raises(KeyboardInterrupt, match="step 2 stopped after update 1"):
        trainer.train(3, progress=False)
    assert trainer.step_count == 1 and trainer.step_in_progress is not None and trainer.step_in_progress.next_update == 1
    assert len(trainer.history) == 1
    trainer.train(2, progress=False)  # finishes step 2, then runs step 3
    assert trainer.step_count == 3 and updates["n"] == 6  # no update ran twice or was lost
    straight = trainer_at(tmp_path / "straight")
    straight.train(3, progress=False)
    assert clean(trainer.history) == clean(straight.history)


def test_interrupt_between_steps_stops_after_the_step(tmp_path):
    trainer = trainer_at(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="stopped after step 1"):
        trainer.train(3, progress=False, callback=lambda result: os.kill(os.getpid(), signal.SIGINT))
    assert trainer.step_count == 1 and trainer.step_in_progress is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # our handler is gone again
    trainer.train(1, progress=False)
    assert trainer.step_count == 2


def test_a_second_interrupt_stops_at_once():
    guard = SafeInterrupt()
    with guard:
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)  # first: only asks
        assert guard.requested
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)


def test_the_guard_leaves_an_ignored_sigint_ignored_and_puts_back_what_it_found():
    guard = SafeInterrupt()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job (`make test &`, nohup) starts
    with guard:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing is asked for
    assert not guard.requested and signal.getsignal(signal.SIGINT) is signal.SIG_IGN

    def own(signum, frame):
        raise AssertionError("not called")

    signal.signal(signal.SIGINT, own)
    with guard:
        assert signal.getsignal(signal.SIGINT) == guard._handle
    assert signal.getsignal(signal.SIGINT) is own  # exactly the handler it found
