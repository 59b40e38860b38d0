"""Rollouts: G sampled responses per prompt, as token ids with masks and finish reasons.

Two backends sample the same tokens for a seed: fipo_nb's decode loop ("compact", compact.py:
finished rows leave the batch, each prompt is prefilled once) and transformers' `generate`.
Prompts are chat-formatted, truncated on the left to `max_prompt_length` (as the official
DAPO/FIPO recipe does, counted and reported), and left-padded; responses are right-padded and masked up to and including their end-of-sequence
token. The model stays in train() mode (see models.py); gradient checkpointing, which would
switch the KV cache off, is paused while sampling.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields

import torch

from ..config import ROLLOUT_BACKENDS
from ..models import is_activation_checkpointing, set_activation_checkpointing
from .compact import decode_chunk

BACKENDS = ROLLOUT_BACKENDS


@dataclass
class Rollout:
    """One rollout of N = prompts x G samples, grouped: rows g*G .. g*G+G-1 share prompt g."""

    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P] bool
    response_ids: torch.Tensor  # [N, R] right-padded
    response_mask: torch.Tensor  # [N, R] bool, up to and including the end-of-sequence token
    finish_reasons: list[str]  # per row: "stop" (ended itself) or "length" (hit max_new_tokens)
    group_size: int  # G
    prompts_truncated: int = 0  # prompts (not rows) cut on the left to fit max_prompt_length
    prompt_texts: list[str] = field(default_factory=list)  # per row: the chat-formatted prompt, before truncation

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)  # [N]

    def select(self, rows) -> "Rollout":
        """The rows `rows` (a list or range), trimmed to their own longest prompt and response."""
        rows = list(rows)
        index = torch.tensor(rows, dtype=torch.long)
        prompt_mask = self.prompt_mask[index]  # [n, P]
        response_mask = self.response_mask[index]  # [n, R]
        p_keep = max(int(prompt_mask.sum(dim=1).max()), 1)
        r_keep = max(int(response_mask.sum(dim=1).max()), 1)
        return Rollout(
            prompt_ids=self.prompt_ids[index, -p_keep:],
            prompt_mask=prompt_mask[:, -p_keep:],
            response_ids=self.response_ids[index, :r_keep],
            response_mask=response_mask[:, :r_keep],
            finish_reasons=[self.finish_reasons[i] for i in rows],
            group_size=self.group_size,
            prompts_truncated=0,
            prompt_texts=[self.prompt_texts[i] for i in rows] if self.prompt_texts else [],
        )

    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)  # [N, P + R]

    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1).long()  # [N, P + R]

    def to(self, device) -> "Rollout":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[key] = value.to(device)
        return Rollout(**moved)


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Rows of several rollouts in one (prompts re-padded on the left, responses on the right)."""
    if len(parts) == 1:
        return parts[0]
    prompt_width = max(p.prompt_length for p in parts)
    response_width = max(p.response_ids.shape[1] for p in parts)

    def pad(tensor, width, value, left):
        extra = width - tensor.shape[1]
        return torch.nn.functional.pad(tensor, (extra, 0) if left else (0, extra), value=value)

    return Rollout(
        prompt_ids=torch.cat([pad(p.prompt_ids, prompt_width, pad_id, True) for p in parts]),
        prompt_mask=torch.cat([pad(p.prompt_mask, prompt_width, False, True) for p in parts]),
        response_ids=torch.cat([pad(p.response_ids, response_width, pad_id, False) for p in parts]),
        response_mask=torch.cat([pad(p.response_mask, response_width, False, False) for p in parts]),
        finish_reasons=[r for p in parts for r in p.finish_reasons],
        group_size=parts[0].group_size,
        prompts_truncated=sum(p.prompts_truncated for p in parts),
        prompt_texts=[t for p in parts for t in p.prompt_texts],
    )


def format_prompt(tokenizer, prompt) -> str:
    """Chat messages -> text with the generation prompt; a plain string is used as it is."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts, max_prompt_length: int) -> tuple[list[list[int]], int, list[str]]:
    """Token ids per prompt, keeping the last `max_prompt_length` tokens; how many were cut; the
    formatted texts."""
    encoded, truncated, texts = [], 0, []
    for prompt in prompts:
        text = format_prompt(tokenizer, prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_prompt_length:
            ids = ids[-max_prompt_length:]  # left truncation keeps the question's end and the assistant tag
            truncated += 1
        encoded.append(ids)
        texts.append(text)
    return encoded, truncated, texts


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Each row's response text, special tokens (the stop token) left out."""
    return [tokenizer.decode(ids[mask], skip_special_tokens=True)
            for ids, mask in zip(rollout.response_ids, rollout.response_mask)]


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's eos and the model's generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


# Every logits processor generate() knows, at its neutral value. transformers fills each field a
# GenerationConfig leaves unset (or at the library default) from the model's own generation_config
# (Qwen2.5-Instruct ships repetition_penalty=1.05, top_k=20, top_p=0.8): sampling would then come from
# a distribution that the log-prob pass never scores, an uncorrected off-policy bias.
NEUTRAL_SAMPLING = dict(
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0, min_length=0, min_new_tokens=None, bad_words_ids=None, suppress_tokens=None,
    begin_suppress_tokens=None, sequence_bias=None, forced_bos_token_id=None, forced_eos_token_id=None,
    typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, min_p=None, top_h=None, exponential_decay_length_penalty=None,
    renormalize_logits=False, guidance_scale=None, watermarking_config=None, num_beams=1, num_beam_groups=1,
    num_return_sequences=1, penalty_alpha=None, dola_layers=None, prompt_lookup_num_tokens=None,
    output_scores=False, output_logits=False, return_dict_in_generate=False,
)


def sampling_config(*, temperature: float, top_p: float, top_k: int, max_new_tokens: int, stop_ids: list[int],
                    pad_id: int):
    """A GenerationConfig that says everything: only these settings shape the sampled distribution."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()  # fields of this transformers version (some above are newer or older)
    neutral = {key: value for key, value in NEUTRAL_SAMPLING.items() if key in known}
    return GenerationConfig(
        **neutral, do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p if temperature > 0 else 1.0, top_k=top_k if temperature > 0 else 0,
        max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=pad_id, use_cache=True,
    )


@contextlib.contextmanager
def model_defaults_off(model):
    """Swap each wrapped transformers model's own generation_config for the library's defaults
    while sampling, so that nothing of it (repetition penalty, top_k, suppressed words, ...) can
    be merged into the config generate() is given; restored afterwards."""
    from transformers import GenerationConfig

    swapped = [m for m in model.modules() if isinstance(m.__dict__.get("generation_config"), GenerationConfig)]
    saved = [m.generation_config for m in swapped]
    for module in swapped:
        module.generation_config = GenerationConfig()
    try:
        yield
    finally:
        for module, config in zip(swapped, saved):
            module.generation_config = config


@contextlib.contextmanager
def sampling_mode(model):
    """No grad, and gradient checkpointing paused (it turns the KV cache off in train mode)."""
    checkpointing = is_activation_checkpointing(model)
    if checkpointing:
        set_activation_checkpointing(model, False)
    try:
        with torch.no_grad():
            yield
    finally:
        if checkpointing:
            set_activation_checkpointing(model, True)


def _left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = True
    return ids, mask


def generate(
    model,
    tokenizer,
    prompts,
    *,
    n: int,
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int | None = None,
    backend: str = "compact",
) -> Rollout:
    """Sample `n` responses for each prompt (chat messages or text). temperature 0 = greedy.

    backend: "compact" (fipo_nb's decode loop, compact.py: finished rows leave the batch, each
    prompt is prefilled once) or "generate" (transformers' generate: every row until the last one
    ends). Both sample the same distribution with the same random numbers (see compact.py).
    batch_size: rows per chunk (None: all at once); both backends chunk alike.

    Only the arguments shape the distribution: the model's own generation_config (repetition
    penalty, top_k, ...) is switched off while sampling (`model_defaults_off`), so with top_p = 1
    and top_k = 0 the samples come from exactly the distribution the log-prob pass scores at this
    temperature. top_p < 1 or top_k > 0 sample from a truncated distribution that the loss does
    not model (as in verl, whose validation uses top_p 0.7; its training samples at top_p 1).
    """
    if not prompts:
        raise ValueError("generate: no prompts")
    if max_new_tokens < 1 or n < 1:
        raise ValueError(f"generate: n and max_new_tokens must be >= 1; got {n}, {max_new_tokens}")
    if backend not in BACKENDS:
        raise ValueError(f"generate: backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    encoded, truncated, texts = encode_prompts(tokenizer, prompts, max_prompt_length)
    if any(not ids for ids in encoded):
        raise ValueError(f"generate: prompt {next(i for i, ids in enumerate(encoded) if not ids)} is empty")
    pad_id = pad_token_id(tokenizer)
    stop_ids = eos_token_ids(model, tokenizer)
    prompt_ids, prompt_mask = _left_pad([ids for ids in encoded for _ in range(n)], pad_id)  # [N, P]
    sampling = sampling_config(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                               stop_ids=stop_ids, pad_id=pad_id)
    device = next(model.parameters()).device
    rows = prompt_ids.shape[0]
    step = batch_size or rows
    pieces = []
    with sampling_mode(model), model_defaults_off(model):
        for start in range(0, rows, step):
            part = slice(start, start + step)
            ids, mask = prompt_ids[part].to(device), prompt_mask[part].to(device)  # [n, P]
            if backend == "compact":
                pieces.append(decode_chunk(model, ids, mask, sampling, stop_ids=stop_ids, pad_id=pad_id).cpu())
            else:
                out = model.generate(input_ids=ids, attention_mask=mask.long(), generation_config=sampling)
                pieces.append(out[:, prompt_ids.shape[1]:].cpu())  # [n, R_part]
    width = max(p.shape[1] for p in pieces)
    response_ids = torch.full((rows, width), pad_id, dtype=torch.long)  # [N, R]
    generated = torch.zeros(rows, dtype=torch.long)  # [N] tokens each row's generate call produced
    offset = 0
    for piece in pieces:
        response_ids[offset:offset + piece.shape[0], : piece.shape[1]] = piece
        generated[offset:offset + piece.shape[0]] = piece.shape[1]
        offset += piece.shape[0]
    produced = torch.arange(width)[None, :] < generated[:, None]  # [N, R] not padding between pieces
    is_stop = torch.isin(response_ids, torch.tensor(stop_ids)) & produced  # [N, R]
    stopped = is_stop.any(dim=1)  # [N]
    lengths = torch.where(stopped, is_stop.int().argmax(dim=1) + 1, generated)  # [N], the stop token included
    response_mask = torch.arange(width)[None, :] < lengths[:, None]  # [N, R]
    response_ids = torch.where(response_mask, response_ids, torch.full_like(response_ids, pad_id))
    return Rollout(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids, response_mask=response_mask,
        finish_reasons=["stop" if s else "length" for s in stopped.tolist()], group_size=n,
        prompts_truncated=truncated, prompt_texts=[t for t in texts for _ in range(n)],
    )
