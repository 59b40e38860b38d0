"""fipo_nb.plan: memory and time arithmetic, checked by hand against the model shapes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fipo_nb.integrations.verl.plan import GIB, model_shape, plan
from fipo_nb.presets import apply_overrides, get_preset


def line(lines, label):
    return next(l for l in lines if l.label.startswith(label))


def test_qwen_shapes_give_the_published_parameter_counts():
    # Qwen2.5-32B: 64 x (q 5120^2 + k, v 5120 x 1024 + o 5120^2 + biases + MLP 3 x 5120 x 27648 + 2 norms)
    #   + 2 x 152064 x 5120 (untied) + 5120 = 32,763,876,352 (its safetensors hold 32.8e9)
    assert model_shape("Qwen/Qwen2.5-32B").params == 32_763_876_352
    assert model_shape("Qwen/Qwen2.5-7B-Instruct").params == 7_615_616_512  # "7.61B" on the model card
    assert model_shape("Qwen/Qwen2.5-0.5B-Instruct").params == 494_032_768  # "0.49B", tied embeddings
    assert model_shape("Qwen/Qwen2.5-32B").kv_bytes_per_token == 2 * 64 * 8 * 128 * 2  # K and V, bf16: 256 KiB
    with pytest.raises(ValueError, match="TrainConfig.model 'nowhere/unknown'"):
        model_shape("nowhere/unknown")


def test_the_official_16x8x80_setup_fits_and_shows_its_arithmetic():
    p = plan(get_preset("paper-fipo-32b"), 16, 8, 80)
    assert p.fits and p.smallest is None
    # activations at the dynamic-batch budget 22528 tokens per GPU (Ulysses 8 spreads each 8 x 22528 micro-batch)
    assert line(p.training, "activation checkpoints").gib == pytest.approx(22528 * 64 * 5120 * 2 / GIB)  # 13.75
    assert line(p.training, "logits").gib == pytest.approx(22528 * 152064 * 8 / GIB)  # 25.5
    assert not any("shards (GPU)" in l.label for l in p.training)  # offloaded: on the CPU, 16 B / param / node
    assert sum(l.gib for l in p.cpu) == pytest.approx(16 * 32_763_876_352 / 16 / GIB)  # 30.5 GiB per node
    # ... and loaded back onto each GPU for every update (verl 0.9.1): 16 B / param / GPU, 3.8 GiB
    in_update = [l for l in p.training if "(GPU in update)" in l.label]
    assert sum(l.gib for l in in_update) == pytest.approx(16 * 32_763_876_352 / 128 / GIB)
    assert line(p.training, "embedding + output head").gib == pytest.approx(2 * 2 * 152064 * 5120 / GIB)  # untied
    total = sum(l.gib for l in p.training)
    assert 52 <= total <= 57  # what the official setup needs per GPU (an audit against verl 0.9.1: 52-57 GiB)
    weights = line(p.rollout, "vLLM weights").gib
    assert weights == pytest.approx(2 * 32_763_876_352 / 4 / GIB)  # bf16 at tensor parallel 4: 15.3 GiB
    kv = line(p.rollout, "vLLM KV cache").gib
    assert kv == pytest.approx(0.8 * 80 - weights - 1.5)  # 47.2 GiB
    assert p.concurrent_sequences == int(kv * GIB * 4 // (262144 * 22528)) == 34  # 20480-token responses at once
    text = str(p)
    assert "verdict: fits on 16 x 8 GPUs" in text and "22528 tok x 64 layers x H 5120 x 2 B" in text
    assert p.step_seconds > 0 and "sampling" in text


def test_what_does_not_fit_is_named_with_the_smallest_cluster_that_would():
    no_offload = apply_overrides(get_preset("paper-fipo-32b"), ["offload=false"])
    p = plan(no_offload, 1, 8, 80)
    assert not p.fits and any("training needs" in m for m in p.problems)
    # 16 B x 32.76e9 / N GPUs of states must fit beside vLLM's 0.8: needs N >= 64 with the divisibility rules
    assert p.smallest == (8, 8) and "smallest cluster that fits: 8 node(s) x 8 GPUs" in str(p)
    assert plan(no_offload, 8, 8, 80).fits
    one = plan(get_preset("paper-fipo-32b"), 1, 1, 80)
    assert not one.fits and any("does not divide" in m for m in one.problems)


def test_small_presets_fit_one_gpu():
    assert plan(get_preset("qlora-qwen2.5-0.5b"), gpu_memory_gib=24).fits  # "one 16-24 GB GPU"
    assert plan(get_preset("qlora-qwen2.5-7b"), gpu_memory_gib=80).fits  # "one 80 GB GPU"
    p = plan(get_preset("qlora-qwen2.5-7b"), gpu_memory_gib=16)
    assert not p.fits and p.engine == "fipo_nb" and p.smallest is None  # one device: no cluster to grow into
    adapters = line(plan(get_preset("qlora-qwen2.5-7b")).training, "LoRA adapters").gib
    # r 64 on every linear layer: 28 x 64 x (q 2H + k, v 2 (H + 512) + o 2H + gate, up 2 (H + I) + down I + H)
    h, i = 3584, 18944
    assert adapters == pytest.approx(16 * 28 * 64 * (2 * h + 2 * (h + 512) + 2 * h + 2 * (h + i) + (i + h)) / GIB)


def test_cli_plan_prints_the_arithmetic():
    done = subprocess.run([sys.executable, "-m", "fipo_nb.cli", "plan", "--preset", "paper-fipo-32b", "--nodes", "16",
                           "--gpus-per-node", "8", "--gpu-memory", "80"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "verdict: fits on 16 x 8 GPUs" in done.stdout and "vLLM KV cache" in done.stdout
    assert "of 78.00 GiB (80 less 2 kept free for CUDA, NCCL): fits" in done.stdout
    small = subprocess.run([sys.executable, "-m", "fipo_nb.cli", "plan", "--preset", "paper-fipo-32b", "--nodes", "16",
                            "--gpus-per-node", "8", "--cpu-memory", "16"], capture_output=True, text=True)
    assert "30.51  of 16.00 GiB: DOES NOT FIT" in small.stdout  # the offloaded fp32 states need 30.5 GiB per node


@pytest.mark.parametrize("kwargs, named", [
    (dict(nodes=0), "nodes"), (dict(gpus_per_node=-1), "gpus_per_node"), (dict(gpu_memory_gib=2), "gpu_memory_gib"),
])
def test_impossible_hardware_is_refused_by_name(kwargs, named):
    args = dict(nodes=1, gpus_per_node=1, gpu_memory_gib=80) | kwargs
    with pytest.raises(ValueError, match=named):
        plan(get_preset("qlora-qwen2.5-0.5b"), args["nodes"], args["gpus_per_node"], args["gpu_memory_gib"])
