"""Run a benchmark at every thread count a user gets: torch's default and 1 thread, one process each.

A script calls `each_thread_count(args.threads)` first: without `--threads` it runs itself again as a
child per thread count (OMP_NUM_THREADS unset, then OMP_NUM_THREADS=1 and torch.set_num_threads(1)),
printing the 1-minute load before it and the cores other processes kept busy during it (`OtherWork`),
since other work on the machine slows every side of a comparison but not alike, and returns False (the parent has nothing more to do); in a child (or
with `--threads` given) it sets the thread count and returns True: measure here.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import torch

CHOICES = ("default", "1")


def child_environment(threads: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads == "1":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _busy_seconds() -> float:
    """CPU seconds every process on the machine has spent so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


class OtherWork:
    """How many cores other processes kept busy, on average, while a measurement ran: the machine's CPU
    time less this process tree's, over the wall time (the load average would count the benchmark's own
    threads too). `with OtherWork() as other: ...; other.cores`."""

    def __enter__(self) -> "OtherWork":
        self.cores = 0.0
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = (now - then for now, then in zip((time.perf_counter(), _busy_seconds(), _own_seconds()),
                                                           self._start))
        self.cores = max(busy - own, 0.0) / wall if wall > 0 else 0.0


def each_thread_count(threads: str | None) -> bool:
    """See the module doc: True when this process is to measure (at `threads`), False when its children did."""
    if threads is not None:
        if threads == "1":
            torch.set_num_threads(1)
        return True
    counts = ["default", "1"] if (os.cpu_count() or 1) > 1 else ["default"]
    for count in counts:
        command = [sys.executable, sys.argv[0], *sys.argv[1:], "--threads", count]
        print(f"=== {'torch default' if count == 'default' else '1'} thread(s), load {os.getloadavg()[0]:.2f} before",
              flush=True)
        with OtherWork() as other:
            subprocess.run(command, env=child_environment(count), check=True)  # its output goes straight to ours
        print(f"=== other processes kept {other.cores:.2f} of {os.cpu_count()} cores busy meanwhile", flush=True)
    return False
