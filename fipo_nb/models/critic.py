"""PPO's value model (the critic) on the policy's own base model: a value head (hidden -> 1).

Initialised from the policy's weights and nothing else (no outside knowledge):

    lora / qlora   a second LoRA adapter ("critic") on the one frozen (4-bit) base already in memory, with
                   the policy's rank, alpha and target modules, plus the head: the critic costs an adapter,
                   its AdamW moments and a [H] head, not a second model. LoRA's B starts at 0, so the
                   critic's body starts as the base model exactly.
    full           a separate copy of the policy's model (weights, gradients and AdamW moments: about 4x
                   the model's parameters in float32, as PPO's critic costs everywhere).

The value of response token t is read from the hidden state that predicts it (position t-1), as verl's
critic reads `values[:, -response_length - 1 : -1]` and as the log-probs are taken; the head is float32,
initialised like transformers' token-classification head (normal, std = initializer_range; bias 0).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import Tensor, nn

from .logprobs import _body_and_head, _position_ids

__all__ = ["ADAPTER", "Critic"]

ADAPTER = "critic"


class Critic:
    """A value model beside `policy` (a models.Policy): `values(...)` per response token."""

    def __init__(self, policy, *, seed: int = 0):
        self.mode = policy.mode
        config = policy.model.config if hasattr(policy.model, "config") else None
        if self.mode in ("lora", "qlora"):
            self.model = policy.model  # the policy's PeftModel: one base, two adapters
            default = policy.model.active_adapter
            lora = copy.deepcopy(policy.model.peft_config[default])
            with torch.random.fork_rng(devices=[]):  # LoRA's A is drawn from the global generator: seeded
                torch.manual_seed(seed * 7_919 + 11)  # here, and the run's own random numbers stay as they were
                policy.model.add_adapter(ADAPTER, lora)
            self._policy_adapter = default
            body_params = [p for n, p in policy.model.named_parameters() if f".{ADAPTER}." in n]
            for param in body_params:  # at rest the critic's adapter is frozen: the policy's optimizer,
                param.requires_grad_(False)  # checkpoints and hashes see the policy's parameters only
        else:
            self.model = copy.deepcopy(policy.model)
            self._policy_adapter = None
            body_params = list(self.model.parameters())
        hidden = _hidden_size(config)
        generator = torch.Generator().manual_seed(seed * 7_919 + 17)
        self.head = nn.Linear(hidden, 1, dtype=torch.float32)
        with torch.no_grad():
            self.head.weight.normal_(0.0, float(getattr(config, "initializer_range", 0.02)), generator=generator)
            self.head.bias.zero_()
        self.head.to(policy.device)
        self._body_params = body_params

    def parameters(self) -> list[nn.Parameter]:
        """What the critic's optimizer trains: its adapter (or its whole copy) and the head."""
        return [*self._body_params, *self.head.parameters()]

    def named_state(self) -> dict[str, Tensor]:
        """The critic's trainable tensors by name, on the CPU (for checkpoints)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        state = {f"body.{names[id(p)]}": p.detach().cpu().contiguous() for p in self._body_params}
        state.update({f"head.{n}": p.detach().cpu().contiguous() for n, p in self.head.named_parameters()})
        return state

    def load_named_state(self, state: dict[str, Tensor]) -> None:
        """Copy a `named_state()` back in; a KeyError names what does not fit."""
        current = self.named_state()
        if set(current) != set(state):
            missing, extra = sorted(set(current) - set(state))[:3], sorted(set(state) - set(current))[:3]
            raise KeyError(f"the critic's state does not fit this critic (missing {missing}, unexpected {extra})")
        params = {f"body.{n}": p for n, p in self.model.named_parameters()}
        params.update({f"head.{n}": p for n, p in self.head.named_parameters()})
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device))

    @contextlib.contextmanager
    def active(self):
        """The shared model with the critic's adapter active (and trainable); the policy's adapter and
        every requires_grad flag are put back on exit. A copy (full mode) needs nothing."""
        if self._policy_adapter is None:
            yield
            return
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.set_adapter(ADAPTER)  # peft: the critic's adapter trainable, the policy's frozen
        try:
            yield
        finally:
            self.model.set_adapter(self._policy_adapter)
            for param, flag in flags:
                param.requires_grad_(flag)

    def values(self, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor) -> Tensor:
        """V(prefix before response token t) for every response position: [n, R] float32 on the model's
        device (grad as enabled; padding holds values of no meaning: mask them). Call inside `active()`."""
        device = self.head.weight.device
        input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(device)  # [n, P + R]
        attention = torch.cat([prompt_mask, response_mask], dim=1).long().to(device)  # [n, P + R]
        prompt_length, length = prompt_ids.shape[1], input_ids.shape[1]
        body, _ = _body_and_head(self.model)
        hidden = body(input_ids=input_ids, attention_mask=attention, position_ids=_position_ids(attention),
                      use_cache=False)[0]  # [n, L, H]
        scoring = hidden[:, prompt_length - 1: length - 1]  # [n, R, H] position t-1 values token t
        return self.head(scoring.float()).squeeze(-1)  # [n, R]


def _hidden_size(config) -> int:
    for key in ("hidden_size", "n_embd", "d_model"):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError("Critic: the model's config names no hidden size (hidden_size, n_embd or d_model)")
