"""Memory and time arithmetic for a preset on a cluster: does it fit, and how long is a step?

    from fipo_nb.plan import plan
    print(plan(get_preset("paper-fipo-32b"), nodes=16, gpus_per_node=8, gpu_memory_gib=80))

Two engines are modelled. "verl" (the scale-out path): FSDP full-shard training over every GPU,
optionally with parameters, gradients and Adam states offloaded to CPU, activation checkpoints at
the dynamic-batch token budget split by the Ulysses degree, and vLLM rollouts at their tensor
parallelism inside `rollout_gpu_memory` of each GPU (the rest of the GPU must hold whatever
training state stays resident). "fipo_nb" (one device): fipo_nb's own trainer, with 4-bit QLoRA,
LoRA or full weights, its chunked log-prob head, and the rollout's KV cache (every row at full length: the most
it can hold).

Every figure is an estimate from the model's shape (no allocator fragmentation, no CUDA context,
no framework buffers beyond the headroom `HEADROOM_GIB` kept free on every GPU), and each line
prints the formula it came from, so a reader can check it with a pencil. The step time assumes a
stated mean prompt and response length, `MFU` of peak bf16 FLOP/s in training and
`BANDWIDTH_USE` of peak memory bandwidth while decoding (decoding is bandwidth-bound).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

GIB = 2**30
HEADROOM_GIB = 2.0  # kept free on every GPU: CUDA context, NCCL buffers, fragmentation
VLLM_OVERHEAD_GIB = 1.5  # vLLM's own activations and CUDA graphs inside its memory share
MFU = 0.35  # model FLOP utilisation assumed for training passes
BANDWIDTH_USE = 0.6  # share of peak HBM bandwidth a decode step achieves


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs of a decoder-only transformer (Qwen2-style: GQA attention, SwiGLU MLP)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        h, q = self.hidden, self.heads * self.head_dim
        attention = h * q + 2 * h * self.kv_dim + q * h + q + 2 * self.kv_dim  # q, k, v (biased), o
        return attention + 3 * h * self.intermediate + 2 * h  # SwiGLU MLP, two RMSNorms

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)  # input embedding (+ untied output head)

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embedding_params + self.hidden

    @property
    def lora_params_per_rank(self) -> int:
        """LoRA parameters per unit of rank on every linear layer (q, k, v, o, gate, up, down)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_dim, self.intermediate
        return self.layers * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_dim * 2  # K and V, every layer, bf16

    def describe(self) -> str:
        return (f"{self.params / 1e9:.2f}e9 parameters ({self.layers} layers, hidden {self.hidden}, {self.heads} heads, "
                f"{self.kv_heads} KV heads x {self.head_dim}, MLP {self.intermediate}, vocab {self.vocab}"
                f"{', tied head' if self.tied else ''})")


def _qwen(layers, hidden, heads, kv_heads, intermediate, vocab=152064, tied=False, head_dim=None):
    return ModelShape(layers, hidden, heads, kv_heads, head_dim or hidden // heads, intermediate, vocab, tied)


# published config.json values; "-Instruct" and "-Math" variants share their base model's shape
SHAPES = {
    "qwen/qwen2.5-0.5b": _qwen(24, 896, 14, 2, 4864, 151936, tied=True),
    "qwen/qwen2.5-1.5b": _qwen(28, 1536, 12, 2, 8960, 151936, tied=True),
    "qwen/qwen2.5-3b": _qwen(36, 2048, 16, 2, 11008, 151936, tied=True),
    "qwen/qwen2.5-7b": _qwen(28, 3584, 28, 4, 18944),
    "qwen/qwen2.5-14b": _qwen(48, 5120, 40, 8, 13824),
    "qwen/qwen2.5-32b": _qwen(64, 5120, 40, 8, 27648),
    "qwen/qwen2.5-72b": _qwen(80, 8192, 64, 8, 29568),
    "smollm2-135m-instruct": _qwen(30, 576, 9, 3, 1536, 49152, tied=True),
    "tiny-qwen2": _qwen(2, 64, 4, 2, 128, 151936, tied=True),
    "tiny-qwen3": _qwen(2, 64, 4, 2, 128, 151936, tied=True, head_dim=16),
    "tiny-qwen2-char": _qwen(2, 64, 4, 2, 128, 128),
}


def model_shape(model: str) -> ModelShape:
    """The shape of a known model id (Qwen2.5 family, the offline models) or of a local folder's config.json."""
    key = model.lower().removesuffix("-instruct").replace("qwen2.5-math-", "qwen2.5-")
    if key in SHAPES:
        return SHAPES[key]
    path = Path(model) / "config.json"
    if path.is_file():
        c = json.loads(path.read_text())
        heads = c["num_attention_heads"]
        return ModelShape(c["num_hidden_layers"], c["hidden_size"], heads, c.get("num_key_value_heads", heads),
                          c.get("head_dim") or c["hidden_size"] // heads, c["intermediate_size"], c["vocab_size"],
                          bool(c.get("tie_word_embeddings", False)))
    known = ", ".join(k for k in SHAPES if k.startswith("qwen/"))
    raise ValueError(f"TrainConfig.model {model!r}: the plan needs its shape: a known id ({known}, any -Instruct / "
                     "-Math variant) or a local folder with config.json")


@dataclass(frozen=True)
class Hardware:
    """One GPU kind and its node. Defaults: an 80 GiB H100 SXM node."""

    gpu_memory_gib: float = 80.0
    tflops: float = 989.0  # dense bf16 peak
    bandwidth_tbs: float = 3.35  # HBM peak, TB/s
    cpu_memory_gib: float = 1024.0  # per node, for offloaded states


@dataclass
class Line:
    label: str
    gib: float
    formula: str


@dataclass
class Plan:
    """The arithmetic of one setup. `fits` says whether every per-GPU total stays within its budget."""

    title: str
    engine: str
    nodes: int
    gpus_per_node: int
    training: list[Line]
    training_budget: float
    rollout: list[Line]
    rollout_budget: float
    cpu: list[Line]
    cpu_budget: float
    time: list[Line]  # gib holds seconds here
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    smallest: tuple[int, int] | None = None  # (nodes, gpus_per_node) that would fit, when this does not
    concurrent_sequences: int = 0  # full-length sequences one rollout engine holds at once

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def training_gib(self) -> float:
        return sum(line.gib for line in self.training)

    @property
    def rollout_gib(self) -> float:
        return sum(line.gib for line in self.rollout)

    @property
    def step_seconds(self) -> float:
        return sum(line.gib for line in self.time)

    def __str__(self) -> str:
        def table(name, lines, budget, unit="GiB", gpu=False):
            rows = [f"{name}"]
            rows += [f"  {l.label:<52} {l.gib:>9.2f}  = {l.formula}" for l in lines]
            total = sum(l.gib for l in lines)
            if budget is not None:
                verdict = "fits" if total <= budget else "DOES NOT FIT"
                kept = f" ({budget + HEADROOM_GIB:g} less {HEADROOM_GIB:g} kept free for CUDA, NCCL)" if gpu else ""
                rows.append(f"  {'total':<52} {total:>9.2f}  of {budget:.2f} {unit}{kept}: {verdict}")
            else:
                rows.append(f"  {'total':<52} {total:>9.1f}  {unit}")
            return rows

        out = [self.title, *self.notes, ""]
        out += table("training, per GPU (GiB)", self.training, self.training_budget, gpu=True) + [""]
        out += table("rollout, per GPU (GiB)", self.rollout, self.rollout_budget, gpu=True) + [""]
        if self.cpu:
            out += table("CPU memory, per node (GiB; fipo-nb plan --cpu-memory)", self.cpu, self.cpu_budget) + [""]
        out += table("one step (seconds)", self.time, None, "s") + [""]
        if self.fits:
            out.append(f"verdict: fits on {self.nodes} x {self.gpus_per_node} GPUs")
        else:
            out.append(f"verdict: does not fit on {self.nodes} x {self.gpus_per_node} GPUs:")
            out += [f"  - {p}" for p in self.problems]
            if self.smallest:
                out.append(f"smallest cluster that fits: {self.smallest[0]} node(s) x {self.smallest[1]} GPUs")
            else:
                out.append("no cluster up to 64 nodes of this GPU fits: change the preset (see the lines above)")
        return "\n".join(out)


def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def _activations(shape: ModelShape, tokens: float, checkpointing: bool) -> list[Line]:
    """Activations of one forward/backward over `tokens` tokens held by one GPU (bf16, flash attention)."""
    per_layer = 2 * (6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate)  # bytes per token per layer
    formula = f"{tokens:.0f} tok x 2 B x (6 H + 2 kv + 4 I)"
    if checkpointing:
        return [Line("activation checkpoints (one per layer)", _gib(tokens * shape.layers * shape.hidden * 2),
                     f"{tokens:.0f} tok x {shape.layers} layers x H {shape.hidden} x 2 B"),
                Line("one layer recomputed in backward", _gib(tokens * per_layer), formula)]
    return [Line("activations of every layer (no checkpointing)", _gib(tokens * per_layer * shape.layers),
                 f"{formula} x {shape.layers} layers")]


def _divisibility(config, n_gpus: int) -> list[str]:
    problems = []
    tp, sp = config.rollout_tensor_parallel, config.sequence_parallel
    if n_gpus % tp:
        problems.append(f"rollout_tensor_parallel {tp} does not divide {n_gpus} GPUs")
    if n_gpus % sp:
        problems.append(f"sequence_parallel {sp} does not divide {n_gpus} GPUs")
        return problems
    dp = n_gpus // sp
    for name, prompts in (("mini_batch_size", config.mini_batch_size), ("prompts_per_step", config.prompts_per_step)):
        if (prompts * config.samples_per_prompt) % dp:
            problems.append(f"{name} {prompts} x {config.samples_per_prompt} samples does not split over "
                            f"{dp} data-parallel ranks ({n_gpus} GPUs / sequence_parallel {sp})")
    return problems


def _verl_memory(config, shape: ModelShape, n_gpus: int, nodes: int, hw: Hardware):
    p, n = shape.params, n_gpus
    lora = config.mode == "lora"
    adapters = config.lora_r * shape.lora_params_per_rank if lora else 0
    trainable = adapters if lora else p
    where = "CPU" if config.offload else "GPU"
    states = [  # (label, bytes per trainable parameter, on the GPU?)
        (f"parameters, fp32 shards ({where})", 4, not config.offload),
        (f"gradients, fp32 shards ({where})", 4, not config.offload),
        (f"Adam moments, 2 x fp32 shards ({where})", 8, not config.offload),
    ]
    training, cpu = [], []
    models = 2 if config.advantage_estimator == "gae" else 1  # PPO: the critic is a second model of the same size
    if models == 2:
        states = [(label.replace("shards", "shards, actor + critic"), size * 2, on_gpu) for label, size, on_gpu in states]
    if lora:
        training.append(Line("frozen base weights, bf16 shards", _gib(2 * p / n), f"2 B x {p / 1e9:.2f}e9 / {n} GPUs"))
    for label, size, on_gpu in states:
        line = Line(label, _gib(size * trainable / n), f"{size} B x {trainable / 1e9:.3f}e9 / {n} GPUs")
        if on_gpu:
            training.append(line)
        else:  # verl 0.9.1 loads the offloaded shards back onto the GPU for each update (load_fsdp_model_to_gpu,
            # load_fsdp_optimizer): they live in CPU memory between updates and on the GPU during one
            cpu.append(Line(label, _gib(size * trainable / nodes), f"{size} B x {trainable / 1e9:.3f}e9 / {nodes} node(s)"))
            training.append(Line(label.replace("(CPU)", "(GPU in update)"), line.gib, line.formula))
    training.append(Line("gathered bf16 layers (current + prefetched)", _gib(2 * 2 * shape.layer_params),
                         f"2 layers x 2 B x {shape.layer_params / 1e6:.0f}e6"))
    heads = 1 if shape.tied else 2  # FSDP's root unit holds the embedding and the untied output head together
    training.append(Line("embedding + output head (bf16, FSDP root unit)",
                         _gib(heads * 2 * shape.vocab * shape.hidden),
                         f"{heads} x 2 B x V {shape.vocab} x H {shape.hidden}"))
    if not lora:  # a layer's full gradients exist in backward until FSDP's reduce-scatter shards them
        training.append(Line("layer gradients before reduce-scatter (fp32)", _gib(4 * shape.layer_params),
                             f"4 B x {shape.layer_params / 1e6:.0f}e6"))
    # per GPU: verl packs max_token_len_per_gpu x sp tokens over an sp group of GPUs
    tokens = config.micro_batch_size * (config.max_prompt_length + config.max_response_length)
    training += _activations(shape, tokens, config.gradient_checkpointing)
    training.append(Line("logits: bf16 + fp32 log-softmax + bf16 grad", _gib(tokens * shape.vocab * 8),
                         f"{tokens} tok x V {shape.vocab} x 8 B"))
    resident = sum(l.gib for l in training if "fp32 shards (GPU)" in l.label or "frozen base" in l.label)

    tp = config.rollout_tensor_parallel
    vllm_budget = config.rollout_gpu_memory * hw.gpu_memory_gib
    weights = _gib(2 * p / tp)
    kv = vllm_budget - weights - VLLM_OVERHEAD_GIB
    rollout = [Line(f"vLLM weights, bf16, tensor parallel {tp}", weights, f"2 B x {p / 1e9:.2f}e9 / {tp}"),
               Line("vLLM activations and CUDA graphs", VLLM_OVERHEAD_GIB, "fixed estimate"),
               Line("vLLM KV cache (what is left of its share)", max(kv, 0.0),
                    f"{config.rollout_gpu_memory:g} x {hw.gpu_memory_gib:g} - weights - activations")]
    if resident:
        rollout.append(Line("training state left on the GPU while sampling", resident, "the GPU shards above"))
    seq = config.max_prompt_length + config.max_response_length
    concurrent = int(max(kv, 0.0) * GIB * tp // (shape.kv_bytes_per_token * seq))
    return training, rollout, cpu, concurrent, kv, resident


def _single_memory(config, shape: ModelShape):
    p = shape.params
    adapters = config.lora_r * shape.lora_params_per_rank if config.mode != "full" else 0
    if config.mode == "qlora":  # NF4 with double quantisation: ~4.13 bits per weight; embeddings stay bf16
        body = p - shape.embedding_params
        weights = [Line("base weights, NF4 (4.13 bits) + bf16 embeddings", _gib(body * 4.13 / 8 + 2 * shape.embedding_params),
                        f"{body / 1e9:.3f}e9 x 4.13/8 B + 2 B x {shape.embedding_params / 1e6:.0f}e6")]
    else:
        weights = [Line("base weights, bf16", _gib(2 * p), f"2 B x {p / 1e9:.3f}e9")]
    if config.mode == "full":
        weights += [Line("gradients, bf16", _gib(2 * p), f"2 B x {p / 1e9:.3f}e9"),
                    Line("AdamW moments, 2 x bf16", _gib(4 * p), f"4 B x {p / 1e9:.3f}e9")]
    else:
        weights.append(Line("LoRA adapters: fp32 weight, grad, 2 Adam moments", _gib(16 * adapters),
                            f"16 B x r {config.lora_r} x {shape.lora_params_per_rank / 1e6:.2f}e6"))
    tokens = config.micro_batch_size * (config.max_prompt_length + config.max_response_length)
    training = weights + _activations(shape, tokens, config.gradient_checkpointing)
    chunk = min(config.logprob_chunk_size, tokens)
    training.append(Line("log-prob head chunk: fp32 logits, log-softmax, grad", _gib(chunk * shape.vocab * 12),
                         f"{chunk} tok x V {shape.vocab} x 12 B"))
    rows = config.rollout_batch_size or config.prompts_per_step * config.samples_per_prompt
    seq = config.max_prompt_length + config.max_response_length
    rollout = weights[:1] + [
        Line(f"KV cache ({config.rollout_backend} sampling), bf16, all rows at full length",
             _gib(rows * seq * shape.kv_bytes_per_token),
             f"{rows} rows x {seq} tok x {shape.kv_bytes_per_token / 1024:.0f} KiB"),
        Line("next-token logits, fp32", _gib(rows * shape.vocab * 4), f"{rows} rows x V {shape.vocab} x 4 B")]
    return training, rollout


def _time(config, shape: ModelShape, n_gpus: int, hw: Hardware, engine: str, concurrent: int,
          mean_prompt: int, mean_response: int) -> list[Line]:
    p = shape.params
    seq = mean_prompt + mean_response
    gen_prompts = config.gen_prompts_per_batch if config.dynamic_sampling and config.gen_prompts_per_batch else \
        config.prompts_per_step
    generated = gen_prompts * config.samples_per_prompt
    trained = config.prompts_per_step * config.samples_per_prompt
    flops_per_token = 2 * p + 2 * shape.layers * shape.hidden * seq  # forward: weights + causal attention
    passes = 4 if config.gradient_checkpointing else 3  # forward + backward (2x) (+ recomputed forward)
    if config.advantage_estimator == "gae":
        passes += passes + 1  # the critic: values forward, then its own update
    peak = n_gpus * hw.tflops * 1e12 * MFU
    old_logprob = trained * seq * flops_per_token / peak
    update = trained * seq * flops_per_token * passes / peak
    engines = max(1, n_gpus // config.rollout_tensor_parallel) if engine == "verl" else 1
    tp = config.rollout_tensor_parallel if engine == "verl" else 1
    per_engine = math.ceil(generated / engines)
    slots = max(1, min(per_engine, concurrent * (config.max_prompt_length + config.max_response_length) // seq)) \
        if engine == "verl" else min(per_engine, config.rollout_batch_size or per_engine)
    step_bytes = 2 * p / tp + slots * seq / 2 * shape.kv_bytes_per_token / tp  # weights + the KV cache read once
    decode_step = step_bytes / (hw.bandwidth_tbs * 1e12 * BANDWIDTH_USE)
    decode_steps = per_engine * mean_response / slots
    return [
        Line("sampling (decode, bandwidth-bound)", decode_steps * decode_step,
             f"{per_engine} seq/engine x {mean_response} tok / {slots} at once x {decode_step * 1e3:.1f} ms"
             + (" (KV cache at the mean length)" if engine == "verl" else "")),
        Line("old log-probs (one forward)", old_logprob,
             f"{trained} seq x {seq} tok x {flops_per_token / 1e9:.1f} GFLOP / ({n_gpus} x {hw.tflops:g} T x {MFU})"),
        Line(f"updates ({passes} forward-equivalents{', with the critic' if passes > 4 else ''})", update,
             f"old log-probs x {passes}"),
    ]


def plan(config, nodes: int = 1, gpus_per_node: int = 1, gpu_memory_gib: float = 80.0, *, engine: str | None = None,
         hardware: Hardware | None = None, mean_prompt: int = 200, mean_response: int | None = None,
         _search: bool = True) -> Plan:
    """The memory and time plan of `config` (a TrainConfig) on `nodes` x `gpus_per_node` GPUs.

    engine: "verl" or "fipo_nb" (one device); None picks "fipo_nb" for strategy "single", else "verl".
    mean_prompt / mean_response: token counts the step time assumes (default response: half the maximum).
    """
    config.validate()
    engine = _checked_engine(config, engine, nodes, gpus_per_node, gpu_memory_gib)
    hw = replace(hardware or Hardware(), gpu_memory_gib=gpu_memory_gib)
    shape = model_shape(config.model)
    n_gpus = nodes * gpus_per_node
    mean_response = mean_response or max(1, config.max_response_length // 2)
    budget = hw.gpu_memory_gib - HEADROOM_GIB
    if engine == "fipo_nb":
        memory = _single_device_memory(config, shape, n_gpus)
    else:
        memory = _verl_cluster_memory(config, shape, n_gpus, nodes, hw)
    problems = memory.problems + _over_budget(memory, budget, hw)
    time = _time(config, shape, n_gpus, hw, engine, memory.concurrent, mean_prompt, mean_response)
    notes = [f"model: {shape.describe()}", *memory.notes,
             f"step time at a mean prompt of {mean_prompt} and response of {mean_response} tokens, "
             f"{MFU:.0%} MFU of {hw.tflops:g} TFLOP/s, {BANDWIDTH_USE:.0%} of {hw.bandwidth_tbs:g} TB/s"]
    result = Plan(_title(config, engine, nodes, gpus_per_node, hw), engine, nodes, gpus_per_node, memory.training,
                  budget, memory.rollout, budget, memory.cpu, hw.cpu_memory_gib, time, notes, problems,
                  concurrent_sequences=memory.concurrent)
    if problems and _search and engine == "verl":
        result.smallest = _smallest_cluster(config, gpus_per_node, gpu_memory_gib, hardware=hardware,
                                            mean_prompt=mean_prompt, mean_response=mean_response)
    return result


def _checked_engine(config, engine: str | None, nodes, gpus_per_node, gpu_memory_gib) -> str:
    """The engine to plan for (the config's strategy picks it when None), once the cluster's figures are valid."""
    engine = engine or ("fipo_nb" if config.strategy == "single" else "verl")
    if engine not in ("verl", "fipo_nb"):
        raise ValueError(f"plan: engine must be 'verl' or 'fipo_nb'; got {engine!r}")
    for name, value in (("nodes", nodes), ("gpus_per_node", gpus_per_node)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"plan: {name} must be an integer >= 1; got {value!r}")
    if not gpu_memory_gib > HEADROOM_GIB:
        raise ValueError(f"plan: gpu_memory_gib must be more than the {HEADROOM_GIB:g} GiB kept free on every GPU; "
                         f"got {gpu_memory_gib!r}")
    return engine


def _title(config, engine: str, nodes: int, gpus_per_node: int, hw: Hardware) -> str:
    critic = ", PPO with a critic" if config.advantage_estimator == "gae" else ""
    return (f"{config.model} ({config.mode}, {config.fipo.loss}{critic})"
            f" on {nodes} node(s) x {gpus_per_node} GPU(s) of {hw.gpu_memory_gib:g} GiB, engine {engine}")


@dataclass
class _Memory:
    """One engine's memory lines, with what it notes and what it finds wrong before the budgets."""

    training: list[Line]
    rollout: list[Line]
    cpu: list[Line] = field(default_factory=list)
    concurrent: int = 0  # full-length sequences one rollout engine holds at once
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _single_device_memory(config, shape: ModelShape, n_gpus: int) -> _Memory:
    """fipo_nb's own trainer: one device that samples and trains in turn."""
    problems = []
    if n_gpus != 1:
        problems.append(f"fipo_nb's own trainer runs on one device; {n_gpus} GPUs need engine verl")
    if config.advantage_estimator == "gae":
        problems.append("advantage_estimator 'gae' needs a critic: engine verl")
    training, rollout = _single_memory(config, shape)
    notes = [f"one device: sampling (rollout_backend={config.rollout_backend}) and training share the GPU, one after "
             "the other"]
    return _Memory(training, rollout, notes=notes, problems=problems)


def _verl_cluster_memory(config, shape: ModelShape, n_gpus: int, nodes: int, hw: Hardware) -> _Memory:
    """verl: FSDP training and vLLM sampling on every GPU, with the split of each GPU between them."""
    problems = []
    if config.mode == "qlora":
        problems.append("mode 'qlora' (4-bit base) is not available in verl: use mode=lora or full")
    problems += _divisibility(config, n_gpus)
    training, rollout, cpu, concurrent, kv, resident = _verl_memory(config, shape, n_gpus, nodes, hw)
    dp = n_gpus // config.sequence_parallel if n_gpus % config.sequence_parallel == 0 else 0
    seq = config.max_prompt_length + config.max_response_length
    notes = [f"verl: FSDP over {n_gpus} GPUs, Ulysses {config.sequence_parallel} (data parallel {dp}), "
             f"vLLM tensor parallel {config.rollout_tensor_parallel} ({n_gpus // config.rollout_tensor_parallel} "
             f"engines), dynamic batch {config.micro_batch_size * seq} tokens per GPU, "
             f"offload {'on' if config.offload else 'off'}",
             f"vLLM KV cache: {shape.kv_bytes_per_token / 1024:.0f} KiB per token; {max(kv, 0):.1f} GiB x TP "
             f"{config.rollout_tensor_parallel} per engine holds {concurrent} sequences of {seq} tokens at once (more of "
             "the mean length: the step time's 'at once')"]
    if concurrent < 1:
        problems.append(f"vLLM's KV cache cannot hold one {seq}-token sequence: raise rollout_gpu_memory or "
                        "rollout_tensor_parallel")
    if resident > (1 - config.rollout_gpu_memory) * hw.gpu_memory_gib - HEADROOM_GIB:
        problems.append(f"{resident:.1f} GiB of training state stays on each GPU while sampling, more than the "
                        f"{1 - config.rollout_gpu_memory:.2f} share vLLM leaves: set offload=true or lower "
                        "rollout_gpu_memory")
    return _Memory(training, rollout, cpu, concurrent, notes, problems)


def _over_budget(memory: _Memory, budget: float, hw: Hardware) -> list[str]:
    """What does not fit: training or sampling over the per-GPU budget, offloaded states over a node's CPU memory."""
    problems = []
    training_total = sum(l.gib for l in memory.training)
    if training_total > budget:
        problems.append(f"training needs {training_total:.1f} GiB per GPU, over the {budget:.1f} GiB budget "
                        f"({hw.gpu_memory_gib:g} less {HEADROOM_GIB:g} headroom)")
    rollout_total = sum(l.gib for l in memory.rollout)
    if rollout_total > budget:
        problems.append(f"sampling needs {rollout_total:.1f} GiB per GPU, over the {budget:.1f} GiB budget")
    cpu_total = sum(l.gib for l in memory.cpu)
    if cpu_total > hw.cpu_memory_gib:
        problems.append(f"offloaded states need {cpu_total:.0f} GiB of CPU memory per node, over {hw.cpu_memory_gib:g}")
    return problems


def _smallest_cluster(config, gpus_per_node: int, gpu_memory_gib: float, **plan_args) -> tuple[int, int] | None:
    """(nodes, gpus_per_node) of the fewest nodes, up to 64, on which the verl plan fits; None if none does."""
    for more in range(1, 65):
        if plan(config, more, gpus_per_node, gpu_memory_gib, engine="verl", _search=False, **plan_args).fits:
            return more, gpus_per_node
    return None
