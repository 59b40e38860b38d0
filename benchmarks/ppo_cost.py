"""The price of the critic: PPO's training step beside DAPO's and FIPO's, on the same rollout.

Each method runs in its own process (so that each peak memory is its own): the same preset and
seed give the same initial policy and the same sampled rollout (its hash is printed and must agree);
the step's training part (old log-probs, the critic's values and updates for PPO, the policy's
updates) is timed on that rollout `--repeats` times from the same state, and the process's peak
resident memory (VmHWM) is read at the end. PPO here is GAE advantages from a critic (a second
LoRA adapter and a value head on the one base) with the DAPO loss; FIPO and DAPO use group
advantages and need no critic. At one thread and at the default thread count.

    .venv/bin/python benchmarks/ppo_cost.py [--model smollm2-135m-instruct] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile

METHODS = {"fipo": ["fipo.loss=fipo"], "dapo": ["fipo.loss=dapo"],
           "ppo": ["fipo.loss=dapo", "advantage_estimator=gae"]}


def child(args) -> None:
    import torch

    from fipo_nb.compare import rollout_hash
    from fipo_nb.presets import apply_overrides, get_preset
    from fipo_nb.trainer import FIPOTrainer
    from logprobs import proc_status_kib  # benchmarks/logprobs.py (this script's folder is on sys.path)

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_ppo_") as out_dir:
        config = apply_overrides(get_preset("demo"), [
            f"model={args.model}", f"prompts_per_step={args.prompts}", f"samples_per_prompt={args.samples}",
            f"mini_batch_size={max(args.prompts // 2, 1)}", f"max_response_length={args.response_length}",
            f"output_dir={out_dir}", "trace_samples=0", "eval_every=0", "save_every=-1", *METHODS[args.child],
        ])
        trainer = FIPOTrainer(config)
        sampled = trainer.sample()  # the same rollout in every process: same weights, prompts and seeds
        critic = trainer.critic
        state = copy.deepcopy((trainer.policy.model.state_dict(), trainer.optimizer.state_dict(),
                               trainer.scheduler.state_dict(),
                               critic.head.state_dict() if critic else None,
                               trainer.critic_optimizer.state_dict() if critic else None))
        times, result = [], None
        for _ in range(args.repeats):
            trainer.policy.model.load_state_dict(state[0])  # the critic's adapter is in this state too
            trainer.optimizer.load_state_dict(state[1])
            trainer.scheduler.load_state_dict(state[2])
            if critic:
                critic.head.load_state_dict(state[3])
                trainer.critic_optimizer.load_state_dict(state[4])
            trainer.step_count = 0
            result = trainer.step(sampled)
            m = result.metrics
            times.append(m["time/logprob_s"] + m["time/update_s"] + m.get("time/critic_s", 0.0))
        critic_bytes = sum(p.numel() * p.element_size() for p in critic.parameters()) if critic else 0
        print(json.dumps({"train_s": statistics.median(times), "generate_s": sampled.times["generate_s"],
                          "peak_kib": proc_status_kib("VmHWM"), "critic_param_bytes": critic_bytes,
                          "rollout": rollout_hash(result)[:12], "tokens": int(result.rollout.response_mask.sum()),
                          "updates": m["update/count"]}))


def measure(args, threads: int) -> dict:
    out = {}
    for method in METHODS:
        command = [sys.executable, __file__, "--child", method, "--threads", str(threads), "--model", args.model,
                   "--prompts", str(args.prompts), "--samples", str(args.samples),
                   "--response-length", str(args.response_length), "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{method} at {threads} thread(s) failed:\n{done.stderr[-3000:]}")
        out[method] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): the tiny random model")
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.model, args.prompts, args.samples, args.response_length, args.repeats = "tiny-qwen2", 2, 2, 16, 1
    if args.child:
        return child(args)
    import torch

    default = torch.get_num_threads()
    for threads in sorted({1, default}):
        runs = measure(args, threads)
        same = len({r["rollout"] for r in runs.values()}) == 1
        first = runs["dapo"]
        print(f"\nmodel {args.model}, {args.prompts} prompts x {args.samples}, {first['tokens']} response tokens, "
              f"{first['updates']:.0f} updates per step, {threads} thread(s), median of {args.repeats}; "
              f"same rollout in every process: {'yes' if same else 'NO'}")
        print(f"{'':26} {'FIPO':>9} {'DAPO':>9} {'PPO':>9} {'PPO/DAPO':>9} {'PPO/FIPO':>9}")
        f, d, p = (runs[m]["train_s"] for m in ("fipo", "dapo", "ppo"))
        print(f"{'training part (s)':26} {f:>9.3f} {d:>9.3f} {p:>9.3f} {p / d:>9.3f} {p / f:>9.3f}")
        f, d, p = (runs[m]["peak_kib"] / 1024 for m in ("fipo", "dapo", "ppo"))
        print(f"{'peak resident (MiB)':26} {f:>9.0f} {d:>9.0f} {p:>9.0f} {p / d:>9.3f} {p / f:>9.3f}")
        print(f"critic: {runs['ppo']['critic_param_bytes'] / 2**20:.2f} MiB of trainable parameters (adapter + head; "
              f"AdamW adds twice that); sampling {first['generate_s']:.1f} s per step, the same for all")
        if not same:
            raise SystemExit("the processes sampled different rollouts: the comparison is not on equal work")
        print(f"PPO step cost: {runs['ppo']['train_s'] / runs['dapo']['train_s']:.3f}x DAPO's training part")


if __name__ == "__main__":
    main()
