"""Rollout speed: transformers' generate (the old path) against fipo_nb's compact decode loop, side by side.

Each repeat samples the same rollout (same prompts, same seed) with every path in turn:

  generate          transformers `generate`: every row is computed until the last one ends
  generate+static   the same with a static KV cache (`cache_implementation="static"`)
  compact           fipo_nb's loop (TrainConfig.rollout_backend="compact", the default): finished rows
                    leave the batch, each prompt is prefilled once, the chunk's padding is cut
  generate_batch    transformers' continuous batching (paged attention); its own random numbers,
                    so its samples are only comparable in distribution (--no-continuous skips it)

and prints the median time, response tokens per second, the rows x steps each path computed,
and whether its samples equal generate's token for token. Every path samples with the same model
weights, prompts and seed in each repeat, so where the samples are equal the work is too and the
last line compares times; where they are not (or for generate_batch) compare time per token.
Public API only (fipo_nb.rollout).

    .venv/bin/python benchmarks/rollout.py [--model smollm2-135m-instruct] [--mode lora] [--repeats 3] [--quick]

It runs itself once at torch's default thread count and once at 1 thread (benchmarks/threads.py);
`--threads default` or `--threads 1` measures in this process only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from threads import CHOICES, each_thread_count  # benchmarks/threads.py

from fipo_nb.models import load_policy
from fipo_nb.presets import get_preset
from fipo_nb.rollout import (
    eos_token_ids,
    encode_prompts,
    generate,
    model_defaults_off,
    pad_token_id,
    sampling_config,
    sampling_mode,
)
from fipo_nb.data import config_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--mode", default="lora", choices=["lora", "qlora", "full"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=None, help="rows per chunk (rollout_batch_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-continuous", action="store_true", help="skip transformers' generate_batch (slow on CPU)")
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): the tiny random Qwen2")
    parser.add_argument("--threads", choices=CHOICES, help="measure in this process only, at these threads "
                        "(default: once at torch's default and once at 1 thread, a process each)")
    args = parser.parse_args()
    if not each_thread_count(args.threads):
        return
    if args.quick:
        args.model, args.prompts, args.samples, args.max_new_tokens, args.repeats = "tiny-qwen2", 2, 3, 12, 1
        args.no_continuous = True
    run(args)


def demo_prompts(count: int) -> list:
    config = get_preset("demo")  # the built-in one-digit sums `make demo` trains on
    return [p.prompt for p in config_problems(config, "train")[:count]]


def run(args) -> None:
    policy = load_policy(args.model, args.mode, lora_r=16, lora_alpha=32, device="cpu")
    model, tokenizer = policy.model, policy.tokenizer
    prompts = demo_prompts(args.prompts)
    common = dict(n=args.samples, max_prompt_length=256, max_new_tokens=args.max_new_tokens,
                  temperature=args.temperature, batch_size=args.batch_size)

    def via_rollout(backend):
        def sample(seed):
            torch.manual_seed(seed)
            out = generate(model, tokenizer, prompts, backend=backend, **common)
            lengths = out.response_lengths
            if backend == "compact":
                computed = int(lengths.sum())  # a row leaves the batch after its last token
            else:
                computed = sum((c.stop - c.start) * int(lengths[c].max()) for c in _chunks(len(out), args.batch_size))
            return out.response_ids, out.response_mask, computed
        return sample

    def static_cache(seed):  # rollout.generate's own chunking and masks, generate() with a static KV cache
        torch.manual_seed(seed)
        encoded, _, _ = encode_prompts(tokenizer, prompts, 256)
        rows = [ids for ids in encoded for _ in range(args.samples)]
        width = max(len(r) for r in rows)
        pad = pad_token_id(tokenizer)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # [N, P] left-padded
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # [N, P]
        stops = eos_token_ids(model, tokenizer)
        config = sampling_config(temperature=args.temperature, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens,
                                 stop_ids=stops, pad_id=pad)
        config.cache_implementation = "static"
        pieces = []
        with sampling_mode(model), model_defaults_off(model):
            for chunk in _chunks(len(rows), args.batch_size):
                pieces.append(model.generate(input_ids=ids[chunk], attention_mask=mask[chunk],
                                             generation_config=config)[:, width:])
        return _assemble(pieces, stops, pad)

    def continuous(seed):
        torch.manual_seed(seed)
        encoded, _, _ = encode_prompts(tokenizer, prompts, 256)
        pad, stops = pad_token_id(tokenizer), eos_token_ids(model, tokenizer)
        config = sampling_config(temperature=args.temperature, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens,
                                 stop_ids=stops, pad_id=pad)
        config.num_return_sequences = args.samples
        with sampling_mode(model), model_defaults_off(model):
            out = model.generate_batch(encoded, generation_config=config)
        responses = [list(o.generated_tokens) for o in out.values()]
        width = max(len(r) for r in responses)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses], dtype=torch.bool)
        return ids, mask, None

    paths = {"generate": via_rollout("generate"), "generate+static": static_cache, "compact": via_rollout("compact")}
    if not args.no_continuous:
        paths["generate_batch"] = continuous
    for sample in paths.values():  # warm-up: first calls allocate and pick kernels
        sample(12345)

    times = {name: [] for name in paths}
    tokens = {name: [] for name in paths}
    computed = {name: [] for name in paths}
    same = {name: True for name in paths}
    for repeat in range(args.repeats):  # alternating, so changes in machine load hit every path alike
        reference = None
        for name, sample in paths.items():
            started = time.perf_counter()
            ids, mask, work = sample(repeat)
            times[name].append(time.perf_counter() - started)
            tokens[name].append(int(mask.sum()))
            computed[name].append(work)
            if name == "generate":
                reference = (ids, mask)
            elif name != "generate_batch":
                same[name] &= _equal(reference, (ids, mask))

    load = os.getloadavg()[0]
    print(f"model {args.model} ({args.mode}), {args.prompts} prompts x {args.samples} samples, "
          f"max {args.max_new_tokens} new tokens, temperature {args.temperature}, chunk {args.batch_size or 'all'}, "
          f"{torch.get_num_threads()} threads, load {load:.1f}, median of {args.repeats}")
    print(f"{'path':16} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'rows x steps':>13} {'speed-up':>9}  same samples")
    base = statistics.median(times["generate"]) / statistics.median(tokens["generate"])
    for name in paths:
        seconds, count = statistics.median(times[name]), statistics.median(tokens[name])
        work = "-" if computed[name][0] is None else f"{statistics.median(computed[name]):.0f}"
        verdict = "(own random numbers)" if name == "generate_batch" else ("yes" if same[name] else "no")
        if name == "generate":
            verdict = "(reference)"
        print(f"{name:16} {seconds:>8.2f} {count:>7.0f} {count / seconds:>9.1f} {work:>13} "
              f"{base / (seconds / count):>8.2f}x  {verdict}")
    if same["compact"]:  # the same tokens: equal work, so time against time
        speedup = statistics.median(times["generate"]) / statistics.median(times["compact"])
        print(f"compact over generate: {speedup:.2f}x (time for the same samples)")
    else:  # a draw flipped by float rounding: the token counts may differ, so time per token
        per_token = {name: statistics.median(t / n for t, n in zip(times[name], tokens[name]))
                     for name in ("generate", "compact")}
        print(f"compact over generate: {per_token['generate'] / per_token['compact']:.2f}x (time per response "
              f"token: the samples differ)")


def _chunks(rows: int, size: int | None) -> list[slice]:
    size = size or rows
    return [slice(s, min(s + size, rows)) for s in range(0, rows, size)]


def _assemble(pieces, stops, pad):
    width = max(p.shape[1] for p in pieces)
    ids = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=pad) for p in pieces])  # [N, R]
    is_stop = torch.isin(ids, torch.tensor(stops))
    lengths = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, torch.tensor(width))
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return torch.where(mask, ids, torch.full_like(ids, pad)), mask, sum(p.shape[0] * p.shape[1] for p in pieces)


def _equal(a, b) -> bool:
    (ids_a, mask_a), (ids_b, mask_b) = a, b
    width = max(ids_a.shape[1], ids_b.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    return torch.equal(pad(mask_a.long()), pad(mask_b.long())) and torch.equal(pad(ids_a * mask_a), pad(ids_b * mask_b))


if __name__ == "__main__":
    main()
