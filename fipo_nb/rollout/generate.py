"""Rollouts: G sampled responses per prompt, as token ids with masks and finish reasons.

Two backends sample the same tokens for a seed: fipo_nb's decode loop ("compact", compact.py:
finished rows leave the batch, each prompt is prefilled once) and transformers' `generate`.
Prompts are chat-formatted, truncated on the left to `max_prompt_length` (as the official
DAPO/FIPO recipe does, counted and reported), and left-padded; responses are right-padded and
masked up to and including their end-of-sequence token. The model stays in train() mode (see
models/loading.py); gradient checkpointing, which would switch the KV cache off, is paused while
sampling (sampling.py).
"""

from __future__ import annotations

import torch

from ..config import ROLLOUT_BACKENDS
from .compact import decode_chunk
from .records import Rollout
from .sampling import model_defaults_off, sampling_config, sampling_mode

BACKENDS = ROLLOUT_BACKENDS


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
    _check_arguments(prompts, n=n, max_new_tokens=max_new_tokens, backend=backend)
    encoded, truncated, texts = encode_prompts(tokenizer, prompts, max_prompt_length)
    if any(not ids for ids in encoded):
        raise ValueError(f"generate: prompt {next(i for i, ids in enumerate(encoded) if not ids)} is empty")
    pad_id = pad_token_id(tokenizer)
    stop_ids = eos_token_ids(model, tokenizer)
    prompt_ids, prompt_mask = _left_pad([ids for ids in encoded for _ in range(n)], pad_id)  # [N, P]
    sampling = sampling_config(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                               stop_ids=stop_ids, pad_id=pad_id)
    with sampling_mode(model), model_defaults_off(model):
        pieces = _sampled_chunks(model, prompt_ids, prompt_mask, sampling, backend=backend, batch_size=batch_size,
                                 stop_ids=stop_ids, pad_id=pad_id)
    response_ids, generated = _joined(pieces, pad_id)  # [N, R], [N]
    response_ids, response_mask, stopped = _cut_at_stop(response_ids, generated, stop_ids, pad_id)
    return Rollout(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids, response_mask=response_mask,
        finish_reasons=["stop" if s else "length" for s in stopped.tolist()], group_size=n,
        prompts_truncated=truncated, prompt_texts=[t for t in texts for _ in range(n)],
    )


def _check_arguments(prompts, *, n: int, max_new_tokens: int, backend: str) -> None:
    if not prompts:
        raise ValueError("generate: no prompts")
    if max_new_tokens < 1 or n < 1:
        raise ValueError(f"generate: n and max_new_tokens must be >= 1; got {n}, {max_new_tokens}")
    if backend not in BACKENDS:
        raise ValueError(f"generate: backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def _sampled_chunks(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling, *, backend: str,
                    batch_size: int | None, stop_ids: list[int], pad_id: int) -> list[torch.Tensor]:
    """Each chunk of `batch_size` rows sampled by `backend`: its response columns, on the CPU ([n, R_chunk])."""
    device = next(model.parameters()).device
    rows = prompt_ids.shape[0]
    step = batch_size or rows
    pieces = []
    for start in range(0, rows, step):
        part = slice(start, start + step)
        ids, mask = prompt_ids[part].to(device), prompt_mask[part].to(device)  # [n, P]
        if backend == "compact":
            pieces.append(decode_chunk(model, ids, mask, sampling, stop_ids=stop_ids, pad_id=pad_id).cpu())
        else:
            out = model.generate(input_ids=ids, attention_mask=mask.long(), generation_config=sampling)
            pieces.append(out[:, prompt_ids.shape[1]:].cpu())  # [n, R_part]
    return pieces


def _joined(pieces: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunks' responses in one [N, R] tensor, right-padded to the longest chunk, and how many
    tokens each row's chunk produced ([N]: its own width, which the padding between chunks is not)."""
    rows = sum(p.shape[0] for p in pieces)
    width = max(p.shape[1] for p in pieces)
    response_ids = torch.full((rows, width), pad_id, dtype=torch.long)  # [N, R]
    generated = torch.zeros(rows, dtype=torch.long)  # [N] tokens each row's generate call produced
    offset = 0
    for piece in pieces:
        response_ids[offset:offset + piece.shape[0], : piece.shape[1]] = piece
        generated[offset:offset + piece.shape[0]] = piece.shape[1]
        offset += piece.shape[0]
    return response_ids, generated


def _cut_at_stop(response_ids: torch.Tensor, generated: torch.Tensor, stop_ids: list[int],
                 pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row up to and including its first stop token (or all it produced): the ids padded after
    it ([N, R]), the mask ([N, R] bool) and whether the row stopped itself ([N] bool)."""
    width = response_ids.shape[1]
    produced = torch.arange(width)[None, :] < generated[:, None]  # [N, R] not padding between pieces
    is_stop = torch.isin(response_ids, torch.tensor(stop_ids)) & produced  # [N, R]
    stopped = is_stop.any(dim=1)  # [N]
    lengths = torch.where(stopped, is_stop.int().argmax(dim=1) + 1, generated)  # [N], the stop token included
    response_mask = torch.arange(width)[None, :] < lengths[:, None]  # [N, R]
    response_ids = torch.where(response_mask, response_ids, torch.full_like(response_ids, pad_id))
    return response_ids, response_mask, stopped
