"""fipo_nb.presets: named setups and --set overrides, with errors that list what is valid."""

from __future__ import annotations

import pytest

from fipo_nb.presets import PRESETS, apply_overrides, get_preset, valid_keys

REQUIRED = {"cpu-smoke", "demo", "qlora-qwen2.5-0.5b", "qlora-qwen2.5-1.5b", "qlora-qwen2.5-7b", "paper-fipo-32b",
            "paper-dapo-32b"}


def test_every_required_preset_exists_and_validates():
    assert REQUIRED <= set(PRESETS)
    for name in PRESETS:
        get_preset(name).validate()


def test_paper_presets_carry_the_official_numbers():
    fipo, dapo = get_preset("paper-fipo-32b"), get_preset("paper-dapo-32b")
    assert (fipo.prompts_per_step, fipo.samples_per_prompt, fipo.mini_batch_size) == (512, 16, 64)
    assert fipo.prompts_per_step // fipo.mini_batch_size == 8  # 8 updates per rollout
    assert dapo.prompts_per_step // dapo.mini_batch_size == 16
    assert (fipo.lr, fipo.lr_warmup_steps, fipo.weight_decay, fipo.grad_clip) == (1e-6, 10, 0.1, 1.0)
    assert (fipo.max_prompt_length, fipo.max_response_length) == (2048, 20480)
    assert (fipo.fipo.decay_rate, fipo.fipo.weight_clip, fipo.fipo.safety_threshold) == (32.0, 0.2, 10.0)
    assert dapo.fipo.loss == "dapo" and dapo.fipo.drop_dual_clipped_sequences is False
    assert fipo.answer_mode == dapo.answer_mode == "dapo"  # the official scorer, for every problem
    assert (fipo.reward_correct, fipo.reward_incorrect) == (1.0, -1.0)


def test_overrides_parse_by_field_type():
    config = apply_overrides(get_preset("cpu-smoke"), [
        "lr=3e-4", "steps=7", "gradient_checkpointing=true", "data_limit=none", "fipo.decay_rate=64",
        "weight_clip_high_only=false", "fipo.safety_threshold=3", "data=champ",
    ])
    assert (config.lr, config.steps, config.gradient_checkpointing, config.data_limit) == (3e-4, 7, True, None)
    assert (config.fipo.decay_rate, config.fipo.weight_clip_high_only, config.fipo.safety_threshold) == (64.0, False, 3.0)
    assert config.data == "champ"


def test_switching_the_loss_resets_the_drop_rule_unless_set():
    assert apply_overrides(get_preset("cpu-smoke"), ["fipo.loss=dapo"]).fipo.drop_dual_clipped_sequences is False
    explicit = apply_overrides(get_preset("cpu-smoke"), ["fipo.loss=dapo", "fipo.drop_dual_clipped_sequences=true"])
    assert explicit.fipo.drop_dual_clipped_sequences is True


def test_unknown_preset_and_key_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid presets: cpu-smoke, demo"):
        get_preset("cpu-smok")
    with pytest.raises(ValueError, match="valid keys: .*micro_batch_size.*fipo.decay_rate"):
        apply_overrides(get_preset("cpu-smoke"), ["micro_batch=4"])
    assert "fipo.clip_high" in valid_keys()


def test_bad_values_name_the_key():
    with pytest.raises(ValueError, match="steps=many: expected int"):
        apply_overrides(get_preset("cpu-smoke"), ["steps=many"])
    with pytest.raises(ValueError, match="mini_batch_size"):
        apply_overrides(get_preset("cpu-smoke"), ["mini_batch_size=3"])  # must divide prompts_per_step
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(get_preset("cpu-smoke"), ["lr"])
    with pytest.raises(ValueError, match="TrainConfig.answer_mode must be one of auto, dapo, answer_line"):
        apply_overrides(get_preset("cpu-smoke"), ["answer_mode=answer"])
    with pytest.raises(ValueError, match="TrainConfig.reward_errors must be one of raise, incorrect; got 'skip'"):
        apply_overrides(get_preset("cpu-smoke"), ["reward_errors=skip"])
    assert apply_overrides(get_preset("cpu-smoke"), ["reward_errors=incorrect"]).reward_errors == "incorrect"
