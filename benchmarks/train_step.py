"""FIPO vs DAPO: the cost of Future-KL in a training step, side by side on the same model and batch.

One rollout is sampled once (`FIPOTrainer.sample`); then a step is trained on it
(`FIPOTrainer.step(sampled)`: old log-probs + one optimizer update per mini-batch) alternately
with loss="fipo" and loss="dapo", from the same model, optimizer and schedule state each time,
and the medians of the training part are compared. The rollout's generation time is reported
too: a full step is generation + this. Public API only.

    .venv/bin/python benchmarks/train_step.py [--model smollm2-135m-instruct] [--repeats 5] [--quick]

It runs itself once at torch's default thread count and once at 1 thread (benchmarks/threads.py);
`--threads default` or `--threads 1` measures in this process only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile

import torch

from threads import CHOICES, each_thread_count  # benchmarks/threads.py

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): the tiny random model")
    parser.add_argument("--threads", choices=CHOICES, help="measure in this process only, at these threads "
                        "(default: once at torch's default and once at 1 thread, a process each)")
    args = parser.parse_args()
    if not each_thread_count(args.threads):
        return
    if args.quick:
        args.model, args.prompts, args.samples, args.response_length, args.repeats = "tiny-qwen2", 2, 2, 16, 1
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_train_step_") as out_dir:
        run(args, out_dir)


def run(args, out_dir: str) -> None:
    torch.manual_seed(0)
    config = apply_overrides(get_preset("demo"), [
        f"model={args.model}", f"prompts_per_step={args.prompts}", f"samples_per_prompt={args.samples}",
        f"mini_batch_size={max(args.prompts // 2, 1)}", f"max_response_length={args.response_length}",
        f"output_dir={out_dir}", "trace_samples=0", "eval_every=0", "save_every=-1",
    ])
    trainer = FIPOTrainer(config)
    trainer.step()  # warms every code path up
    sampled = trainer.sample()  # the one rollout both losses train on
    rollout = sampled.batch.rollout
    state = copy.deepcopy((trainer.policy.model.state_dict(), trainer.optimizer.state_dict(),
                           trainer.scheduler.state_dict()))
    losses = {"fipo": trainer.config.fipo, "dapo": apply_overrides(trainer.config, ["fipo.loss=dapo"]).fipo}

    def train_part(loss: str) -> tuple[float, float]:
        trainer.policy.model.load_state_dict(state[0])
        trainer.optimizer.load_state_dict(state[1])
        trainer.scheduler.load_state_dict(state[2])
        trainer.config.fipo = losses[loss]
        metrics = trainer.step(sampled).metrics
        return metrics["time/logprob_s"] + metrics["time/update_s"], metrics["update/count"]

    times = {"fipo": [], "dapo": []}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        for loss in times:
            seconds, updates = train_part(loss)
            times[loss].append(seconds)
    fipo_s, dapo_s = statistics.median(times["fipo"]), statistics.median(times["dapo"])
    generate_s = sampled.times["generate_s"]
    tokens = int(rollout.response_mask.sum())
    print(f"model {args.model} ({config.mode}), {len(rollout)} responses, {tokens} response tokens, "
          f"{updates:.0f} updates per step, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'':28} {'FIPO':>9} {'DAPO':>9} {'FIPO/DAPO':>10}")
    print(f"{'logprobs + updates (s)':28} {fipo_s:>9.3f} {dapo_s:>9.3f} {fipo_s / dapo_s:>10.4f}")
    print(f"{'full step incl. sampling (s)':28} {fipo_s + generate_s:>9.3f} {dapo_s + generate_s:>9.3f} "
          f"{(fipo_s + generate_s) / (dapo_s + generate_s):>10.4f}")
    print(f"FIPO overhead: {100 * (fipo_s / dapo_s - 1):+.2f}% of the training part, "
          f"{100 * ((fipo_s + generate_s) / (dapo_s + generate_s) - 1):+.2f}% of a full step "
          f"(sampling {generate_s:.1f} s, measured once)")


if __name__ == "__main__":
    main()
