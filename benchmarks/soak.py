"""Long runs stay flat: resident memory and step time over many steps of one training process.

One FIPOTrainer runs `--steps` cpu-smoke steps in one process (`train()` with a callback, as
`fipo-nb train` runs them) with the preset's settings, tracing included, into a temporary folder.
After each step the callback reads the process's resident memory (VmRSS, /proc/self/status; its
reward worker processes' apart) and the time since the previous step (a step's time follows its
response lengths, printed beside it), and prints them every 10% of the run. After a few warm-up
steps (allocator pools, first-call caches), the medians over the first and the last 10% of the
steps are compared: a run whose memory or step time grows with its length holds something per step
that it never lets go (history, traces, figures...). The step's CPU time is printed beside its wall
time: on a busy machine other processes sway the wall time far more (and torch's threads spin while
they wait: --threads 1 is steadier); the same small fixed work, timed in both windows, shows how
fast the machine itself was then.
Python's live objects are counted at both ends too, to tell a Python-side leak from the allocator's.

    .venv/bin/python benchmarks/soak.py [--steps 300] [--warmup 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer
from logprobs import proc_status_kib  # benchmarks/logprobs.py (this script's folder is on sys.path)


def children_rss_kib() -> int:
    """Resident memory of this process's children (the reward workers), summed (pages they share
    with this process after the fork count again); 0 without children or without /proc's lists."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:  # it has just ended
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-smoke")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out before the first window")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 is least swayed by other busy processes")
    parser.add_argument("--quick", action="store_true",
                        help="smallest setting: 30 steps (seconds on an idle 2-core machine)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 30, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < args.warmup + 2:
        parser.error(f"--steps must be at least --warmup + 2 ({args.warmup + 2})")
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_soak_") as out_dir:
        run(args, out_dir)


def run(args, out_dir: str) -> None:
    config = apply_overrides(get_preset(args.preset), [f"output_dir={out_dir}", f"steps={args.steps}"])
    trainer = FIPOTrainer(config)
    rss_kib, step_s, cpu_s, lengths, objects, reference, workers_kib = [], [], [], [], {}, {}, []
    last = [time.perf_counter(), time.process_time()]
    window = max(1, (args.steps - args.warmup) // 10)
    measured = set(range(args.warmup + 1, args.warmup + window + 1)) | set(range(args.steps - window + 1,
                                                                                 args.steps + 1))
    fixed = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))

    def fixed_work() -> float:
        """Seconds of the same small CPU work every time: the machine's speed at that moment."""
        started = time.perf_counter()
        x = fixed
        for _ in range(20):
            x = torch.tanh(x @ fixed)
        return time.perf_counter() - started

    def after_step(result) -> None:
        now = time.perf_counter()
        step_s.append(now - last[0])
        cpu_s.append(time.process_time() - last[1])  # CPU seconds: less swayed by other processes
        rss_kib.append(proc_status_kib("VmRSS"))
        workers_kib.append(children_rss_kib())
        lengths.append(result.metrics["length/mean"])
        if len(step_s) in (args.warmup + window, args.steps):  # Python objects alive, at both ends
            objects[len(step_s)] = len(gc.get_objects())
        if len(step_s) in measured:
            reference[len(step_s)] = fixed_work()
        if len(step_s) % max(1, args.steps // 10) == 0:
            print(f"step {len(step_s):>4}/{args.steps}: resident {rss_kib[-1] / 1024:.1f} MiB, "
                  f"step {step_s[-1]:.2f} s, length {lengths[-1]:.1f}", flush=True)
        last[:] = [time.perf_counter(), time.process_time()]  # the callback's own time is not the step's

    started = time.perf_counter()
    trainer.train(args.steps, progress=False, callback=after_step)
    total = time.perf_counter() - started
    first = slice(args.warmup, args.warmup + window)
    final = slice(args.steps - window, args.steps)
    mem = [statistics.median(rss_kib[first]) / 1024, statistics.median(rss_kib[final]) / 1024]
    workers = [statistics.median(workers_kib[first]) / 1024, statistics.median(workers_kib[final]) / 1024]
    sec = [statistics.median(step_s[first]), statistics.median(step_s[final])]
    grow = lambda pair: 100 * (pair[1] / pair[0] - 1)  # noqa: E731
    cpu = [statistics.median(cpu_s[first]), statistics.median(cpu_s[final])]
    ref = [statistics.median(reference[i + 1] for i in range(window.start, window.stop)) * 1000
           for window in (first, final)]
    tokens = [statistics.median(lengths[first]), statistics.median(lengths[final])]
    counts = [objects[args.warmup + window], objects[args.steps]]
    print(f"preset {args.preset}: model {config.model} ({config.mode}), {args.steps} steps of "
          f"{config.prompts_per_step} x {config.samples_per_prompt}, trace_samples {config.trace_samples}, "
          f"{torch.get_num_threads()} threads, {total:.0f} s in all")
    print(f"windows: steps {first.start + 1}-{first.stop} and {final.start + 1}-{final.stop} (medians; "
          f"{args.warmup} warm-up steps left out)")
    print(f"{'':28} {'first':>10} {'last':>10} {'growth':>9}")
    print(f"{'resident memory (MiB)':28} {mem[0]:>10.1f} {mem[1]:>10.1f} {grow(mem):>+8.1f}%")
    if workers[0] or workers[1]:
        print(f"{'worker processes (MiB)':28} {workers[0]:>10.1f} {workers[1]:>10.1f} "
              f"{grow(workers) if workers[0] else float('nan'):>+8.1f}%")
    print(f"{'step time (s)':28} {sec[0]:>10.3f} {sec[1]:>10.3f} {grow(sec):>+8.1f}%")
    print(f"{'step CPU time (s, all threads)':28} {cpu[0]:>10.3f} {cpu[1]:>10.3f} {grow(cpu):>+8.1f}%")
    print(f"{'fixed work (ms): machine':28} {ref[0]:>10.2f} {ref[1]:>10.2f} {grow(ref):>+8.1f}%")
    print(f"{'response length (tokens)':28} {tokens[0]:>10.1f} {tokens[1]:>10.1f} {grow(tokens):>+8.1f}%")
    print(f"{'python objects (at the end)':28} {counts[0]:>10d} {counts[1]:>10d} {grow(counts):>+8.1f}%")
    print(f"{'peak resident memory (MiB)':28} {proc_status_kib('VmHWM') / 1024:>10.1f}")
    print(f"memory growth: {grow(mem):+.1f}% step time growth: {grow(sec):+.1f}%")


if __name__ == "__main__":
    main()
