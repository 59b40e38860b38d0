"""Future-KL: fipo_nb's chunked scan vs the official T x 128 decay-block matmul, side by side.

Both run on the same inputs in the same process (machines here are shared and noisy, so only
the ratio measured in one run means anything). Each is checked against a float64 reverse loop.

    .venv/bin/python benchmarks/future_kl.py [--batch 16] [--lengths 1024 4096 20480] [--decay-rate 32] [--quick]

The official formulation (verl fork, `compute_policy_loss_future_kl`) is rewritten here from
its description: for every block of 128 future positions it builds a [T, 128] matrix of
gamma^(k - t) and adds `kl[:, block] @ decay_block.T` to every position: O(B * T^2) work.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from fipo_nb.core import future_kl, future_kl_reference


def official_future_kl(log_ratio, response_mask, *, decay_rate, dual_clip=10.0, chunk_size=128):
    """The official code's Future-KL: T x 128 decay blocks, O(B T^2), in the input dtype."""
    batch, length = log_ratio.shape
    dtype, device = log_ratio.dtype, log_ratio.device
    delta = log_ratio.clamp(-20.0, 20.0)
    kl = delta * response_mask.to(dtype) * (delta <= math.log(dual_clip)).to(dtype)  # [B, T]
    gamma = torch.tensor(2 ** (-1.0 / decay_rate), dtype=dtype, device=device)
    out = torch.zeros(batch, length, dtype=dtype, device=device)
    pos = torch.arange(length, device=device)[:, None]  # [T, 1]
    for start in range(0, length, chunk_size):
        end = min(length, start + chunk_size)
        dist = torch.arange(start, end, device=device)[None, :] - pos  # [T, Kb], k - t
        block = torch.pow(gamma, dist.clamp(min=0)) * (dist >= 0).to(dtype)  # [T, Kb]
        out += kl[:, start:end] @ block.t()  # [B, T]
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_inputs(batch: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_ratio = 0.1 * torch.randn(batch, length, generator=gen)  # a few large ratios too
    log_ratio[torch.rand(batch, length, generator=gen) < 0.001] = 3.0
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]  # right-padded responses
    return log_ratio, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 20480])
    parser.add_argument("--decay-rate", type=float, default=32.0)
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): B = 2, T = 256")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.lengths = 2, [256]
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B = {args.batch}, "
          f"decay_rate = {args.decay_rate:g}, float32 inputs")
    header = f"{'T':>6} | {'fipo_nb ms':>10} | {'official ms':>11} | {'speed-up':>8} | {'fipo_nb err':>11} | {'official err':>12}"
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        log_ratio, mask = make_inputs(args.batch, length)
        kwargs = dict(decay_rate=args.decay_rate, dual_clip=10.0)
        ours_s = timed(lambda: future_kl(log_ratio, mask, **kwargs), repeats=20)
        official_s = timed(lambda: official_future_kl(log_ratio, mask, **kwargs), repeats=1 if length > 8192 else 3)
        reference = future_kl_reference(log_ratio, mask, **kwargs)
        ours_err = (future_kl(log_ratio, mask, **kwargs).double() - reference).abs().max().item()
        official = official_future_kl(log_ratio, mask, **kwargs).double()
        official_err = (torch.where(mask, official, 0.0) - reference).abs().max().item()
        print(f"{length:>6} | {ours_s * 1e3:>10.2f} | {official_s * 1e3:>11.1f} | "
              f"{official_s / ours_s:>7.0f}x | {ours_err:>11.1e} | {official_err:>12.1e}")


if __name__ == "__main__":
    main()
