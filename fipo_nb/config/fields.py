"""One place per setting: `setting()` declares, on the dataclass field itself, its default, its doc,
the values it allows, where it runs (its scope) and how `fipo-nb launch verl` carries it.

    lora_r: int = setting(16, "LoRA rank.", at_least=1, verl=Rule("lora"))

The field's type is its annotation. Everything else is derived from these declarations:
`check_fields` (validation, one message style: "TrainConfig.lora_r must be an integer >= 1; got 0"),
the verl table (integrations/verl/fields.py reads `verl`), verl's loss config (from FIPOConfig's
`Actor` / `PolicyLoss` fields) and docs/settings.md (`python -m fipo_nb.settings_doc`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import MISSING, dataclass

# where a setting has an effect
BOTH = "both"
ONLY_VERL = "verl"  # `fipo-nb launch verl` only; fipo_nb's own trainer refuses or ignores it
ONLY_SINGLE = "single"  # fipo_nb's own single-device trainer only; verl has no such knob
SCOPES = {BOTH: "every run", ONLY_VERL: "verl runs only", ONLY_SINGLE: "fipo_nb's own trainer only"}


# ------------------------------------------------------------ how `fipo-nb launch verl` carries a field


@dataclass(frozen=True, init=False)
class Keys:
    """The field's value, as it is, under each of these Hydra keys; `critic` keys too when a critic
    runs (advantage_estimator="gae")."""

    keys: tuple[str, ...]
    critic: tuple[str, ...]

    def __init__(self, *keys: str, critic: tuple[str, ...] | str = ()):
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "critic", (critic,) if isinstance(critic, str) else tuple(critic))


@dataclass(frozen=True)
class Rule:
    """The value needs logic (a translation, a refusal, several keys): the rule of this name in
    integrations/verl/fields.py maps it (config/ does not import integrations)."""

    name: str


@dataclass(frozen=True)
class MappedBy:
    """Read by another field's rule (data_limit by data's): nothing of its own. `also`: further fields whose
    rules read it (eval_holdout: eval_data's writes the held-out rows, data's leaves them out of training)."""

    field: str
    also: tuple[str, ...] = ()

    @property
    def readers(self) -> tuple[str, ...]:
        return (self.field, *self.also)


@dataclass(frozen=True)
class Unused:
    """No meaning under verl; why (launch.sh lists it)."""

    why: str


@dataclass(frozen=True)
class Actor:
    """FIPOConfig: verl's actor setting `key` (actor_rollout_ref.actor.<key>) carries the value, so
    verl's own losses read the same number; `flag` names a bool of verl's policy-loss config that
    says whether the value is in use (None: False)."""

    key: str
    flag: str | None = None


@dataclass(frozen=True)
class PolicyLoss:
    """FIPOConfig: a field of verl's policy-loss config (FIPOPolicyLossConfig) with this field's type,
    default and doc, named `name` (default: the same name)."""

    name: str | None = None


VERL_MAPPINGS = (Keys, Rule, MappedBy, Unused, Actor, PolicyLoss)


# ------------------------------------------------------------ the declaration


@dataclass(frozen=True)
class Setting:
    """What `setting()` stores in a field's metadata."""

    doc: str
    verl: Keys | Rule | MappedBy | Unused | Actor | PolicyLoss
    scope: str = BOTH
    choices: tuple | None = None
    at_least: float | None = None  # value >= at_least
    above: float | None = None  # value > above
    at_most: float | None = None  # value <= at_most
    below: float | None = None  # value < below


def setting(default=MISSING, doc: str = "", *, factory=MISSING, verl, scope: str = BOTH, choices=None,
            at_least=None, above=None, at_most=None, below=None):
    """A dataclass field with its doc, allowed values, scope and verl mapping in its metadata.

    choices: the allowed values; at_least / above / at_most / below: bounds for numbers;
    scope: BOTH, ONLY_VERL or ONLY_SINGLE; verl: Keys, Rule, MappedBy, Unused (or, for FIPOConfig,
    Actor / PolicyLoss). None is allowed when the annotation says `| None`.
    """
    if not doc:
        raise ValueError("a setting needs its doc")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    if not isinstance(verl, VERL_MAPPINGS):
        raise ValueError(f"verl must be one of {', '.join(m.__name__ for m in VERL_MAPPINGS)}; got {verl!r}")
    if scope == ONLY_SINGLE and not isinstance(verl, Unused):
        raise ValueError("a setting only fipo_nb's own trainer runs has verl=Unused(why)")
    meta = Setting(doc, verl, scope, tuple(choices) if choices is not None else None, at_least, above, at_most, below)
    return dataclasses.field(default=default, default_factory=factory, metadata={"setting": meta})


@dataclass(frozen=True)
class Described:
    """One declared field, as the derivations read it."""

    name: str
    kind: type  # int, float, bool, str or a dataclass (FIPOConfig)
    optional: bool  # None allowed
    default: object  # the default value (a factory's product for a nested config)
    setting: Setting

    @property
    def type_name(self) -> str:
        return self.kind.__name__ + (" or None" if self.optional else "")


@functools.cache
def described(cls) -> tuple[Described, ...]:
    """The fields of a settings dataclass in declaration order; a field without `setting()` is an error."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is declared without setting(): its doc, allowed values, "
                            "scope and verl mapping belong on the field")
        options = typing.get_args(hints[f.name]) or (hints[f.name],)  # int | None -> (int, NoneType)
        kinds = [k for k in options if k is not type(None)]
        optional = len(kinds) < len(options)
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append(Described(f.name, kinds[0], optional, default, meta))
    return tuple(out)


def optional_type(kind: type, optional: bool):
    """`kind`, or typing.Optional[kind]: the spelling OmegaConf (verl's configs) understands."""
    return typing.Optional[kind] if optional else kind


# ------------------------------------------------------------ validation, derived


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(s: Setting) -> str:
    low = ("[", s.at_least) if s.at_least is not None else ("(", s.above) if s.above is not None else None
    high = ("]", s.at_most) if s.at_most is not None else (")", s.below) if s.below is not None else None
    if low and high:
        return f" in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f" {'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def allowed(d: Described) -> str:
    """What a field allows, in words: "an integer >= 1 or None", "one of fipo, dapo, grpo", ..."""
    s = d.setting
    if s.choices is not None:
        text = "one of " + ", ".join(str(c) for c in s.choices)
    elif d.kind is bool:
        return "True, False or None" if d.optional else "True or False"
    elif d.kind is int:
        text = "an integer" + _bounds(s)
    elif d.kind is float:
        text = "a finite number" + _bounds(s)
    elif d.kind is str:
        text = "a string"
    else:
        text = f"a {d.kind.__name__}"
    return text + (" or None" if d.optional else "")


def _fits(d: Described, value) -> bool:
    s = d.setting
    if value is None:
        return d.optional
    if s.choices is not None:
        return value in s.choices
    if d.kind is bool:
        return isinstance(value, bool)
    if d.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif d.kind is float:
        ok = _number(value)
    else:
        return isinstance(value, d.kind)
    return ok and (s.at_least is None or value >= s.at_least) and (s.above is None or value > s.above) and \
        (s.at_most is None or value <= s.at_most) and (s.below is None or value < s.below)


def invalid(config, name: str, rule: str) -> ValueError:
    """The one validation message: "TrainConfig.NAME must RULE; got VALUE"."""
    return ValueError(f"{type(config).__name__}.{name} must {rule}; got {getattr(config, name)!r}")


def check_fields(config) -> None:
    """Raise `invalid(...)` for the first field (in declaration order) outside what it declares."""
    for d in described(type(config)):
        if not _fits(d, getattr(config, d.name)):
            raise invalid(config, d.name, "be " + allowed(d))
