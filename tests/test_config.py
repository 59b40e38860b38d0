"""fipo_nb.config: each setting declared once (`setting()`), and what is derived from the declarations:
validation in one style, the scope sections, and docs/settings.md."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fipo_nb.config import FIPOConfig, TrainConfig
from fipo_nb.config.fields import (
    BOTH, ONLY_SINGLE, ONLY_VERL, Keys, Rule, Unused, allowed, check_fields, described, setting,
)
from fipo_nb.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
ONLY_VERL_SETTINGS = ["strategy", "rollout_tensor_parallel", "rollout_gpu_memory", "sequence_parallel", "offload"]
ONLY_SINGLE_SETTINGS = ["logprob_chunk_size", "rollout_backend", "pack_sequences", "share_prompts", "reward_workers",
                        "reward_timeout"]


@pytest.mark.parametrize("cls", [TrainConfig, FIPOConfig])
def test_every_field_is_declared_with_a_doc_and_a_verl_mapping(cls):
    rows = described(cls)  # raises for a field declared without setting()
    assert [d.name for d in rows] == [f.name for f in dataclasses.fields(cls)]
    assert all(d.setting.doc.strip() and d.setting.verl is not None for d in rows)


def test_a_field_declared_without_setting_is_refused_by_name():
    @dataclasses.dataclass
    class Partial:
        declared: int = setting(1, "A declared field.", at_least=0, verl=Keys("a.b"))
        bare: int = 2

    with pytest.raises(TypeError, match="Partial.bare is declared without setting"):
        described(Partial)


@pytest.mark.parametrize("kwargs, message", [
    (dict(doc=""), "needs its doc"),
    (dict(verl="actor.lr"), "verl must be one of Keys, Rule"),
    (dict(scope="cluster"), "scope must be one of both, verl, single"),
    (dict(scope=ONLY_SINGLE), "has verl=Unused"),  # a setting verl never sees must say why
])
def test_setting_refuses_an_incomplete_declaration(kwargs, message):
    declaration = dict(default=1, doc="A setting.", verl=Keys("a.b")) | kwargs
    with pytest.raises(ValueError, match=message):
        setting(**declaration)


@pytest.mark.parametrize("cls, name, value, message", [
    (TrainConfig, "lora_r", 0, "TrainConfig.lora_r must be an integer >= 1; got 0"),
    (TrainConfig, "lora_r", 8.0, "TrainConfig.lora_r must be an integer >= 1; got 8.0"),
    (TrainConfig, "data_limit", 0, "TrainConfig.data_limit must be an integer >= 1 or None; got 0"),
    (TrainConfig, "save_every", -2, "TrainConfig.save_every must be an integer >= -1; got -2"),
    (TrainConfig, "lr", 0.0, "TrainConfig.lr must be a finite number > 0; got 0.0"),
    (TrainConfig, "lr", float("nan"), "TrainConfig.lr must be a finite number > 0; got nan"),
    (TrainConfig, "top_p", 1.5, r"TrainConfig.top_p must be a finite number in \(0, 1\]; got 1.5"),
    (TrainConfig, "gae_lambda", -0.1, r"TrainConfig.gae_lambda must be a finite number in \[0, 1\]; got -0.1"),
    (TrainConfig, "overlong_penalty", float("inf"), "TrainConfig.overlong_penalty must be a finite number; got inf"),
    (TrainConfig, "mode", "qdora", "TrainConfig.mode must be one of qlora, lora, full; got 'qdora'"),
    (TrainConfig, "offload", 1, "TrainConfig.offload must be True or False; got 1"),
    (TrainConfig, "model", None, "TrainConfig.model must be a string; got None"),
    (TrainConfig, "eval_data", 3, "TrainConfig.eval_data must be a string or None; got 3"),
    (FIPOConfig, "weight_clip", 1.0, r"FIPOConfig.weight_clip must be a finite number in \[0, 1\) or None; got 1.0"),
    (FIPOConfig, "drop_dual_clipped_sequences", 1,
     "FIPOConfig.drop_dual_clipped_sequences must be True, False or None; got 1"),
])
def test_a_bad_value_is_refused_naming_the_field_and_what_it_allows(cls, name, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        dataclasses.replace(cls(), **{name: value}).validate()


def _edges(d):
    """(allowed, refused) values at each declared bound of a number field."""
    step = 1 if d.kind is int else 1e-9
    s = d.setting
    pairs = []
    if s.at_least is not None:
        pairs.append((s.at_least, s.at_least - step))
    if s.above is not None:
        pairs.append((s.above + step, s.above))
    if s.at_most is not None:
        pairs.append((s.at_most, s.at_most + step))
    if s.below is not None:
        pairs.append((s.below - step, s.below))
    return [(d.kind(a), d.kind(r)) for a, r in pairs]


@pytest.mark.parametrize("cls", [TrainConfig, FIPOConfig])
def test_every_declared_bound_holds_exactly_at_its_edge(cls):
    checked = 0
    for d in described(cls):
        for inside, outside in _edges(d):
            check_fields(dataclasses.replace(cls(), **{d.name: inside}))
            with pytest.raises(ValueError, match=re.escape(f"{cls.__name__}.{d.name} must be {allowed(d)}; got")):
                check_fields(dataclasses.replace(cls(), **{d.name: outside}))
            checked += 1
    assert checked >= (20 if cls is TrainConfig else 5)


@pytest.mark.parametrize("config, message", [
    (TrainConfig(prompts_per_step=8, mini_batch_size=3),
     r"^TrainConfig.mini_batch_size must divide prompts_per_step \(8\); got 3$"),
    (TrainConfig(max_response_length=64, overlong_buffer=65),
     r"^TrainConfig.overlong_buffer must not exceed max_response_length \(64\); got 65$"),
    (TrainConfig(instruction="Solve it."),
     r"^TrainConfig.instruction must be 'dapo', 'none' or a template containing \{problem\}; got 'Solve it.'$"),
    (TrainConfig(fipo=FIPOConfig(clip_high=0.28, dual_clip=1.2)),
     r"^FIPOConfig.dual_clip must exceed 1 \+ clip_high = 1.28 \(or be None\); got 1.2$"),
])
def test_cross_field_checks_speak_the_same_style(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_settings_only_verl_runs_and_only_the_own_trainer_runs_are_their_own_sections_at_the_end():
    rows = described(TrainConfig)
    scopes = [d.setting.scope for d in rows]
    assert [d.name for d in rows if d.setting.scope == ONLY_VERL] == ONLY_VERL_SETTINGS
    assert [d.name for d in rows if d.setting.scope == ONLY_SINGLE] == ONLY_SINGLE_SETTINGS
    shared = len(rows) - len(ONLY_VERL_SETTINGS) - len(ONLY_SINGLE_SETTINGS)
    assert scopes == [BOTH] * shared + [ONLY_VERL] * len(ONLY_VERL_SETTINGS) + [ONLY_SINGLE] * len(ONLY_SINGLE_SETTINGS)
    assert all(isinstance(d.setting.verl, Unused) for d in rows if d.setting.scope == ONLY_SINGLE)
    assert all(d.setting.scope == BOTH for d in described(FIPOConfig))


def test_a_verl_only_setting_is_mapped_for_verl():
    assert all(isinstance(d.setting.verl, (Keys, Rule)) for d in described(TrainConfig) if d.setting.scope == ONLY_VERL)


def test_a_config_json_of_the_previous_layout_loads_to_the_same_config(tmp_path):
    """Checkpoints written before the scope sections moved (fields in the old order, fipo as a dict) resume."""
    config = get_preset("demo")
    old_order = ["model", "mode", "lora_r", "lora_alpha", "lora_target_modules", "dtype", "device",
                 "gradient_checkpointing", "strategy", "data", "data_limit", "instruction"]  # strategy sat here
    saved = config.to_dict()
    written = {k: saved[k] for k in old_order} | {k: v for k, v in saved.items() if k not in old_order}
    (tmp_path / "config.json").write_text(json.dumps(written, indent=2))
    loaded = TrainConfig(**json.loads((tmp_path / "config.json").read_text())).validate()
    assert loaded == config and isinstance(loaded.fipo, FIPOConfig)


def test_docs_settings_md_is_generated_from_the_declarations_and_current():
    done = subprocess.run([sys.executable, "-m", "fipo_nb.settings_doc", "--check"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr  # stale: run `python -m fipo_nb.settings_doc`
    text = (ROOT / "docs" / "settings.md").read_text()
    for d in described(TrainConfig):
        assert f"| `{d.name}` | {d.type_name} |" in text
    for d in described(FIPOConfig):
        assert f"| `fipo.{d.name}` | {d.type_name} |" in text


def test_a_stale_settings_page_is_caught(tmp_path):
    stale = tmp_path / "settings.md"
    stale.write_text((ROOT / "docs" / "settings.md").read_text().replace("LoRA rank.", "LoRA rank (old text)."))
    done = subprocess.run([sys.executable, "-m", "fipo_nb.settings_doc", "--check", "--out", str(stale)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "is stale" in done.stderr
