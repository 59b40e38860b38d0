"""Peak memory of per-token log-probs: full logits + log_softmax vs fipo_nb's chunked head.

    .venv/bin/python benchmarks/logprobs.py [--batch 8] [--length 2048] [--chunk-size 1024]
    .venv/bin/python benchmarks/logprobs.py --backward        # forward + backward, T picked to fit
    .venv/bin/python benchmarks/logprobs.py --quick           # smallest setting (B=2, T=64, chunk 32), seconds

Inputs: hidden states [B, T, H] (H = 896, Qwen2.5-0.5B) and an output head Linear(H, V) with
Qwen's V = 151,936, random from a fixed seed, float32. The naive path is head(hidden) ->
log_softmax -> gather; the chunked path is fipo_nb.models.logprobs.head_logprobs, the code that
token_logprobs runs after the transformer body (checkpointed chunks under --backward).

Each path runs in its own fresh subprocess. The child builds the inputs, resets its peak-RSS
counter (writing 5 to /proc/self/clear_refs), runs the path, and reports VmHWM - VmRSS at the
reset: the memory the path itself needed. The parent checks that both agree (max abs diff).
Nothing else big may run meanwhile: the naive forward at T = 2048 needs ~20 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HIDDEN = 896  # Qwen2.5-0.5B
VOCAB = 151_936  # Qwen2 / Qwen2.5 / Qwen3
GIB = 2**30
TOLERANCE = 1e-5


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def make_inputs(batch: int, length: int, backward: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, HIDDEN, generator=gen)  # [B, T, H]
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.uniform_(-(HIDDEN**-0.5), HIDDEN**-0.5, generator=gen)  # [V, H] as nn.Linear's init
    head.weight.requires_grad_(backward)
    hidden.requires_grad_(backward)
    targets = torch.randint(0, VOCAB, (batch, length), generator=gen)  # [B, T]
    return hidden, head, targets


def naive(hidden, head, targets):
    logits = head(hidden)  # [B, T, V]
    return F.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)  # [B, T]


def child(args) -> None:
    from fipo_nb.models.logprobs import head_logprobs

    hidden, head, targets = make_inputs(args.batch, args.length, args.backward)
    if args.path == "naive":
        run = lambda: naive(hidden, head, targets)  # noqa: E731
    else:
        run = lambda: head_logprobs(hidden, head, targets, chunk_size=args.chunk_size, checkpoint=True)  # noqa: E731
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        reset = True
    except OSError:
        reset = False
    baseline = proc_status_kib("VmRSS")
    start = time.perf_counter()
    with torch.set_grad_enabled(args.backward):
        logprobs = run()  # [B, T]
        if args.backward:
            logprobs.sum().backward()
    seconds = time.perf_counter() - start
    peak = proc_status_kib("VmHWM")
    saved = {"logprobs": logprobs.detach()}
    if args.backward:
        saved["hidden_grad"] = hidden.grad  # [B, T, H]
        saved["weight_grad"] = head.weight.grad  # [V, H]
    torch.save(saved, args.out)
    report = {"peak_bytes": (peak - baseline) * 1024, "seconds": seconds, "hwm_reset": reset}
    print(json.dumps(report))


def run_child(path: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--out", str(out), "--batch", str(args.batch),
           "--length", str(args.length), "--chunk-size", str(args.chunk_size)]  # fmt: skip
    if args.backward:
        cmd.append("--backward")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        killed = proc.returncode == -9
        why = "killed by SIGKILL (the kernel's OOM killer, most likely)" if killed else proc.stderr[-2000:]
        raise SystemExit(f"{path} child failed with code {proc.returncode}: {why}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def naive_bytes_needed(batch: int, length: int, backward: bool) -> int:
    # [N, V] float32 copies alive at the peak (measured): forward, logits + log_softmax;
    # backward, saved log_softmax + gather's scattered grad + log_softmax's grad
    copies = 3 if backward else 2
    return copies * batch * length * VOCAB * 4 + VOCAB * HIDDEN * 4 * (3 if backward else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, help="T; default 2048 (--backward: the largest that fits)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="rows of logits per chunk, as token_logprobs")
    parser.add_argument("--backward", action="store_true", help="measure forward + backward")
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): B=2, T=64, chunk 32")
    parser.add_argument("--child", choices=["naive", "chunked"], dest="path", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.length, args.chunk_size = 2, 64, 32
    if args.path:
        args.length = args.length or 2048
        child(args)
        return

    available = mem_available_bytes()
    if args.length is None:
        args.length = 2048
        fits = lambda length: naive_bytes_needed(args.batch, length, True) <= 0.85 * available  # noqa: E731
        while args.backward and args.length > 128 and not fits(args.length):
            args.length //= 2  # the full T does not fit: halve it (the header line says which T ran)
    need = naive_bytes_needed(args.batch, args.length, args.backward)
    mode = "forward + backward" if args.backward else "forward (no grad)"
    print(f"per-token log-probs, {mode}: B={args.batch} T={args.length} H={HIDDEN} V={VOCAB} float32, "
          f"chunk_size={args.chunk_size}, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"MemAvailable {available / GIB:.1f} GiB; naive path needs about {need / GIB:.1f} GiB")
    if need > available:
        print("warning: the naive path will probably not fit and may be OOM-killed")

    with tempfile.TemporaryDirectory() as tmp:
        results = {path: run_child(path, args, Path(tmp) / f"{path}.pt") for path in ("naive", "chunked")}
        outputs = {path: torch.load(Path(tmp) / f"{path}.pt") for path in results}
    diffs = {key: (outputs["naive"][key] - outputs["chunked"][key]).abs().max().item() for key in outputs["naive"]}
    scales = {key: outputs["naive"][key].abs().max().item() for key in outputs["naive"]}

    print(f"{'path':<10}{'peak MiB':>12}{'seconds':>10}")
    for path, result in results.items():
        print(f"{path:<10}{result['peak_bytes'] / 2**20:>12.0f}{result['seconds']:>10.1f}")
    ratio = results["chunked"]["peak_bytes"] / results["naive"]["peak_bytes"]
    speed = results["chunked"]["seconds"] / results["naive"]["seconds"]
    print(f"chunked / naive peak memory: {ratio:.3f}   time: {speed:.2f}")
    if not all(r["hwm_reset"] for r in results.values()):
        print("note: /proc/self/clear_refs unavailable; peaks include input building")
    for key, diff in diffs.items():
        print(f"max abs diff {key}: {diff:.2e} (max |value| {scales[key]:.2e})")
    assert diffs["logprobs"] <= TOLERANCE, f"log-probs disagree: {diffs['logprobs']:.2e} > {TOLERANCE}"
    for key in ("hidden_grad", "weight_grad"):  # grads: relative to their scale (sums of many terms)
        if key in diffs:
            assert diffs[key] <= TOLERANCE * max(scales[key], 1.0), f"{key} disagrees: {diffs[key]:.2e}"


if __name__ == "__main__":
    main()
