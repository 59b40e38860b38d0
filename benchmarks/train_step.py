"""FIPO vs DAPO: the cost of Future-KL in a training step, side by side on the same model and batch.

One rollout is sampled once; then the training part of a step (old log-probs + one optimizer
update per mini-batch) runs alternately with loss="fipo" and loss="dapo", from the same model
and optimizer state each time, and the medians are compared. The rollout's generation time is
reported too: a full step is generation + this.

    .venv/bin/python benchmarks/train_step.py [--model smollm2-135m-instruct] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = apply_overrides(get_preset("demo"), [
        f"model={args.model}", f"prompts_per_step={args.prompts}", f"samples_per_prompt={args.samples}",
        f"mini_batch_size={max(args.prompts // 2, 1)}", f"max_response_length={args.response_length}",
        "output_dir=/tmp/fipo_nb_bench_train_step",
    ])
    trainer = FIPOTrainer(config)
    result = trainer.step()  # one rollout to reuse; also warms every code path up
    rollout, advantages = result.rollout, result.advantages
    model_state = copy.deepcopy(trainer.policy.model.state_dict())
    optim_state = copy.deepcopy(trainer.optimizer.state_dict())
    fipo_config = trainer.config.fipo
    dapo_config = apply_overrides(trainer.config, ["fipo.loss=dapo"]).fipo

    def train_part(fipo) -> float:
        trainer.policy.model.load_state_dict(model_state)
        trainer.optimizer.load_state_dict(optim_state)
        trainer.config.fipo = fipo
        start = time.perf_counter()
        old = trainer._log_probs(rollout, grad=False)
        trainer._update(rollout, old, advantages)
        return time.perf_counter() - start

    times = {"fipo": [], "dapo": []}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        times["fipo"].append(train_part(fipo_config))
        times["dapo"].append(train_part(dapo_config))
    fipo_s, dapo_s = statistics.median(times["fipo"]), statistics.median(times["dapo"])
    generate_s = result.metrics["time/generate_s"]
    tokens = int(rollout.response_mask.sum())
    print(f"model {args.model} ({config.mode}), {len(rollout)} responses, {tokens} response tokens, "
          f"{result.metrics['update/count']:.0f} updates per step, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'':28} {'FIPO':>9} {'DAPO':>9} {'FIPO/DAPO':>10}")
    print(f"{'logprobs + updates (s)':28} {fipo_s:>9.3f} {dapo_s:>9.3f} {fipo_s / dapo_s:>10.4f}")
    print(f"{'full step incl. sampling (s)':28} {fipo_s + generate_s:>9.3f} {dapo_s + generate_s:>9.3f} "
          f"{(fipo_s + generate_s) / (dapo_s + generate_s):>10.4f}")
    print(f"FIPO overhead: {100 * (fipo_s / dapo_s - 1):+.2f}% of the training part, "
          f"{100 * ((fipo_s + generate_s) / (dapo_s + generate_s) - 1):+.2f}% of a full step "
          f"(sampling {generate_s:.1f} s, measured once)")


if __name__ == "__main__":
    main()
