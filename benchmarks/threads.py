"""Run a benchmark at every thread count a user gets: torch's default and 1 thread, one process each.

A script calls `each_thread_count(args.threads)` first: without `--threads` it runs itself again as a
child per thread count (OMP_NUM_THREADS unset, then OMP_NUM_THREADS=1 and torch.set_num_threads(1)),
printing the 1-minute load before and after each, since other work on the machine slows every side
of a comparison but not alike, and returns False (the parent has nothing more to do); in a child (or
with `--threads` given) it sets the thread count and returns True: measure here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

CHOICES = ("default", "1")


def child_environment(threads: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads == "1":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


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
        subprocess.run(command, env=child_environment(count), check=True)  # its output goes straight to ours
        print(f"=== load {os.getloadavg()[0]:.2f} after", flush=True)
    return False
