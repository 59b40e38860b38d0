"""GPU readiness: QLoRA and LoRA training steps in bf16 on random Qwen2.5-0.5B- and 1.5B-shaped models.

For each size and adapter mode: a randomly initialised Qwen2 model with the published shapes of
Qwen2.5-0.5B / 1.5B (fipo_nb.models.tiny_config with their sizes, the real Qwen tokenizer), saved
once and loaded by `FIPOTrainer` as a user's checkpoint would be (QLoRA: 4-bit NF4 base), then two
training steps (the first also warms up kernels). Printed per step: sampling tokens/s (response
tokens / generation time), update tokens/s (prompt + response tokens through forward and backward
/ update time), peak GPU memory (torch.cuda.max_memory_allocated; on the CPU the step's peak
resident memory above its start), whether the first mini-batch's log-ratio is exactly 0 (the
old-log-prob pass and the update split rows alike, so a GPU's kernels give bit-identical log-probs;
the script exits with status 1 if not), and the updates' model FLOPs utilisation:

  MFU = model FLOPs of the updates / update seconds / the GPU's dense bf16 peak
  model FLOPs = 4 * (N_body * T + N_head * T_r) + 6 * N_lora * T
      T = prompt + response tokens, T_r = response tokens (only those go through the output head)
      N_body = the decoder layers' matrix weights (frozen; 4-bit ones counted at their full shape),
      N_head = vocab x hidden, N_lora = the adapters' weights.
      Frozen base: forward 2N per token, backward through the activations 2N, no weight gradient;
      adapters: forward 2, activation gradient 2, weight gradient 2 per weight and token (6, as
      for full fine-tuning's 6N). Attention score FLOPs and activation-checkpointing recompute are
      not counted (model FLOPs, not hardware FLOPs), so MFU is a lower bound of the GPU's work.

Without CUDA, or with --quick, the same steps run on tiny shapes (hidden 64, 2 layers) in float32,
so that the script cannot rot; the GPU figures need a CUDA machine:

    .venv/bin/python benchmarks/gpu_check.py                     # on a CUDA GPU: 0.5b and 1.5b, qlora and lora
    .venv/bin/python benchmarks/gpu_check.py --quick             # tiny shapes, seconds (CPU or GPU)
    .venv/bin/python benchmarks/gpu_check.py --peak-tflops 989   # for a GPU the table below does not know
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from fipo_nb.models import qwen_tokenizer, tiny_config
from fipo_nb.presets import apply_overrides, get_preset
from logprobs import proc_status_kib  # benchmarks/logprobs.py (this script's folder is on sys.path)
from fipo_nb.trainer import FIPOTrainer

SHAPES = {  # the published Qwen2.5 configs (tied embeddings in both)
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    "tiny": dict(),  # tiny_config's own: hidden 64, 2 layers
}
PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "GH200": 989.4,
    "A100": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.5b,1.5b", help="comma-separated: 0.5b, 1.5b (GPU)")
    parser.add_argument("--modes", default="qlora,lora")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, seconds, on whatever device there is")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" bars between the table's rows
    cuda = torch.cuda.is_available()
    if args.quick or not cuda:
        args.sizes, args.prompts, args.samples, args.max_new_tokens = "tiny", 2, 2, 8
    with tempfile.TemporaryDirectory(prefix="fipo_nb_gpu_check_") as out_dir:
        run(args, Path(out_dir), cuda)


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name()
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def build_checkpoint(size: str, folder: Path, dtype: torch.dtype, device: str) -> Path:
    """A random model of `size`'s shapes with the real Qwen tokenizer, saved as a user's checkpoint."""
    from transformers import AutoModelForCausalLM

    tokenizer = qwen_tokenizer("qwen2.5")
    config = tiny_config("qwen2", **SHAPES[size])
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    path = folder / f"qwen2.5-{size}-random"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    return path


def matrix_weights(config) -> tuple[int, int]:
    """(N_body, N_head): the decoder layers' projection weights and the output head, from the shapes."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    per_layer = hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * inter  # q, o; k, v; gate, up, down
    return layers * per_layer, config.vocab_size * hidden


def run(args, out_dir: Path, cuda: bool) -> None:
    device = "cuda" if cuda else "cpu"
    dtype_name = "bfloat16" if cuda and args.sizes != "tiny" else "float32"
    peak = peak_tflops(args) if cuda else None
    where = torch.cuda.get_device_name() if cuda else "cpu (no CUDA: tiny shapes; GPU figures need a CUDA machine)"
    print(f"device {where}, {dtype_name}, peak {f'{peak:g} TFLOPS dense bf16' if peak else 'unknown (no MFU)'}; "
          f"{args.prompts} prompts x {args.samples} samples, {args.max_new_tokens} new tokens, 2 updates per step; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'size':5} {'mode':6} {'step':>4} {'sample tok/s':>12} {'update tok/s':>12} {'peak GiB':>9} "
          f"{'update MFU':>10} {'tokens':>7} {'N_lora':>10} {'1st log-ratio 0':>15}")
    failed = []
    for size in args.sizes.split(","):
        checkpoint = build_checkpoint(size, out_dir, getattr(torch, dtype_name), device)
        for mode in args.modes.split(","):
            config = apply_overrides(get_preset("cpu-smoke"), [
                f"model={checkpoint}", f"mode={mode}", "lora_r=32", "lora_alpha=64", f"dtype={dtype_name}",
                f"device={device}", "data=single-digit?size=256", "instruction=dapo", f"prompts_per_step={args.prompts}",
                f"samples_per_prompt={args.samples}", f"mini_batch_size={max(args.prompts // 2, 1)}",
                f"micro_batch_size={args.samples * max(args.prompts // 2, 1)}", "temperature=1.0",
                f"max_response_length={args.max_new_tokens}", "max_prompt_length=1024", "lr=1e-5",
                f"gradient_checkpointing={cuda and size != 'tiny'}", "trace_samples=0", "save_every=-1",
                f"output_dir={out_dir / f'{size}-{mode}'}",
            ])
            trainer = FIPOTrainer(config)
            body, head = matrix_weights(trainer.policy.model.config)
            lora = sum(p.numel() for p in trainer.policy.trainable_parameters())
            for step in range(1, args.steps + 1):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
                    resident = proc_status_kib("VmRSS")
                started = time.perf_counter()
                result = trainer.step()
                if cuda:
                    torch.cuda.synchronize()
                wall = time.perf_counter() - started
                metrics, rollout = result.metrics, result.rollout
                response = int(rollout.response_mask.sum())
                tokens = response + int(rollout.prompt_mask.sum())
                flops = 4 * (body * tokens + head * response) + 6 * lora * tokens
                update_s = metrics["time/update_s"]
                mfu = f"{100 * flops / update_s / (peak * 1e12):.1f}%" if peak else "n/a"
                memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else _cpu_peak_gib(resident)
                exact = bool((result.log_ratio[result.mini_batch == 0] == 0).all())
                if not exact:
                    failed.append(f"{size} {mode} step {step}")
                print(f"{size:5} {mode:6} {step:>4} {response / metrics['time/generate_s']:>12.1f} "
                      f"{tokens / update_s:>12.1f} {memory:>9.2f} {mfu:>10} {tokens:>7} {lora:>10} "
                      f"{'yes' if exact else 'NO':>15}  (step {wall:.1f} s)", flush=True)
            del trainer
            if cuda:
                torch.cuda.empty_cache()
    if failed:
        raise SystemExit(f"the first mini-batch's log-ratio is not exactly 0 in: {', '.join(failed)}")


def _cpu_peak_gib(resident_kib: int) -> float:
    """Peak resident memory of the step above what was resident at its start (no GPU to ask)."""
    return (proc_status_kib("VmHWM") - resident_kib) / 2**20


if __name__ == "__main__":
    main()
