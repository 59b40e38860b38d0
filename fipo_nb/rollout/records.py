"""The Rollout record: N = prompts x G sampled responses as padded token ids and masks, grouped by prompt.

A record only (no model): the trainer's stages select, join and move its rows (`select`, `to`,
`concat_rollouts`); generate.py makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


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
