"""`fipo-nb launch verl`: every TrainConfig field maps to verl overrides or is refused by name (no verl needed;
tests/integrations/verl composes the same launches with verl's own config)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest

from fipo_nb.config import FIPOConfig, TrainConfig
from fipo_nb.config.fields import Actor, Keys, MappedBy, PolicyLoss, Rule, Unused, described
from fipo_nb.integrations import verl as verl_launch
from fipo_nb.integrations.verl import FIELDS, LaunchError, launch
from fipo_nb.integrations.verl.fields import RULES, fipo_from_verl, loss_fields, policy_loss_fields
from fipo_nb.presets import apply_overrides, get_preset


def overrides(job) -> dict[str, str]:
    pairs = [o.split("=", 1) for o in job.overrides]
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "an override is set twice"
    return dict(pairs)


def test_every_trainconfig_field_has_a_verl_mapping():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_every_rule_a_field_names_is_implemented_and_every_rule_is_named():
    named = {d.setting.verl.name for d in described(TrainConfig) if isinstance(d.setting.verl, Rule)}
    assert named == set(RULES)
    assert all(isinstance(d.setting.verl, (Actor, PolicyLoss)) for d in described(FIPOConfig))


def test_a_simple_mapping_writes_the_fields_value_under_its_declared_keys(tmp_path):
    for preset in ("paper-fipo-32b", "paper-ppo-32b"):  # without and with a critic
        job = launch(get_preset(preset), out=tmp_path)
        simple = {d.name: d.setting.verl for d in described(TrainConfig) if isinstance(d.setting.verl, Keys)}
        assert len(simple) >= 15
        for name, mapping in simple.items():
            keys = mapping.keys + (mapping.critic if job.config.advantage_estimator == "gae" else ())
            assert [o.split("=", 1)[0] for o in job.by_field[name]] == list(keys), name


# a value for each field that another field's rule reads, inside what paper-fipo-32b allows
CHANGED = {"data_limit": 100, "lr_warmup_steps": 3, "gen_prompts_per_batch": 1024, "max_num_gen_batches": 3,
           "filter_metric": "reward", "overlong_penalty": 0.5, "eval_limit": 10, "eval_holdout": 0.1}
BEFORE = {"eval_holdout": ["eval_data=none"]}  # a held-out share replaces eval_data: both runs evaluate without it


def test_a_field_mapped_by_another_changes_that_fields_overrides_only(tmp_path):
    mapped = {d.name: d.setting.verl.readers for d in described(TrainConfig) if isinstance(d.setting.verl, MappedBy)}
    assert set(mapped) == set(CHANGED)
    for name, readers in mapped.items():
        before = apply_overrides(get_preset("paper-fipo-32b"), BEFORE.get(name, []))
        base = launch(before, out=tmp_path).by_field
        changed = launch(apply_overrides(before, [f"{name}={CHANGED[name]}"]), out=tmp_path).by_field
        assert changed[name] == [] and all(changed[reader] != base[reader] for reader in readers), name
        assert {k: v for k, v in changed.items() if k not in readers} == \
               {k: v for k, v in base.items() if k not in readers}, name


def test_unused_fields_are_listed_with_why(tmp_path):
    job = launch(get_preset("paper-fipo-32b"), out=tmp_path)
    unused = [d for d in described(TrainConfig) if isinstance(d.setting.verl, Unused)]
    assert [d.name for d in unused] == ["logprob_chunk_size", "rollout_backend", "pack_sequences", "share_prompts",
                                        "reward_workers", "reward_timeout"]
    for d in unused:
        assert f"{d.name}={getattr(job.config, d.name)!r}: {d.setting.verl.why}" in job.notes


@pytest.mark.parametrize("fipo", [FIPOConfig(), FIPOConfig(loss="dapo"), FIPOConfig(dual_clip=None),
                                  FIPOConfig(loss="grpo", clip_low=0.1, weight_clip=None, safety_threshold=None)])
def test_fipoconfig_goes_to_verls_names_and_comes_back(fipo):
    actor, policy = loss_fields(fipo)
    assert list(policy) == ["fipo_loss", "dual_clip", "decay_rate", "weight_clip", "weight_clip_high_only",
                            "safety_threshold", "drop_dual_clipped_sequences", "log_ratio_clamp"]
    assert [name for name, *_ in policy_loss_fields()] == list(policy)  # FIPOPolicyLossConfig's own fields
    back = fipo_from_verl(SimpleNamespace(**actor), SimpleNamespace(**policy))
    symmetric = dataclasses.replace(fipo, clip_high=fipo.clip_low) if fipo.loss == "grpo" else fipo  # GRPO's clip
    assert back == symmetric
    assert actor["clip_ratio_c"] == (fipo.dual_clip if fipo.dual_clip is not None else 10.0)
    assert policy["dual_clip"] is (fipo.dual_clip is not None)


def test_a_field_without_a_mapping_is_refused_by_name(monkeypatch):
    monkeypatch.delitem(FIELDS, "overlong_penalty")
    with pytest.raises(LaunchError, match="TrainConfig.overlong_penalty has no verl mapping"):
        launch(get_preset("paper-fipo-32b"))


def test_paper_fipo_32b_carries_the_official_script(tmp_path):
    o = overrides(launch(get_preset("paper-fipo-32b"), out=tmp_path))
    official = {  # FIPO_REFERENCE.md, "Official hyperparameters", FIPO 32B column
        "data.train_batch_size": "512", "actor_rollout_ref.rollout.n": "16", "data.gen_batch_size": "2048",
        "algorithm.filter_groups.max_num_gen_batches": "10", "algorithm.filter_groups.metric": "acc",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "64", "actor_rollout_ref.actor.optim.lr": "1e-06",
        "actor_rollout_ref.actor.optim.lr_warmup_steps": "10", "actor_rollout_ref.actor.optim.lr_scheduler_type": "constant",
        "actor_rollout_ref.actor.optim.weight_decay": "0.1", "actor_rollout_ref.actor.grad_clip": "1.0",
        "data.max_prompt_length": "2048", "data.max_response_length": "20480",
        "+reward.reward_kwargs.overlong_buffer_cfg.len": "4096",
        "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": "1.0",
        "actor_rollout_ref.actor.clip_ratio_low": "0.2", "actor_rollout_ref.actor.clip_ratio_high": "0.28",
        "actor_rollout_ref.actor.clip_ratio_c": "10.0", "actor_rollout_ref.actor.use_kl_loss": "false",
        "actor_rollout_ref.actor.entropy_coeff": "0", "+actor_rollout_ref.actor.policy_loss.decay_rate": "32.0",
        "+actor_rollout_ref.actor.policy_loss.weight_clip": "0.2",
        "+actor_rollout_ref.actor.policy_loss.weight_clip_high_only": "true",
        "+actor_rollout_ref.actor.policy_loss.safety_threshold": "10.0",
        "actor_rollout_ref.rollout.temperature": "1.0", "actor_rollout_ref.rollout.top_p": "1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_p": "0.7", "actor_rollout_ref.rollout.val_kwargs.n": "32",
        "actor_rollout_ref.rollout.name": "vllm", "actor_rollout_ref.rollout.tensor_model_parallel_size": "4",
        "actor_rollout_ref.rollout.gpu_memory_utilization": "0.8", "actor_rollout_ref.rollout.enable_chunked_prefill": "true",
        "actor_rollout_ref.actor.fsdp_config.param_offload": "true",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": "true",
        "actor_rollout_ref.model.enable_gradient_checkpointing": "true", "actor_rollout_ref.model.use_remove_padding": "true",
        "actor_rollout_ref.actor.use_dynamic_bsz": "true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "22528",
        "actor_rollout_ref.actor.ulysses_sequence_parallel_size": "8", "reward.reward_manager.name": "dapo",
        "trainer.nnodes": "16", "trainer.n_gpus_per_node": "8", "actor_rollout_ref.model.path": "Qwen/Qwen2.5-32B",
        "actor_rollout_ref.actor.policy_loss.loss_mode": "fipo_nb",
        "actor_rollout_ref.model.external_lib": "fipo_nb.integrations.verl",
        "trainer.save_freq": "5", "trainer.total_epochs": "1",  # the scripts: one epoch, a checkpoint every 5 steps
    }
    assert "trainer.total_training_steps" not in o
    assert {k: o.get(k) for k in official} == official


def test_the_baselines_run_verls_own_losses(tmp_path):
    dapo = overrides(launch(get_preset("paper-dapo-32b"), out=tmp_path))
    assert dapo["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"
    assert (dapo["actor_rollout_ref.actor.ppo_mini_batch_size"], dapo["data.gen_batch_size"]) == ("32", "1536")
    ppo = overrides(launch(get_preset("paper-ppo-32b"), out=tmp_path))
    assert ppo["algorithm.adv_estimator"] == "gae" and ppo["critic.enable"] == "true"
    assert ppo["critic.model.path"] == "Qwen/Qwen2.5-32B" and ppo["critic.optim.lr"] == "1e-05"
    assert ppo["actor_rollout_ref.actor.clip_ratio_high"] == "0.2" and ppo["algorithm.filter_groups.enable"] == "false"
    grpo = overrides(launch(apply_overrides(get_preset("paper-fipo-32b"), ["fipo.loss=grpo"]), out=tmp_path))
    assert grpo["actor_rollout_ref.actor.loss_agg_mode"] == "seq-mean-token-mean"
    assert grpo["actor_rollout_ref.actor.clip_ratio_high"] == "0.2"


@pytest.mark.parametrize("setting, field", [
    ("mode=qlora", "TrainConfig.mode"), ("answer_mode=boxed", "TrainConfig.answer_mode"),
    ("answer_mode=answer_line", "TrainConfig.answer_mode"), ("answer_mode=auto", "TrainConfig.answer_mode"),
    ("overlong_filter=true", "TrainConfig.overlong_filter"), ("reward_incorrect=0", "TrainConfig.reward_incorrect"),
    ("trace_post_update=true", "TrainConfig.trace_post_update"), ("device=cpu", "TrainConfig.device"),
    ("model=tiny-qwen2", "TrainConfig.model"), ("fipo.dual_clip=none", "FIPOConfig.dual_clip"),
])
def test_what_verl_cannot_express_is_refused_by_name(setting, field):
    base = "paper-dapo-32b" if setting.startswith("fipo.") else "paper-fipo-32b"
    config = apply_overrides(get_preset(base), [setting])
    with pytest.raises(LaunchError, match=field.replace(".", r"\.")):
        launch(config)


def test_values_are_hydra_safe():
    assert verl_launch._value(True) == "true" and verl_launch._value(None) == "null"
    assert verl_launch._value("Qwen/Qwen2.5-32B") == "Qwen/Qwen2.5-32B"
    assert verl_launch._value("a b,c") == "'a b,c'" and verl_launch._value(["q_proj", "v_proj"]) == "[q_proj,v_proj]"


def fipo_nb(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fipo_nb.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_prints_overrides_one_per_line():
    done = fipo_nb("launch", "verl", "--preset", "paper-fipo-32b", "--print-overrides")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "actor_rollout_ref.actor.policy_loss.loss_mode=fipo_nb" in lines and "trainer.nnodes=16" in lines
    assert "not used under verl: logprob_chunk_size" in done.stderr


def test_cli_writes_launch_overrides_plan_and_converted_data(tmp_path):
    out = tmp_path / "small"
    done = fipo_nb("launch", "verl", "--preset", "qlora-qwen2.5-0.5b", "--set", "mode=lora", "--set",
                   "answer_mode=dapo", "--set", "data=single-digit?size=32", "--out", str(out))
    assert done.returncode == 0, done.stderr
    listed = (out / "overrides.txt").read_text().splitlines()
    script = (out / "launch.sh").read_text()
    command = shlex.split(script.split("\nfi\n", 1)[1].replace("\\\n", " "))  # after the verl check
    assert command[:3] == ["python3", "-m", "verl.trainer.main_ppo"] and command[3:-1] == listed
    assert "trainer.nnodes=1" in listed and "trainer.n_gpus_per_node=1" in listed
    assert "verdict: fits on 1 x 1 GPUs" in (out / "plan.txt").read_text()
    assert json.loads((out / "config.json").read_text())["mode"] == "lora"
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "data" / "train.parquet").to_pylist()
    assert len(rows) == 32 and rows[0]["reward_model"]["style"] == "rule" and "Answer:" in rows[0]["prompt"][0]["content"]


def test_cli_names_what_it_refuses():
    done = fipo_nb("launch", "verl", "--preset", "qlora-qwen2.5-0.5b", "--print-overrides")
    assert done.returncode == 2 and "TrainConfig.mode" in done.stderr and "Traceback" not in done.stderr


def test_an_eval_file_that_repeats_each_problem_is_sampled_eval_k_times_per_problem(tmp_path):
    # DAPO's aime-2024.parquet holds each problem 32 times; verl samples val_kwargs.n per row
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"data_source": "aime", "prompt": [{"role": "user", "content": f"Problem {i}. Answer: ?"}],
             "ability": "math", "reward_model": {"ground_truth": str(i), "style": "rule"}}
            for i in range(3) for _ in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "aime.parquet")
    job = launch(apply_overrides(get_preset("paper-fipo-32b"), [f"eval_data={tmp_path / 'aime.parquet'}"]),
                 out=tmp_path / "out")
    o = overrides(job)
    assert o["data.val_files"] == str((tmp_path / "out" / "data" / "val.parquet").resolve())
    assert o["actor_rollout_ref.rollout.val_kwargs.n"] == "32"
    verl_launch.write_data(job)
    written = pq.read_table(tmp_path / "out" / "data" / "val.parquet").to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in written] == ["0", "1", "2"]
    # a file that is not here cannot be checked: the launch says so
    assert any("aime-2024.parquet is not here" in n for n in launch(get_preset("paper-fipo-32b")).warnings)


def test_held_out_problems_become_verls_validation_file_and_leave_its_training_file(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(20)))
    job = launch(apply_overrides(get_preset("paper-fipo-32b"), [f"data={path}", "eval_data=none", "eval_holdout=0.25"]),
                 out=tmp_path / "out")
    o = overrides(job)
    data = tmp_path / "out" / "data"
    assert o["data.train_files"] == str((data / "train.parquet").resolve())
    assert o["data.val_files"] == str((data / "val.parquet").resolve())
    verl_launch.write_data(job)
    train, val = (pq.read_table(data / f"{n}.parquet").to_pylist() for n in ("train", "val"))
    assert len(train) == 15 and len(val) == 5
    assert not {r["reward_model"]["ground_truth"] for r in train} & {r["reward_model"]["ground_truth"] for r in val}


@pytest.mark.parametrize("field", ["data", "eval_data"])
def test_an_unreadable_parquet_file_is_named_with_its_field(tmp_path, field):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    config = apply_overrides(get_preset("paper-fipo-32b"), [f"{field}={broken}"])
    with pytest.raises(LaunchError, match=rf"TrainConfig\.{field}: .*broken\.parquet is not a readable parquet"):
        launch(config, out=tmp_path / "out")


@pytest.mark.parametrize("kwargs", [dict(nodes=0), dict(gpus_per_node=-8)])
def test_a_cluster_without_gpus_is_refused(kwargs):
    with pytest.raises(LaunchError, match=next(iter(kwargs))):
        launch(get_preset("paper-fipo-32b"), **kwargs)


def test_bad_data_stops_the_launch_before_anything_is_written(tmp_path):
    (tmp_path / "miss.jsonl").write_text('{"problem": "1 + 1?", "answer": "2"}\n{"problem": "2 + 2?"}\n')
    out = tmp_path / "small"
    done = fipo_nb("launch", "verl", "--preset", "qlora-qwen2.5-0.5b", "--set", "mode=lora", "--set", "answer_mode=dapo",
                   "--set", f"data={tmp_path / 'miss.jsonl'}", "--out", str(out))
    assert done.returncode == 2 and "miss.jsonl" in done.stderr and "answer" in done.stderr, done.stderr
    assert not (out / "launch.sh").exists()


def test_the_loss_inside_verl_without_verl_says_how_to_get_it():
    import importlib.util

    if importlib.util.find_spec("verl") is not None:
        pytest.skip("verl is installed here: tests/integrations/verl covers actor_config")
    with pytest.raises(ImportError, match=r"needs verl 0\.9\.1 .*make verl-venv"):
        verl_launch.actor_config(FIPOConfig())


def test_launch_sh_without_verl_on_path_stops_naming_what_to_activate(tmp_path):
    import os
    import subprocess
    import sys

    job = launch(get_preset("paper-fipo-32b"), out=tmp_path)
    script = tmp_path / "launch.sh"
    script.write_text(job.script())
    bin_dir = tmp_path / "bin"  # a python3 without verl (this environment's) first on PATH
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "cannot import verl: activate verl's environment first (source .venv-verl/bin/activate" in done.stderr
    assert "Run length: one pass over the data (trainer.total_epochs=1)" in job.script()


def test_the_launch_says_where_its_paths_point_and_where_dapos_files_come_from(tmp_path):
    from fipo_nb.integrations.verl import DAPO_FILES

    header = launch(get_preset("paper-fipo-32b"), out=tmp_path).script().split("set -euo pipefail")[0]
    assert f"go to {tmp_path.resolve()} (absolute" in header and "every node must reach" in header
    assert "data.train_files=dapo-math-17k.parquet is relative" in header and "--set data=/shared/" in header
    assert f"wget -O aime-2024.parquet '{DAPO_FILES['aime-2024.parquet']}'" in header
    absolute = launch(apply_overrides(get_preset("paper-fipo-32b"), [f"data={tmp_path / 'dapo-math-17k.parquet'}",
                                                                      f"eval_data={tmp_path / 'aime-2024.parquet'}"]),
                      out=tmp_path).script()
    assert "is relative" not in absolute
