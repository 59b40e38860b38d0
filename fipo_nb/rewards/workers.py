"""Reward functions in worker processes, each call under a deadline: one that hangs or kills its
process costs the sample it was scoring, never the run.

`RewardPool` forks its workers (multiprocessing's "fork"), so a reward function defined in a notebook
cell (a lambda, a closure) is inherited, never pickled: only (prompt, response, sample, truncated) go
over a worker's pipe and a RewardResult comes back, one sample at a time, results in the batch's order.
A call past `timeout`: its worker is killed (SIGKILL) and replaced. A worker that dies (a segfault,
os._exit, the out-of-memory killer): its pipe closes, it is replaced. The sample gets a RewardTimeout or
WorkerDied; an exception the reward function raises comes back as a WorkerFailure with its type's name,
message and traceback (a note). `score_responses` turns each into a RewardError naming the sample, or
scores the sample incorrect, as for an exception raised in-process.

A reward function here runs in a forked child of the trainer: it sees the objects as they were when its
worker started (on first use, and again for another reward function or after `close()`); its side
effects (a list it appends to, a call counter) stay in the child; it must not use CUDA (a forked child
cannot) nor start processes with multiprocessing (workers are daemonic). Workers ignore Ctrl-C, which
is the trainer's. On a worker's main thread signal-based timeouts work: MathReward turns math-verify's
on there (`in_worker`).
"""

from __future__ import annotations

import atexit
import gc
import inspect
import os
import pickle
import signal
import time
import traceback
import weakref
from multiprocessing import get_context
from multiprocessing.connection import wait

from .scoring import RewardResult, _score_one

__all__ = ["RewardPool", "RewardTimeout", "WorkerDied", "WorkerFailure", "default_workers", "in_worker"]

_IN_WORKER = False
_POOL_ENDS: weakref.WeakSet = weakref.WeakSet()  # the pool's end of each worker's pipe: new workers close their copies
_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register  # before multiprocessing's own exit handler (registered earlier), which would wait on a stuck call
def _close_pools() -> None:
    for pool in list(_POOLS):
        pool.close()


def in_worker() -> bool:
    """True inside a RewardPool worker process."""
    return _IN_WORKER


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class WorkerFailure(Exception):
    """A reward call that failed in a worker; `kind` names what happened (for an exception raised
    there, its type's name; the worker's traceback is in the exception's notes)."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind or type(self).__name__


class RewardTimeout(WorkerFailure):
    """No result within the pool's timeout: the worker was killed and replaced."""


class WorkerDied(WorkerFailure):
    """The worker process died while scoring (a crash, os._exit, the out-of-memory killer); it was replaced."""


def _serve(conn, reward_fn) -> None:
    """A worker's loop: (prompt, response, sample, truncated) in, (RewardResult, None) or (None, error) out."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the trainer (SafeInterrupt), not its workers
    for end in list(_POOL_ENDS):  # inherited copies: the pool's ends must close when the pool closes them
        end.close()
    while True:
        try:
            prompt, response, sample, cut = pickle.loads(conn.recv_bytes())
        except EOFError:  # the pool closed this worker's pipe
            return
        try:
            reply = pickle.dumps((_score_one(reward_fn, prompt, response, sample, cut), None))
        except BaseException as exc:  # sys.exit() too: this sample's failure, not the worker's end
            reply = pickle.dumps((None, (type(exc).__name__, _text(exc), traceback.format_exc())))
        try:
            conn.send_bytes(reply)
        except OSError:  # the pool is gone
            return


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be printed>"


def _same(fn, other) -> bool:
    """The same object, or the same method of the same object (`obj.score` is a new object at each access)."""
    return fn is other or (inspect.ismethod(fn) and inspect.ismethod(other) and fn == other)


class _Worker:
    """One worker process and the pool's end of its pipe."""

    def __init__(self, reward_fn):
        try:
            context = get_context("fork")
        except ValueError as err:
            raise RuntimeError("RewardPool needs the fork start method (Linux, macOS); reward_workers=None scores "
                               "in the trainer's own process") from err
        self.conn, theirs = context.Pipe(duplex=True)
        _POOL_ENDS.add(self.conn)
        self.process = context.Process(target=_serve, args=(theirs, reward_fn), daemon=True, name="fipo_nb-reward")
        freeze = gc.get_freeze_count() == 0  # frozen, the parent's objects are never collected by the child:
        if freeze:  # their memory pages stay shared with the parent (unfrozen here right after the fork)
            gc.freeze()
        try:
            self.process.start()
        finally:
            if freeze:
                gc.unfreeze()
            theirs.close()

    def receive(self) -> RewardResult | WorkerFailure:
        """The reply to the call in flight; WorkerDied if the process died instead."""
        try:
            if self.conn.poll():
                result, error = pickle.loads(self.conn.recv_bytes())
                if error is None:
                    return result
                failure = WorkerFailure(error[1], error[0])
                failure.add_note(f"in the reward worker process:\n{error[2].rstrip()}")
                return failure
        except (EOFError, OSError):
            pass
        except Exception as exc:  # a reply that does not unpickle here
            return WorkerFailure(f"its result could not be read: {type(exc).__name__}: {_text(exc)}", "WorkerError")
        return WorkerDied(f"the worker process scoring it died ({self.ending()}); a new one took its place")

    def ending(self) -> str:
        self.process.join(5)  # its pipe has closed: it is exiting
        code = self.process.exitcode
        if code is None:
            return "its pipe closed"
        if code < 0:
            name = signal.Signals(-code).name
            return f"killed by {name}" + (", e.g. by the kernel's out-of-memory killer" if name == "SIGKILL" else "")
        return f"exit code {code}"

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.process.close()


def _take(todo: list[list[int]], slot: int, stop: int) -> int | None:
    """The next item for worker `slot` (before `stop`): its own next, else the first of the upper half of the
    largest share left (work stealing); None when nothing is left."""
    for share in todo:
        share[1] = min(share[1], stop)
    if todo[slot][0] >= todo[slot][1]:
        largest = max(todo, key=lambda share: share[1] - share[0])
        left = largest[1] - largest[0]
        if left <= 0:
            return None
        todo[slot] = [largest[0] + left // 2, largest[1]]
        largest[1] = todo[slot][0]
    index = todo[slot][0]
    todo[slot][0] += 1
    return index


class RewardPool:
    """Worker processes that score samples, `timeout` seconds per call; started on first use.

    workers: processes (0: one per core, `default_workers`), never more than a batch has samples.
    `close()` stops them (the next call starts new ones), as do garbage collection and interpreter
    exit (they are daemonic). One caller at a time.
    """

    def __init__(self, workers: int = 0, timeout: float = 60.0):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"RewardPool: workers must be an integer >= 0 (0: one per core); got {workers!r}")
        if not timeout > 0:
            raise ValueError(f"RewardPool: timeout must be > 0 seconds; got {timeout!r}")
        self.workers = workers or default_workers()
        self.timeout = float(timeout)
        self._live: list[_Worker] = []
        self._reward_fn = None  # what the live workers were forked with
        self._owner = os.getpid()  # a forked child's copy of the pool must never stop the parent's workers
        _POOLS.add(self)

    @property
    def running(self) -> int:
        """Worker processes started and not stopped."""
        return len(self._live)

    def __repr__(self) -> str:
        return f"RewardPool(workers={self.workers}, timeout={self.timeout:g}, running={self.running})"

    def score(self, reward_fn, items: list[tuple], *, stop_at_error: bool = False) -> list:
        """Score each (prompt, response, sample, truncated) with reward_fn: per item, in order, a
        RewardResult or a WorkerFailure. stop_at_error: after a failure, only items before it start
        (those after may stay None): the first failure in order is the one scoring in-process meets."""
        if not _same(reward_fn, self._reward_fn):  # workers hold the function they were forked with
            self.close()
            self._reward_fn = reward_fn
        results: list = [None] * len(items)
        if not items:
            return results
        slots = min(self.workers, len(items))
        edges = [len(items) * k // slots for k in range(slots + 1)]
        # per worker, the items it has yet to start: a contiguous share, so that a group's samples (adjacent rows)
        # go to one worker, which parses their gold answer once; a worker that runs out takes half of the largest
        todo = [[edges[k], edges[k + 1]] for k in range(slots)]
        workers: list = (self._live + [None] * slots)[:slots]
        busy: dict[int, tuple[int, float]] = {}  # worker's slot -> (index in flight, its deadline)
        stop = len(items)  # nothing from here on starts
        try:
            while True:
                for slot in range(slots):
                    while slot not in busy and (index := _take(todo, slot, stop)) is not None:
                        workers[slot] = self._alive(workers[slot])
                        results[index] = self._send(workers[slot], items[index])
                        if results[index] is None:
                            busy[slot] = (index, time.monotonic() + self.timeout)
                        elif stop_at_error:
                            stop = min(stop, index)
                if not busy:
                    return results
                failed = self._collect(results, workers, busy)
                stop = min([stop, *failed]) if stop_at_error else stop
        except BaseException:  # interrupted with calls in flight: their late replies must not answer later calls
            for slot in busy:
                self._retire(workers[slot])
            raise

    def _alive(self, worker: _Worker | None) -> _Worker:
        """`worker`, or a new one in place of one that died while idle (or of none)."""
        if worker is not None and worker.process.is_alive():
            return worker
        if worker is not None:
            self._retire(worker)
        self._live.append(_Worker(self._reward_fn))
        return self._live[-1]

    def _send(self, worker: _Worker, item: tuple) -> WorkerFailure | None:
        """Start a call; None, or why it could not start."""
        try:
            payload = pickle.dumps(item)
        except Exception as exc:
            return WorkerFailure(f"cannot be sent to a worker process: {_text(exc)}", type(exc).__name__)
        try:
            worker.conn.send_bytes(payload)
        except OSError:
            return worker.receive()  # WorkerDied
        return None

    def _collect(self, results: list, workers: list, busy: dict) -> list[int]:
        """Wait for a reply, a death or the next deadline; record what came of each call that ended.
        Returns the indices of those that failed."""
        soonest = min(deadline for _, deadline in busy.values())
        ready = wait([workers[s].conn for s in busy] + [workers[s].process.sentinel for s in busy],
                     timeout=max(soonest - time.monotonic(), 0))
        failed = []
        for slot, (index, deadline) in list(busy.items()):
            worker = workers[slot]
            if worker.conn in ready or worker.process.sentinel in ready:
                results[index] = worker.receive()
            elif time.monotonic() >= deadline:
                results[index] = RewardTimeout(f"no result within reward_timeout={self.timeout:g} s; its worker "
                                               "process was killed and a new one took its place")
            else:
                continue
            del busy[slot]
            if isinstance(results[index], WorkerFailure):
                failed.append(index)
            if isinstance(results[index], (RewardTimeout, WorkerDied)):
                self._retire(worker)
                workers[slot] = None
        return failed

    def _retire(self, worker: _Worker) -> None:
        self._live.remove(worker)
        worker.stop()

    def close(self) -> None:
        """Stop the worker processes (a call in flight is abandoned); the next `score` starts new ones."""
        if os.getpid() != self._owner:
            return
        live, self._live, self._reward_fn = self._live, [], None
        for worker in live:
            worker.stop()

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit, what close() needs may be gone: multiprocessing ends daemons
            pass
